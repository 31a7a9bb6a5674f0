"""Truncated backbones (levels, channels, strides) and wrap-around width padding (against a tiled reference)."""

from __future__ import annotations

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
