"""Model registry: names, configs, errors, rebuilding from a saved config, backbone weights (never downloaded)."""

from __future__ import annotations

import io
import json
import urllib.error

import pytest
import torch
import torchvision
from encoder_fixtures import (
    TINY,
    tiny_model,
)

from crossview.encoders import CrossViewModel, get_model, list_models, modalities, model_config, model_from_config
from crossview.encoders.modalities import MapInput
from crossview.errors import ConfigError

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REQUIRED_NAMES = {
    "safa-resnet18",
    "safa-resnet34",
    "safa-resnet50",
    "safa-vgg16",
    "safa-convnext_tiny",
    "safa-efficientnet_b0",
    "bev-resnet18",
    "safa-resnet18-lite",
}
INTERFACE_KEYS = {
    "name",
    "backbone",
    "weights",
    "descriptor_dim",
    "aerial_size",
    "polar_height",
    "polar_width",
    "pano_height",
    "pano_width",
    "map_modality",
}


def test_list_models_has_the_issue_names() -> None:
    assert set(list_models()) >= REQUIRED_NAMES


@pytest.mark.parametrize("name", sorted(REQUIRED_NAMES))
def test_every_config_is_complete_json_and_aerial(name: str) -> None:
    config = model_config(name)
    assert set(config) >= INTERFACE_KEYS
    assert config["name"] == name
    assert config["map_modality"] == "aerial"
    assert config["weights"] == "none"  # never a download by default
    assert json.loads(json.dumps(config)) == config
    assert config["backbone"] == name.split("-")[1]


def test_unknown_model_name_lists_the_names() -> None:
    with pytest.raises(ConfigError, match="unknown model 'safa-resnet99'") as info:
        get_model("safa-resnet99")
    for name in REQUIRED_NAMES:
        assert name in str(info.value)


def test_unknown_override_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="descriptor_dims"):
        get_model("safa-resnet18-lite", descriptor_dims=256)
    with pytest.raises(ConfigError, match="bev_size"):  # a BEV-only key on a SAFA model
        model_config("safa-resnet18", bev_size=64)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pano_width": 200}, "pano_width"),
        ({"pano_width": 256, "polar_width": 512}, "must equal polar_width"),
        ({"polar_height": 100}, "polar_height"),
        ({"descriptor_dim": 100}, "multiple of safa_maps"),
        ({"backbone": "alexnet"}, "unknown backbone"),
        ({"map_modality": "lidar"}, "unknown map_modality"),
        ({"refine_channels": [32, 16]}, "refine_channels"),
        ({"weights": None}, "weights"),
        ({"column_rows": 0}, "column_rows"),
    ],
)
def test_invalid_values_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model_config("safa-resnet18", **overrides)


def test_overrides_apply() -> None:
    config = model_config("safa-resnet18-lite", descriptor_dim=256, pano_width=512, polar_width=512)
    assert (config["descriptor_dim"], config["pano_width"], config["polar_width"]) == (256, 512, 512)
    assert config["name"] == "safa-resnet18-lite"
    bev = model_config("safa-resnet18-lite", variant="bev", bev_size=64)  # switching variant brings its keys
    assert (bev["variant"], bev["bev_size"], bev["descriptor_dim"]) == ("bev", 64, 512)
    with pytest.raises(ConfigError, match="unknown model variant"):
        model_config("safa-resnet18", variant="cvm")


class _GreyInput(MapInput):
    """A one-band map modality: (B, 1, S, S) in [0, 1], centred."""

    out_channels = 1

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return chips - 0.5


def test_the_aerial_branch_takes_a_registered_map_modality(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(modalities._MAP_MODALITIES, "grey", lambda config: _GreyInput())
    model = get_model("safa-resnet18-lite", map_modality="grey", **TINY).eval()
    assert model.config["map_modality"] == "grey"
    with torch.no_grad():
        aerial = model.encode_aerial(torch.rand(2, 1, 64, 64))
        ground = model.encode_ground(torch.rand(2, 3, 64, 256))
        features = model.refinement_features(torch.rand(2, 3, 64, 256), torch.rand(2, 1, 64, 64))[2]
    assert aerial.descriptor.shape == ground.descriptor.shape == (2, 512)
    assert features[-1].shape == (2, 16, 16, 16)
    assert model.aerial_backbone.stages[0][0].in_channels == 1
    assert model.ground_backbone.stages[0][0].in_channels == 3


@pytest.mark.parametrize("name", ["safa-resnet18-lite", "bev-resnet18"])
def test_model_from_config_rebuilds_the_same_layout_and_outputs(name: str) -> None:
    model = tiny_model(name)
    saved = json.loads(json.dumps(model.config))  # as a checkpoint stores it
    rebuilt = model_from_config(saved)
    assert isinstance(rebuilt, CrossViewModel)
    assert rebuilt.config == model.config
    original_state, rebuilt_state = model.state_dict(), rebuilt.state_dict()
    assert list(original_state) == list(rebuilt_state)
    assert all(original_state[k].shape == rebuilt_state[k].shape for k in original_state)
    rebuilt.load_state_dict(original_state)
    rebuilt.eval()
    chips = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_aerial(chips).descriptor, model.encode_aerial(chips).descriptor)


