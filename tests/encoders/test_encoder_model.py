"""CrossViewModel: documented shapes for every registered model, SAFA against its formula, circular padding,
refinement features, gradients and input errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from encoder_fixtures import (
    EXPECTED_CHANNELS,
    blob_chip,
    render_panorama_from_chip,
    tiny_model,
)

from crossview.encoders import AerialEncoding, GroundEncoding, ModelInputError, list_models
from crossview.encoders.aggregation import SpatialAwareAggregation
from crossview.errors import CameraError, CrossviewError

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# The smallest sizes every model accepts: 2 x 8 feature cells for the SAFA heads, 8 azimuth columns.
MINIMAL = {"pano_height": 32, "pano_width": 128, "polar_height": 32, "polar_width": 128}


def _assert_unit_norm(x: torch.Tensor, dim: int) -> None:
    torch.testing.assert_close(x.norm(dim=dim), torch.ones_like(x.norm(dim=dim)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_produces_the_documented_shapes(name: str) -> None:
    overrides = dict(MINIMAL, **({"bev_size": 32} if name.startswith("bev") else {}))
    model = tiny_model(name, **overrides)
    config = model.config
    batch, chip_px, wc = 2, 32, 128 // 16
    dim, dc = config["descriptor_dim"], config["column_channels"] * config["column_rows"]
    chips, panos = _map_chips(config, batch, chip_px), torch.rand(batch, 3, 32, 128)
    pinholes, hfov = torch.rand(batch, 3, 24, 32), torch.tensor([60.0, 90.0])
    with torch.no_grad():
        levels = model.aerial_backbone(model.map_input(chips))
        aerial = model.encode_aerial(chips)
        ground = model.encode_ground(panos)
        pinhole = model.encode_ground(pinholes, camera="pinhole", hfov_deg=hfov)
        cosine, no_heading = model.similarity(ground, aerial)
        scores, heading = model.similarity(pinhole, aerial, unknown_heading=True)
        refinement = model.refinement_features(panos, chips)
    channels = EXPECTED_CHANNELS[config["backbone"]]
    assert [tuple(x.shape) for x in levels] == [
        (batch, c, chip_px // s, chip_px // s) for c, s in zip(channels, (4, 8, 16), strict=True)
    ]
    assert aerial.descriptor.shape == (batch, dim) and aerial.columns.shape == (batch, dc, wc)
    assert ground.descriptor.shape == (batch, dim) and ground.columns.shape == (batch, dc, wc)
    assert pinhole.descriptor.shape == (batch, dim) and pinhole.columns.shape == (batch, dc, 3)  # 90° of 8 columns
    torch.testing.assert_close(pinhole.column_fov, hfov / 360)
    torch.testing.assert_close(ground.column_fov, torch.ones(batch))
    for descriptor in (aerial.descriptor, ground.descriptor, pinhole.descriptor):
        _assert_unit_norm(descriptor, dim=1)
    assert no_heading is None
    torch.testing.assert_close(cosine, F.cosine_similarity(ground.descriptor[:, None], aerial.descriptor[None], dim=-1))
    assert scores.shape == heading.shape == (batch, batch)
    assert bool(((scores >= -1 - 1e-5) & (scores <= 1 + 1e-5)).all())
    assert bool(((heading >= 0) & (heading < 360)).all())
    # the integer search gives multiples of the column step; the sub-column peak stays within half a step of it
    _, stepped = model.similarity(pinhole, aerial, unknown_heading=True, subcolumn=False)
    torch.testing.assert_close(torch.remainder(stepped, 360 / wc), torch.zeros_like(stepped), rtol=0, atol=1e-3)
    offset = torch.remainder(heading - stepped + 180, 360) - 180
    assert bool((offset.abs() <= 180 / wc + 1e-3).all())
    _assert_refinement_shapes(refinement, config["refine_channels"], (32, 128), (chip_px, chip_px), batch)


def _map_chips(config: dict, batch: int, size: int) -> torch.Tensor:
    """Chips of the model's map modality: RGB in [0, 1], or OSM class indices within the model's legend."""
    if config["map_modality"] == "osm":
        bands = [torch.randint(0, len(names) + 1, (batch, size, size)) for names in config["osm_classes"].values()]
        return torch.stack(bands, dim=1).to(torch.uint8)
    return torch.rand(batch, 3, size, size)


def _assert_refinement_shapes(refinement, channels, ground_hw, chip_hw, batch) -> None:
    ground_features, ground_confidences, chip_features, chip_confidences = refinement
    for features, confidences, (height, width) in (
        (ground_features, ground_confidences, ground_hw),
        (chip_features, chip_confidences, chip_hw),
    ):
        assert len(features) == len(confidences) == 3
        for level, stride in enumerate((16, 8, 4)):  # coarse to fine
            assert features[level].shape == (batch, channels[level], height // stride, width // stride)
            assert confidences[level].shape == (batch, 1, height // stride, width // stride)
            _assert_unit_norm(features[level], dim=1)
            assert bool(((confidences[level] > 0) & (confidences[level] < 1)).all())


def test_safa_aggregation_matches_the_paper_formula() -> None:
    """Shi et al. 2019: A_k = FC2_k(FC1_k(max_c F)); descriptor = concat_k sum_hw F * A_k, L2-normalised."""
    torch.manual_seed(0)
    head = SpatialAwareAggregation(channels=5, height=2, width=6, num_maps=3).double()
    features = torch.randn(4, 5, 2, 6, dtype=torch.float64)
    expected = []
    for b in range(4):
        pooled = features[b].amax(dim=0).flatten()  # (12,)
        parts = []
        for k in range(3):
            hidden = pooled @ head.weight1[k] + head.bias1[k, 0]
            attention = hidden @ head.weight2[k] + head.bias2[k, 0]  # (12,)
            parts.append(features[b].flatten(1) @ attention)  # (5,)
        descriptor = torch.cat(parts)
        expected.append(descriptor / descriptor.norm())
    torch.testing.assert_close(head(features), torch.stack(expected), rtol=1e-10, atol=1e-12)
    assert head.weight1.shape == (3, 12, 6) and head.weight2.shape == (3, 6, 12)  # h*w -> h*w/2 -> h*w
    with pytest.raises(ValueError, match="SAFA head expects"):
        head(torch.randn(1, 5, 3, 6, dtype=torch.float64))


def test_panorama_roll_rolls_columns_and_only_shifts_the_found_heading() -> None:
    """Circular padding: rolling a panorama by a multiple of the stride (16 px) rolls its column features exactly;
    the orientation-aware score stays, the heading moves by the roll (clockwise from north)."""
    model = tiny_model()
    chips = torch.cat([blob_chip(64, seed=1), blob_chip(64, seed=2)])
    pano = render_panorama_from_chip(blob_chip(64, seed=1), heading_deg=0.0, height_m=2.0, gsd_m=0.5, size=(64, 256))
    roll_px = 3 * 16
    with torch.no_grad():
        aerial = model.encode_aerial(chips)
        ground = model.encode_ground(pano)
        rolled = model.encode_ground(torch.roll(pano, shifts=roll_px, dims=-1))
        scores, heading = model.similarity(ground, aerial, unknown_heading=True)
        scores_rolled, heading_rolled = model.similarity(rolled, aerial, unknown_heading=True)
    scale = ground.columns.abs().max()
    torch.testing.assert_close(
        rolled.columns / scale, torch.roll(ground.columns, 3, dims=-1) / scale, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(scores_rolled, scores, rtol=0, atol=1e-5)
    # Column u of a heading-psi panorama looks at psi + (u/W - 0.5) 360: content moved right by r pixels is seen
    # by a camera turned left by r/W * 360 degrees.
    expected = torch.remainder(heading - roll_px / 256 * 360, 360)
    torch.testing.assert_close(heading_rolled, expected)


def test_refinement_features_wrap_for_panoramas_and_not_for_pinholes() -> None:
    model = tiny_model()
    pano = torch.rand(1, 3, 32, 1024)  # wide: the seam's influence fades before the middle
    chips = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        features = model.refinement_features(pano, chips)[0]
        rolled = model.refinement_features(torch.roll(pano, 16, dims=-1), chips)[0]
        pinhole = model.refinement_features(pano, chips, camera="pinhole", hfov_deg=100.0)[0]
    for level, stride in zip(range(3), (16, 8, 4), strict=True):
        expected = torch.roll(features[level], 16 // stride, dims=-1)
        torch.testing.assert_close(rolled[level], expected, rtol=0, atol=1e-5)
    # A pinhole image is not periodic: its first and last columns differ from the panorama's (zero padding).
    assert (pinhole[-1][..., 0] - features[-1][..., 0]).abs().max() > 1e-3
    torch.testing.assert_close(pinhole[-1][..., 96:-96], features[-1][..., 96:-96], rtol=0, atol=1e-5)


def test_gradients_reach_every_parameter() -> None:
    model = tiny_model(**MINIMAL).train()
    chips = torch.rand(2, 3, 32, 32)
    panos = torch.rand(2, 3, 32, 128)
    aerial = model.encode_aerial(chips)
    ground = model.encode_ground(panos)
    pinhole = model.encode_ground(torch.rand(2, 3, 24, 32), camera="pinhole", hfov_deg=90.0)
    cosine, _ = model.similarity(ground, aerial)
    oriented, _ = model.similarity(pinhole, aerial, unknown_heading=True)
    refinement = model.refinement_features(panos, chips)
    loss = -cosine.diag().sum() - oriented.diag().sum()
    for features, confidences in (refinement[:2], refinement[2:]):
        loss = loss + sum((f[:, :1] * c).mean() for f, c in zip(features, confidences, strict=True))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [name for name, p in model.named_parameters() if p.grad.abs().max() == 0]
    assert not zero


def test_heading_known_false_makes_similarity_search_the_heading() -> None:
    model = tiny_model()
    with torch.no_grad():
        aerial = model.encode_aerial(torch.rand(2, 3, 64, 64))
        ground = model.encode_ground(torch.rand(1, 3, 64, 256), heading_known=False)
        scores, heading = model.similarity(ground, aerial)
        searched, heading_searched = model.similarity(ground, aerial, unknown_heading=True)
    assert heading is not None
    torch.testing.assert_close(scores, searched)
    torch.testing.assert_close(heading, heading_searched)


def test_panoramas_of_another_size_are_resized_to_the_model_size() -> None:
    model = tiny_model()
    pano = torch.rand(1, 3, 128, 512)
    with torch.no_grad():
        big = model.encode_ground(pano)
        small = model.encode_ground(F.interpolate(pano, size=(64, 256), mode="bilinear", antialias=True))
    torch.testing.assert_close(big.descriptor, small.descriptor, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "images", "error", "message"),
    [
        ({"camera": "fisheye"}, torch.rand(1, 3, 64, 256), CameraError, "camera must be one of"),
        ({"camera": "pinhole"}, torch.rand(1, 3, 48, 64), CameraError, "need hfov_deg"),
        ({"camera": "pinhole", "hfov_deg": 200.0}, torch.rand(1, 3, 48, 64), CameraError, r"\(0, 180\)"),
        ({"camera": "pinhole", "hfov_deg": [60.0, 70, 80]}, torch.rand(2, 3, 48, 64), CameraError, "one or 2 values"),
        ({}, torch.rand(1, 1, 64, 256), ModelInputError, r"\(B, 3, H, W\)"),
        ({}, torch.zeros(1, 3, 64, 256, dtype=torch.uint8), ModelInputError, "float"),
    ],
)
def test_bad_ground_inputs_are_clear_errors(kwargs: dict, images: torch.Tensor, error: type, message: str) -> None:
    model = tiny_model(**MINIMAL)
    with pytest.raises(error, match=message):
        model.encode_ground(images, **kwargs)


def test_bad_chips_are_model_input_errors() -> None:
    model = tiny_model(**MINIMAL)
    with pytest.raises(ModelInputError, match="RGB"):
        model.encode_aerial(torch.rand(1, 4, 32, 32))
    with pytest.raises(ModelInputError, match="float"):
        model.encode_aerial(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    assert issubclass(ModelInputError, CrossviewError) and issubclass(ModelInputError, ValueError)


def test_encodings_are_plain_dataclasses() -> None:
    aerial = AerialEncoding(descriptor=torch.zeros(1, 4), columns=torch.zeros(1, 2, 8))
    ground = GroundEncoding(descriptor=torch.zeros(1, 4), columns=torch.zeros(1, 2, 8), column_fov=torch.ones(1))
    assert ground.heading_known and aerial.columns.shape[-1] == 8
