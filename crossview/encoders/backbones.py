"""Truncated torchvision backbones with three feature levels (strides 4, 8 and 16) and wrap-around width padding.

Every backbone is cut after its stride-16 stage, which keeps the models small (resnet18 up to ``layer3`` has
2.8 M parameters) and the azimuth resolution useful (a 512-column panorama gives 32 feature columns):

============== ==================================== ================== =========
name           stride 4 / 8 / 16 stages             channels           params
============== ==================================== ================== =========
resnet18/34    stem+layer1 / layer2 / layer3        64 / 128 / 256     2.8/8.2 M
resnet50       stem+layer1 / layer2 / layer3        256 / 512 / 1024   8.5 M
vgg16          conv1-3 / pool3+conv4 / pool4+conv5  256 / 512 / 512    14.7 M
convnext_tiny  stem+stage1 / stage2 / stage3        96 / 192 / 384     12.4 M
efficientnet_b0 features[0:3] / [3] / [4:6]         24 / 40 / 112      0.85 M
============== ==================================== ================== =========

ResNet-18/34 are :mod:`crossview.encoders.resnet`'s trunks (torchvision's modules, names and initialisation,
without importing torchvision, whose import costs seconds); the others are torchvision's, imported when built.

Weights: ``"none"`` (random, torchvision's initialisation), ``"imagenet"`` (torchvision's ImageNet weights, from
the torch hub cache or downloaded once) or the path of a local ``.pth`` state dict of the full torchvision model.
Inputs are expected ImageNet-normalised (the model does it, see :mod:`crossview.encoders.modalities`).
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from crossview.encoders.circular import convert_to_wrap_padding
from crossview.encoders.resnet import ResNetTrunk
from crossview.errors import ConfigError

__all__ = ["BACKBONES", "STRIDE", "Backbone", "BackboneSpec", "build_backbone", "load_weights_state"]

STRIDE = 16  # total stride of every truncated backbone


def _resnet_stages(model: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
    return [stem, model.layer2, model.layer3]


def _vgg_stages(model: nn.Module) -> list[nn.Module]:
    # features: conv1 (0-3) pool (4) conv2 (5-8) pool (9) conv3 (10-15) pool3 (16) conv4 (17-22) pool4 (23)
    # conv5 (24-29) pool5 (30): cut before pool5.
    layers = list(model.features.children())
    return [nn.Sequential(*layers[:16]), nn.Sequential(*layers[16:23]), nn.Sequential(*layers[23:30])]


def _convnext_stages(model: nn.Module) -> list[nn.Module]:
    f = model.features
    return [nn.Sequential(f[0], f[1]), nn.Sequential(f[2], f[3]), nn.Sequential(f[4], f[5])]


def _efficientnet_stages(model: nn.Module) -> list[nn.Module]:
    f = model.features
    return [nn.Sequential(f[0], f[1], f[2]), nn.Sequential(f[3]), nn.Sequential(f[4], f[5])]


class _VGG16Features(nn.Module):
    """The convolutional part of torchvision's VGG16 (same state-dict keys ``features.*``), without the 120 M
    parameter classifier that a full ``torchvision.models.vgg16()`` would build and initialise only to drop it."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
        for layer in self.features.modules():
            if isinstance(layer, nn.Conv2d):  # torchvision's VGG initialisation
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)


