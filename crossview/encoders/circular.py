"""Convolutions and pooling whose width padding can wrap around (the 360° seam of panoramas and polar images).

An equirectangular panorama or a polar aerial image is periodic in azimuth: column ``W - 1`` is the neighbour of
column 0. Zero padding in width breaks that symmetry at the seam; with circular width padding a network of total
stride ``s`` is exactly equivariant to rolls by multiples of ``s`` columns (when every intermediate width is a
multiple of the stride that follows it).

:class:`WrapConv2d` and :class:`WrapMaxPool2d` replace ``nn.Conv2d`` / ``nn.MaxPool2d``. They keep the height
padding of the original layer and pad the width themselves: circularly inside a :func:`circular_width` block,
otherwise with zeros (convolution) or ``-inf`` (max pooling), i.e. exactly like the original layer. The switch is
a context variable, so one set of weights serves panoramas (wrapping) and pinhole images or north-up chips (not
wrapping), and concurrent threads do not disturb each other.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WrapConv2d", "WrapMaxPool2d", "circular_width", "convert_to_wrap_padding", "is_circular_width"]

_CIRCULAR_WIDTH: contextvars.ContextVar[bool] = contextvars.ContextVar("crossview_circular_width", default=False)


@contextlib.contextmanager
def circular_width(enabled: bool = True) -> Iterator[None]:
    """Within the block, :class:`WrapConv2d` / :class:`WrapMaxPool2d` pad the width circularly (if ``enabled``)."""
    token = _CIRCULAR_WIDTH.set(enabled)
    try:
        yield
    finally:
        _CIRCULAR_WIDTH.reset(token)


def is_circular_width() -> bool:
    """Whether the current context pads widths circularly."""
    return _CIRCULAR_WIDTH.get()


def _pad_width(x: Tensor, pad_px: int, fill: float) -> Tensor:
    if pad_px == 0:
        return x
    if is_circular_width():
        return F.pad(x, (pad_px, pad_px, 0, 0), mode="circular")
    return F.pad(x, (pad_px, pad_px, 0, 0), mode="constant", value=fill)


class WrapConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose width padding wraps around inside :func:`circular_width` (zeros otherwise).

    Parameters and state-dict keys are those of ``nn.Conv2d``; ``wrap_pad`` is the width padding in pixels.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.padding, str) or self.padding_mode != "zeros":
            raise ValueError(f"WrapConv2d needs integer zero padding, got {self.padding!r} / {self.padding_mode!r}")
        self.wrap_pad = int(self.padding[1])
        self.padding = (self.padding[0], 0)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(_pad_width(x, self.wrap_pad, 0.0), self.weight, self.bias)


class WrapMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose width padding wraps around inside :func:`circular_width` (``-inf`` otherwise)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        pad_h, pad_w = (self.padding, self.padding) if isinstance(self.padding, int) else self.padding
        self.wrap_pad = int(pad_w)
        self.padding = (int(pad_h), 0)

    def forward(self, x: Tensor) -> Tensor:
        padded = _pad_width(x, self.wrap_pad, float("-inf"))
        return F.max_pool2d(
            padded, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )


def _wrap_conv(conv: nn.Conv2d) -> WrapConv2d:
    wrapped = WrapConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    wrapped.load_state_dict(conv.state_dict())
    wrapped.train(conv.training)
    return wrapped


def _wrap_pool(pool: nn.MaxPool2d) -> WrapMaxPool2d:
    return WrapMaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode)


def convert_to_wrap_padding(module: nn.Module) -> nn.Module:
    """Replace, in place, every width-padded ``nn.Conv2d`` / ``nn.MaxPool2d`` of ``module`` by its wrapping twin.

    Weights are kept (state-dict keys do not change). Returns ``module`` (or its replacement when ``module``
    itself is such a layer).
    """
    if type(module) is nn.Conv2d:
        return _wrap_conv(module) if _width_padding(module) else module
    if type(module) is nn.MaxPool2d:
        return _wrap_pool(module) if _width_padding(module) else module
    for name, child in module.named_children():
        replacement = convert_to_wrap_padding(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def _width_padding(layer: nn.Conv2d | nn.MaxPool2d) -> int:
    padding = layer.padding
    if isinstance(padding, str):
        raise ValueError(f"cannot wrap the padding of {layer}: string padding {padding!r}")
    return int(padding if isinstance(padding, int) else padding[1])
