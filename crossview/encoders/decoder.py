"""Multi-scale refinement features: a small FPN decoder with a confidence head per level.

The LM refiner compares ground and aerial features projected onto each other, coarse to fine. This decoder
turns the backbone's stride-4/8/16 maps into three levels (strides 16, 8, 4: coarse to fine) of L2-normalised
features with a confidence map in (0, 1) each. Its 3x3 convolutions wrap across the panorama seam inside
:func:`crossview.encoders.circular.circular_width`, and upsampling is nearest-neighbour by exact factors of 2, so
the decoder keeps the backbone's roll equivariance.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from crossview.encoders.circular import WrapConv2d

__all__ = ["RefinementDecoder"]


LEVEL_STRIDES = (16, 8, 4)
"""Input pixels per cell of the three refinement levels, coarse to fine (the backbones' strides 16, 8 and 4)."""


class RefinementDecoder(nn.Module):
    """FPN decoder: backbone features (strides 4, 8, 16) -> 3 levels of features and confidences.

    Args:
        in_channels: backbone channels at strides 4, 8, 16.
        out_channels: feature channels of the output levels, coarse to fine (strides 16, 8, 4).
        hidden: channels of the top-down pathway.
    """

    def __init__(self, in_channels: tuple[int, int, int], out_channels: tuple[int, int, int], hidden: int = 64) -> None:
        super().__init__()
        coarse_to_fine = list(reversed(in_channels))
        self.lateral = nn.ModuleList(nn.Conv2d(c, hidden, kernel_size=1) for c in coarse_to_fine)
        self.smooth = nn.ModuleList(
            nn.Sequential(
                WrapConv2d(hidden, hidden, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
            )
            for _ in coarse_to_fine
        )
        self.feature_heads = nn.ModuleList(nn.Conv2d(hidden, c, kernel_size=1) for c in out_channels)
        self.confidence_heads = nn.ModuleList(nn.Conv2d(hidden, 1, kernel_size=1) for _ in out_channels)
        self.out_channels = tuple(out_channels)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Args: features [(B, C4, H/4, W/4), (B, C8, H/8, W/8), (B, C16, H/16, W/16)] (backbone order).

        Returns:
            features: 3 maps (B, C_l, H_l, W_l), coarse to fine (strides 16, 8, 4), unit L2 norm over channels.
            confidences: 3 maps (B, 1, H_l, W_l) in (0, 1).
        """
        outputs, confidences = [], []
        top: Tensor | None = None
        for level, x in enumerate(reversed(features)):
            lateral = self.lateral[level](x)
            if top is not None:
                lateral = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            top = self.smooth[level](lateral)
            outputs.append(F.normalize(self.feature_heads[level](top), dim=1))
            # Clamped so that a saturated sigmoid never gives exactly 0 or 1 (logs of confidences stay finite).
            confidences.append(self.confidence_heads[level](top).sigmoid().clamp(1e-6, 1.0 - 1e-6))
        return outputs, confidences