def test_model_from_config_fills_missing_keys_and_rejects_unknown_ones() -> None:
    config = model_config("safa-resnet18-lite", **TINY)
    older = {k: v for k, v in config.items() if k not in ("refine_hidden", "config_version")}
    assert model_from_config(older).config == config
    with pytest.raises(ConfigError, match="colour_space"):
        model_from_config({**config, "colour_space": "rgb"})
    with pytest.raises(ConfigError, match="must be a dict"):
        model_from_config([("name", "x")])


def test_model_from_config_does_not_fetch_imagenet_weights(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "urlopen", _no_network)
    config = model_config("safa-resnet18-lite", **TINY)
    config["weights"] = "imagenet"
    model = model_from_config(config)  # a checkpoint's state dict will replace the weights
    assert model.config["weights"] == "imagenet"
    with pytest.raises(ConfigError, match="not available offline"):
        model_from_config(config, load_pretrained=True)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network unreachable (test)")


def test_imagenet_weights_offline_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(torch.hub, "urlopen", _no_network)
    with pytest.raises(ConfigError) as info:
        get_model("safa-resnet18-lite", weights="imagenet")
    message = str(info.value)
    assert "ImageNet weights for resnet18 are not available offline" in message
    assert "weights=/path/to/file.pth" in message
    assert "\n" not in message


def test_imagenet_weights_come_from_the_hub_cache_offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "urlopen", _no_network)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()  # stands in for the real file (same keys and shapes)
    torch.save(state, cache / url.rsplit("/", 1)[-1])
    model = get_model("safa-resnet18-lite", weights="imagenet", **TINY)
    _assert_backbone_holds(model, state)


def test_local_weights_file_is_loaded_into_both_branches(tmp_path) -> None:
    torch.manual_seed(2)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18-local.pth"
    torch.save(state, path)
    model = get_model("safa-resnet18-lite", weights=str(path), **TINY)
    assert model.config["weights"] == str(path)
    _assert_backbone_holds(model, state)


def _assert_backbone_holds(model: CrossViewModel, state: dict) -> None:
    for backbone in (model.aerial_backbone, model.ground_backbone):
        stem, _, layer3 = backbone.stages
        torch.testing.assert_close(stem[0].weight, state["conv1.weight"], rtol=0, atol=0)
        torch.testing.assert_close(stem[4][0].conv1.weight, state["layer1.0.conv1.weight"], rtol=0, atol=0)
        torch.testing.assert_close(layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"], rtol=0, atol=0)


def test_bad_local_weights_files_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        get_model("safa-resnet18-lite", weights=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable state dict"):
        get_model("safa-resnet18-lite", weights=str(garbage))
    other = tmp_path / "efficientnet.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), other)
    with pytest.raises(ConfigError, match="do not fit backbone resnet18"):
        get_model("safa-resnet18-lite", weights=str(other))


def test_lite_model_size_fits_the_shipping_budget() -> None:
    """safa-resnet18-lite must ship in <= 30 MB: parameters per branch and the float16 state dict size."""
    model = get_model("safa-resnet18-lite")
    per_part = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children() if name}
    aerial = sum(v for k, v in per_part.items() if k.startswith(("aerial", "map")))
    ground = sum(v for k, v in per_part.items() if k.startswith("ground"))
    buffer = io.BytesIO()
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(half, buffer)
    size_mb = buffer.tell() / 2**20
    print(f"safa-resnet18-lite: aerial {aerial / 1e6:.2f} M, ground {ground / 1e6:.2f} M params, fp16 {size_mb:.1f} MB")
    assert 2e6 <= aerial <= 4e6 and 2e6 <= ground <= 4e6
    assert size_mb <= 30.0