def _torchvision_model(name: str) -> Callable[[], nn.Module]:
    """A builder of torchvision's model ``name`` with random weights (torchvision is imported when it runs)."""

    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None)

    return build


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone (a ResNet trunk of crossview or a torchvision model) and cut it into stages."""

    name: str
    build: Callable[[], nn.Module]
    stages: Callable[[nn.Module], list[nn.Module]]
    channels: tuple[int, int, int]


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet18", lambda: ResNetTrunk("resnet18"), _resnet_stages, (64, 128, 256)),
        BackboneSpec("resnet34", lambda: ResNetTrunk("resnet34"), _resnet_stages, (64, 128, 256)),
        BackboneSpec("resnet50", _torchvision_model("resnet50"), _resnet_stages, (256, 512, 1024)),
        BackboneSpec("vgg16", _VGG16Features, _vgg_stages, (256, 512, 512)),
        BackboneSpec("convnext_tiny", _torchvision_model("convnext_tiny"), _convnext_stages, (96, 192, 384)),
        BackboneSpec("efficientnet_b0", _torchvision_model("efficientnet_b0"), _efficientnet_stages, (24, 40, 112)),
    )
}


class Backbone(nn.Module):
    """A truncated backbone returning the feature maps at strides 4, 8 and 16 (fine to coarse).

    Inputs of any size work; exact roll equivariance in width needs widths that are multiples of 16.
    """

    def __init__(self, name: str, stages: list[nn.Module], channels: tuple[int, int, int]) -> None:
        super().__init__()
        self.name = name
        self.stages = nn.ModuleList(stages)
        self.channels = channels
        self.stride = STRIDE

    def forward(self, images: Tensor) -> list[Tensor]:
        """Args: images (B, C_in, H, W) normalised. Returns [(B, C_4, H/4, W/4), (.., H/8, ..), (.., H/16, ..)]."""
        features = []
        x = images
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def build_backbone(name: str, weights: str = "none", *, in_channels: int = 3) -> Backbone:
    """Build a truncated backbone with wrap-around-capable padding.

    Args:
        name: a key of :data:`BACKBONES`.
        weights: ``"none"``, ``"imagenet"`` or the path of a local state dict of the full torchvision model.
        in_channels: input channels; other than 3, the first convolution is rebuilt: with pretrained weights
            its RGB filters, averaged, are spread over the new channels; without, it is freshly initialised
            (Kaiming, as torchvision's ResNets), so that the channels start out different.

    Raises:
        ConfigError: unknown backbone, or weights that cannot be loaded (offline, missing or unfitting file).
    """
    spec = _spec(name)
    model = spec.build()
    state = load_weights_state(name, weights)
    if state is not None:
        _load_into(model, state, name, weights)
    stages = spec.stages(model)
    if in_channels != 3:
        _adapt_first_conv(stages[0], in_channels, pretrained=state is not None)
    backbone = Backbone(name, stages, spec.channels)
    convert_to_wrap_padding(backbone)
    return backbone


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def load_weights_state(name: str, weights: str) -> dict[str, Tensor] | None:
    """The state dict of the full torchvision model ``name`` for ``weights`` (None for ``"none"``).

    Raises:
        ConfigError: ImageNet weights neither cached nor downloadable; a local file missing or not a state dict.
    """
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        return _imagenet_state(name)
    return _local_state(Path(weights))


def _imagenet_state(name: str) -> dict[str, Tensor]:
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    try:
        # torch.hub looks in $TORCH_HOME/hub/checkpoints first and only downloads what is not cached.
        return torch.hub.load_state_dict_from_url(
            url, progress=False, check_hash=True, map_location="cpu", weights_only=True
        )
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as error:
        raise ConfigError(
            f"ImageNet weights for {name} are not available offline: run once online or pass "
            f"weights=/path/to/file.pth ({type(error).__name__}: {error})"
        ) from error


def _local_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"weights file {path} not found (weights must be 'none', 'imagenet' or a .pth file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise ConfigError(f"weights file {path} is not a readable state dict: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _load_into(model: nn.Module, state: dict[str, Tensor], name: str, weights: str) -> None:
    """Load the keys ``model`` has (extra keys in ``state``, e.g. a classifier, are ignored)."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    if missing:
        raise ConfigError(
            f"weights {weights} do not fit backbone {name}: {len(missing)} missing keys, e.g. {missing[:3]}"
        )
    try:
        model.load_state_dict({key: state[key] for key in own}, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1].strip()
        raise ConfigError(f"weights {weights} do not fit backbone {name}: {first_line}") from error


def _adapt_first_conv(stage: nn.Module, in_channels: int, *, pretrained: bool = True) -> None:
    """Rebuild the first convolution of ``stage`` for ``in_channels`` inputs.

    Pretrained: the mean of its RGB filters on every channel, scaled by ``3 / in_channels`` (the response to a
    grey image is kept). Random: Kaiming-normal (fan-out, ReLU); copying one averaged random filter to every
    channel would make all input channels look alike to the network at the start.
    """
    for parent in stage.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    stride=child.stride,
                    padding=child.padding,
                    dilation=child.dilation,
                    bias=child.bias is not None,
                )
                with torch.no_grad():
                    if pretrained:
                        mean_filter = child.weight.mean(dim=1, keepdim=True)
                        new.weight.copy_(mean_filter.expand_as(new.weight) * (3.0 / in_channels))
                    else:
                        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, child_name, new)
                return
    raise ConfigError("backbone has no convolution to adapt to the input channels")
