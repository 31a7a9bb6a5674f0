"""The ``osm`` map modality: class rasters -> per-group embeddings -> the same outputs as an aerial model; the
registry entry; backbones with many input channels; map/model modality checks (one-line errors)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from affine import Affine

from crossview.encoders import (
    MapModalityError,
    ModelInputError,
    check_data_map,
    check_map_modality,
    get_model,
    list_models,
    model_config,
    model_from_config,
)
from crossview.encoders.backbones import BACKBONES, build_backbone
from crossview.encoders.osm_input import OsmClassInput
from crossview.errors import ConfigError, CrossviewError
from crossview.maps.osm import BAND_NAMES, CLASS_NAMES, rasterize_osm
from crossview.maps.raster import GeoRaster

pytestmark = pytest.mark.usefixtures("single_torch_thread")

OSM_MODEL = "safa-resnet18-lite-osm"
TINY = {"aerial_size": 64, "pano_height": 32, "pano_width": 128, "polar_height": 32, "polar_width": 128}
NUM_CLASSES = [len(CLASS_NAMES[band]) for band in BAND_NAMES]


def _osm_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return get_model(OSM_MODEL, **{**TINY, **overrides}).eval()


def _class_chips(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, 3, S, S) uint8 random class indices, each band within its legend."""
    generator = torch.Generator().manual_seed(seed)
    bands = [torch.randint(0, n + 1, (batch, 1, size, size), generator=generator) for n in NUM_CLASSES]
    return torch.cat(bands, dim=1).to(torch.uint8)


# ---- registry ---------------------------------------------------------------------------------------------------


def test_registry_lists_the_osm_model_with_the_lite_sizes():
    assert OSM_MODEL in list_models()
    osm, lite = model_config(OSM_MODEL), model_config("safa-resnet18-lite")
    assert osm["map_modality"] == "osm" and lite["map_modality"] == "aerial"
    assert osm["osm_embedding_dim"] == 16
    assert osm["osm_classes"] == {band: list(CLASS_NAMES[band]) for band in BAND_NAMES}  # crossview's taxonomy
    shared = set(lite) - {"name", "map_modality"}
    assert {key: osm[key] for key in shared} == {key: lite[key] for key in shared}
    assert set(osm) - set(lite) == {"osm_embedding_dim", "osm_classes"}
    assert json.loads(json.dumps(osm)) == osm


def test_switching_a_model_to_osm_brings_the_osm_keys_and_back():
    config = model_config("safa-resnet18", map_modality="osm", osm_embedding_dim=8)
    assert (config["map_modality"], config["osm_embedding_dim"], config["backbone"]) == ("osm", 8, "resnet18")
    back = model_config(OSM_MODEL, map_modality="aerial")
    assert "osm_classes" not in back and "osm_embedding_dim" not in back
    with pytest.raises(ConfigError, match="osm_embedding_dim"):
        model_config("safa-resnet18-lite", osm_embedding_dim=8)  # an OSM key on an aerial model


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"osm_embedding_dim": 0}, "osm_embedding_dim"),
        ({"osm_embedding_dim": True}, "osm_embedding_dim"),
        ({"osm_classes": {"areas": []}}, "osm_classes"),
        ({"osm_classes": {"areas": ["a", "a"]}}, "distinct"),
        ({"osm_classes": ["building"]}, "osm_classes"),
    ],
)
def test_invalid_osm_keys_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        model_config(OSM_MODEL, **overrides)


# ---- the adapter -------------------------------------------------------------------------------------------------


def test_adapter_concatenates_one_learned_embedding_per_class_group():
    model = _osm_model()
    adapter = model.map_input
    assert isinstance(adapter, OsmClassInput)
    assert adapter.out_channels == 3 * 16
    assert [adapter.embeddings[band].num_embeddings for band in BAND_NAMES] == [n + 1 for n in NUM_CLASSES]
    chips = _class_chips(2, 8)
    with torch.no_grad():
        embedded = adapter(chips)
    assert embedded.shape == (2, 48, 8, 8) and embedded.dtype == torch.float32
    for g, band in enumerate(BAND_NAMES):
        table = adapter.embeddings[band].weight.detach()  # (n + 1, 16)
        expected = table[chips[:, g].long()].permute(0, 3, 1, 2)  # pixel (b, i, j) -> row chips[b, g, i, j]
        torch.testing.assert_close(embedded[:, 16 * g : 16 * (g + 1)], expected, rtol=0, atol=0)
    assert model.aerial_backbone.stages[0][0].in_channels == 48
    assert model.ground_backbone.stages[0][0].in_channels == 3


