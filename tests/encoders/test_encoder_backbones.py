"""Truncated backbones (levels, channels, strides) and wrap-around width padding (against a tiled reference)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossview.encoders.backbones import STRIDE, build_backbone
from crossview.encoders.circular import WrapConv2d, WrapMaxPool2d, circular_width, convert_to_wrap_padding

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_wrap_conv_equals_plain_conv_outside_the_circular_context() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, kernel_size=(3, 5), stride=(1, 2), padding=(1, 2))
    wrapped = convert_to_wrap_padding(nn.Sequential(conv))[0]
    assert isinstance(wrapped, WrapConv2d)
    x = torch.rand(2, 3, 7, 12)
    torch.testing.assert_close(wrapped(x), conv(x), rtol=0, atol=1e-6)


def test_wrap_conv_matches_a_conv_on_the_tiled_input() -> None:
    """Inside circular_width, column j sees columns j +- k modulo W: like the middle of [x, x, x] convolved."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
    wrapped = convert_to_wrap_padding(nn.Sequential(conv))[0]
    width = 12
    x = torch.rand(2, 3, 8, width)
    tiled = conv(torch.cat([x, x, x], dim=-1))  # zero padding only matters at the far ends
    with circular_width(True):
        out = wrapped(x)
    first = width // 2  # stride 2: output column of the middle copy's first input column
    torch.testing.assert_close(out, tiled[..., first : first + width // 2], rtol=0, atol=1e-6)


def test_wrap_max_pool_matches_pool_on_the_tiled_input_and_plain_pool_outside() -> None:
    pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    wrapped = convert_to_wrap_padding(nn.Sequential(pool))[0]
    assert isinstance(wrapped, WrapMaxPool2d)
    x = torch.randn(1, 2, 6, 8)
    torch.testing.assert_close(wrapped(x), pool(x), rtol=0, atol=0)
    with circular_width(True):
        out = wrapped(x)
    tiled = pool(torch.cat([x, x, x], dim=-1))
    torch.testing.assert_close(out, tiled[..., 4:8], rtol=0, atol=0)


def test_circular_context_is_restored() -> None:
    from crossview.encoders.circular import is_circular_width

    assert not is_circular_width()
    with circular_width(True):
        assert is_circular_width()
        with circular_width(False):
            assert not is_circular_width()
        assert is_circular_width()
    assert not is_circular_width()


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "vgg16", "convnext_tiny"])
def test_backbone_is_roll_equivariant_with_circular_padding(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    x = torch.rand(1, 3, 32, 128)
    with torch.no_grad(), circular_width(True):
        levels = backbone(x)
        rolled = backbone(torch.roll(x, shifts=2 * STRIDE, dims=-1))
    for level, level_rolled, stride in zip(levels, rolled, (4, 8, 16), strict=True):
        expected = torch.roll(level, shifts=2 * STRIDE // stride, dims=-1)
        assert _relative_error(level_rolled, expected) < 1e-5
    if name == "convnext_tiny":
        return  # its fresh blocks are scaled by 1e-6 (layer scale): padding hardly matters before training
    # Without wrapping the seam breaks the symmetry: the test above can fail.
    with torch.no_grad():
        plain = backbone(x)[-1]
        plain_rolled = backbone(torch.roll(x, shifts=2 * STRIDE, dims=-1))[-1]
    assert _relative_error(plain_rolled, torch.roll(plain, 2, dims=-1)) > 1e-2


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    # Randomly initialised deep features can be tiny (efficientnet: ~1e-9): compare relative to their scale.
    return float((actual - expected).abs().max() / expected.abs().max())


def test_first_convolution_adapts_to_other_input_channels() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", in_channels=5).eval()
    with torch.no_grad():
        levels = backbone(torch.rand(1, 5, 32, 32))
    assert levels[-1].shape == (1, 256, 2, 2)


def test_padding_wrap_rejects_string_padding() -> None:
    with pytest.raises(ValueError, match="string padding"):
        convert_to_wrap_padding(nn.Conv2d(3, 3, 3, padding="same"))


def test_plain_conv_reference_of_the_tiled_trick_is_sound() -> None:
    """Guards the reference itself: tiling is exact only where the kernel never reaches the zero padding."""
    x = torch.rand(1, 1, 1, 6)
    kernel = torch.ones(1, 1, 1, 3)
    out = F.conv2d(torch.cat([x, x, x], -1), kernel, padding=(0, 1))[..., 6:12]
    expected = torch.stack([x[..., (j - 1) % 6] + x[..., j] + x[..., (j + 1) % 6] for j in range(6)], -1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_resnet_trunk_computes_what_torchvisions_resnet_does_with_the_same_weights(name: str) -> None:
    import torchvision

    from crossview.encoders.resnet import ResNetTrunk

    torch.manual_seed(3)
    reference = torchvision.models.get_model(name, weights=None).eval()
    for module in reference.modules():  # batch-norm statistics other than 0 and 1, so that they are tested too
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    trunk = ResNetTrunk(name).eval()
    own = trunk.state_dict()
    assert {k for k in reference.state_dict() if not k.startswith(("layer4.", "fc."))} == set(own)
    trunk.load_state_dict({key: reference.state_dict()[key] for key in own})
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected = reference.layer3(
            reference.layer2(reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))
        )
        actual = trunk.layer3(trunk.layer2(trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x)))))))
    assert actual.shape == (2, 256, 4, 6)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_resnet_trunk_initialises_like_torchvision() -> None:
    from crossview.encoders.resnet import ResNetTrunk

    torch.manual_seed(4)
    trunk = ResNetTrunk("resnet18")
    fan_out = 64 * 3 * 3
    std = float(trunk.layer1[0].conv1.weight.detach().std())
    assert abs(std - (2.0 / fan_out) ** 0.5) < 0.1 * (2.0 / fan_out) ** 0.5
    assert torch.equal(trunk.bn1.weight, torch.ones(64)) and torch.equal(trunk.bn1.bias, torch.zeros(64))


def test_loading_the_shipped_model_does_not_import_torchvision() -> None:
    # torchvision's import pulls in torch._dynamo (seconds on 2 cores): locate, index and demo must not pay it
    code = (
        "import sys; import crossview.locate, crossview.localize, crossview.retrieval.dense, crossview.refinement; "
        "from crossview.checkpoints import load_model; load_model(crossview.locate.DEFAULT_MODEL); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision' or m.startswith('torch._dynamo')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