def test_osm_model_has_the_outputs_of_an_aerial_model():
    model = _osm_model()
    batch, wc = 2, 128 // 16
    chips, panos = _class_chips(batch, 64), torch.rand(batch, 3, 32, 128)
    with torch.no_grad():
        aerial = model.encode_aerial(chips)
        ground = model.encode_ground(panos)
        scores, heading = model.similarity(ground, aerial, unknown_heading=True)
        ground_f, ground_c, chip_f, chip_c = model.refinement_features(panos, chips)
    dim, dc = model.config["descriptor_dim"], model.config["column_channels"] * model.config["column_rows"]
    assert aerial.descriptor.shape == (batch, dim) and aerial.columns.shape == (batch, dc, wc)
    torch.testing.assert_close(aerial.descriptor.norm(dim=1), torch.ones(batch))
    assert scores.shape == heading.shape == (batch, batch)
    for features, confidences, (height, width) in ((ground_f, ground_c, (32, 128)), (chip_f, chip_c, (64, 64))):
        assert len(features) == len(confidences) == 3
        for level, stride in enumerate((16, 8, 4)):
            channels = model.config["refine_channels"][level]
            assert features[level].shape == (batch, channels, height // stride, width // stride)
            assert confidences[level].shape == (batch, 1, height // stride, width // stride)
            torch.testing.assert_close(features[level].norm(dim=1), torch.ones_like(features[level][:, 0]))
            assert bool(((confidences[level] > 0) & (confidences[level] < 1)).all())


def test_any_integer_dtype_and_whole_floats_give_the_same_encoding():
    model = _osm_model()
    chips = _class_chips(2, 64, seed=3)
    with torch.no_grad():
        reference = model.encode_aerial(chips).descriptor
        for other in (chips.long(), chips.to(torch.int32), chips.float()):  # float: GeoRaster.crop(nearest)
            torch.testing.assert_close(model.encode_aerial(other).descriptor, reference, rtol=0, atol=0)


def test_convention_osm_chips_are_embedded_then_polar_transformed_north_at_the_centre_column():
    """The backbone sees the polar transform (DESIGN's convention, bilinear) of the *embedded* chip: a building
    north of the camera appears around the centre column (azimuth 0) as the building's embedding, south as the
    "nothing" embedding, and samples across its edge are blends of the two vectors (not another class)."""
    model = _osm_model(polar_height=32, polar_width=128)
    chips = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    chips[0, 0, 4:13, 28:37] = 1  # a building 20-28 px north of the chip centre (row index 32)
    seen = []
    handle = model.aerial_backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model.encode_aerial(chips)
    handle.remove()
    polar = seen[0][0, :16]  # (16, H, W): the areas band's channels
    table = model.map_input.embeddings["areas"].weight.detach()
    nothing, building = table[0], table[1]
    direction = building - nothing
    along = torch.einsum("chw,c->hw", polar - nothing[:, None, None], direction) / direction.dot(direction)
    residual = polar - (nothing[:, None, None] + along * direction[:, None, None])
    inner = slice(2, None)  # the two outermost rings also sample the zero padding outside the chip
    assert float(residual[:, inner].abs().max()) < 1e-5  # every sample is a blend of the two embeddings
    height, width = along.shape
    ring = height - 1 - round(24 * height / 32)  # r_i = (S/2)(H-1-i)/H = 24 px
    assert float(along[ring, width // 2]) == pytest.approx(1.0, abs=1e-5)  # north = centre column
    assert float(along[inner, : width // 4].abs().max()) < 1e-5  # the southern half sees nothing
    blends = along[inner][(along[inner] > 0.05) & (along[inner] < 0.95)]
    assert blends.numel() > 0  # bilinear on embeddings, not nearest on indices


@pytest.mark.parametrize(
    ("chips", "message"),
    [
        (torch.rand(1, 3, 16, 16), "fractional"),  # an RGB chip, or a bilinear crop of a class raster
        (torch.zeros(1, 4, 16, 16, dtype=torch.uint8), r"\(B, 3, S, S\)"),
        (torch.full((1, 3, 16, 16), 8, dtype=torch.uint8), r"band 0 holds indices 8\.\.8, outside 0\.\.7"),
        (torch.full((1, 3, 16, 16), -1, dtype=torch.int64), "band 0"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.bool), "dtype"),
    ],
)
def test_bad_chips_are_one_line_model_input_errors(chips, message):
    model = _osm_model()
    with pytest.raises(ModelInputError, match=message) as info:
        model.encode_aerial(chips)
    assert "\n" not in str(info.value)


def test_an_osm_model_rebuilds_from_its_saved_config_with_identical_outputs():
    model = _osm_model(seed=1)
    saved = json.loads(json.dumps(model.config))
    rebuilt = model_from_config(saved).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    chips = _class_chips(2, 64, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_aerial(chips).columns, model.encode_aerial(chips).columns)
    assert sorted(k for k in model.state_dict() if k.startswith("map_input.")) == [
        f"map_input.embeddings.{band}.weight" for band in sorted(BAND_NAMES)
    ]


def test_gradients_reach_the_embeddings():
    model = _osm_model().train()
    chips = _class_chips(2, 64)
    loss = model.encode_aerial(chips).descriptor.sum() + sum(f.sum() for f in model.refinement_features(
        torch.rand(2, 3, 32, 128), chips)[2])  # fmt: skip
    loss.backward()
    for band in BAND_NAMES:
        grad = model.map_input.embeddings[band].weight.grad
        assert grad is not None and bool(grad.abs().sum() > 0)


# ---- backbones with many input channels ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_takes_the_embedded_channels(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, in_channels=48).eval()
    first = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 48
    # random weights: fresh filters per input channel, not one averaged filter copied 48 times
    assert not torch.allclose(first.weight[:, 0], first.weight[:, 1])
    with torch.no_grad():
        levels = backbone(torch.randn(1, 48, 32, 32))
    assert [x.shape[-1] for x in levels] == [8, 4, 2]


# ---- which maps a model takes -------------------------------------------------------------------------------------


def _osm_raster() -> GeoRaster:
    """A 60 m x 60 m OSM class raster (UTM 32N, 1 m pixels) with a building and a road."""
    x0, y0 = 500_000.0, 5_000_060.0
    features = gpd.GeoDataFrame(
        {"building": ["yes", None], "highway": [None, "residential"]},
        geometry=[
            shapely.box(x0 + 10, y0 - 30, x0 + 25, y0 - 15),
            shapely.LineString([(x0, y0 - 45), (x0 + 60, y0 - 45)]),
        ],
        crs="EPSG:32632",
    )
    return rasterize_osm(features, crs="EPSG:32632", transform=Affine(1.0, 0, x0, 0, -1.0, y0), width=60, height=60)


def _rgb_raster() -> GeoRaster:
    array = np.zeros((3, 60, 60), dtype=np.uint8)
    transform = Affine(1.0, 0, 500_000.0, 0, -1.0, 5_000_060.0)
    return GeoRaster(array=array, crs="EPSG:32632", transform=transform, band_names=("red", "green", "blue"))


def _one_line_error(config, raster, **kwargs) -> str:
    with pytest.raises(MapModalityError) as info:
        check_map_modality(config, raster, **kwargs)
    assert isinstance(info.value, CrossviewError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_an_aerial_model_refuses_an_osm_class_raster(tmp_path):
    raster = _osm_raster()
    path = raster.write(tmp_path / "osm.tif")
    read_back = GeoRaster.read(path)  # the legend survives the GeoTIFF
    message = _one_line_error(model_config("safa-resnet18-lite"), read_back, map_name="osm.tif")
    assert message == (
        "model safa-resnet18-lite expects aerial RGB maps; map osm.tif is an OSM class raster (CLASSES tag)"
    )
    assert "OSM class raster" in _one_line_error(model_config("safa-resnet18-lite"), dict(raster.tags))
    untagged = GeoRaster(array=raster.array, crs=raster.crs, transform=raster.transform, band_names=BAND_NAMES)
    assert "bands areas, ways, nodes" in _one_line_error(model_config("safa-resnet18-lite"), untagged)
    check_map_modality(model_config("safa-resnet18-lite"), _rgb_raster())  # imagery: fine


def test_the_shipped_aerial_model_refuses_an_osm_raster():
    from crossview.checkpoints import load_checkpoint

    checkpoint = load_checkpoint("synth-v1")
    message = _one_line_error(checkpoint.model_config, _osm_raster(), map_name="osm.tif", model_name=checkpoint.name)
    assert message.startswith("model synth-v1 expects aerial RGB maps; map osm.tif is an OSM class raster")


def test_an_osm_model_refuses_imagery_and_another_legend_and_takes_its_own():
    config = model_config(OSM_MODEL)
    message = _one_line_error(config, _rgb_raster(), map_name="ortho.tif")
    assert message.startswith(f"model {OSM_MODEL} expects OSM class rasters; map ortho.tif is not one")
    raster = _osm_raster()
    check_map_modality(config, raster)  # its own taxonomy: fine
    legend = json.loads(raster.tags["CLASSES"])
    legend["ways"] = [*legend["ways"], "railway"]
    other = {**raster.tags, "CLASSES": json.dumps(legend)}
    assert "band ways: 10 classes vs 11" in _one_line_error(config, other)
    legend["ways"] = ["street" if name == "road" else name for name in legend["ways"][:-1]]
    assert "class 8 is 'road' vs 'street'" in _one_line_error(config, {"CLASSES": json.dumps(legend)})


def test_data_map_must_suit_the_model():
    check_data_map(model_config("safa-resnet18-lite"), "satellite")
    check_data_map(model_config(OSM_MODEL), "osm")
    with pytest.raises(MapModalityError, match=r"expects aerial RGB maps; data\.map=osm gives OSM class rasters"):
        check_data_map(model_config("safa-resnet18-lite"), "osm")
    with pytest.raises(MapModalityError, match=r"expects OSM class rasters; .* \(use data\.map=osm\)"):
        check_data_map(model_config(OSM_MODEL), "satellite")
    with pytest.raises(ConfigError, match=r"data\.map='lidar'"):
        check_data_map(model_config(OSM_MODEL), "lidar")
