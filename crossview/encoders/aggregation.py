"""Aggregation heads: SAFA's spatial-aware feature aggregation (global descriptor) and azimuth column features.

Reference: Y. Shi, L. Liu, X. Yu, H. Li, "Spatial-Aware Feature Aggregation for Cross-View Image based
Geo-Localization", NeurIPS 2019. The spatial-aware position embedding max-pools the feature map over channels,
passes the ``h*w`` vector through two fully connected layers (``h*w -> h*w/2 -> h*w``), one pair per embedding
map, and aggregates the features with each of the ``K`` maps: ``descriptor = concat_k sum_hw F[:, h, w] A_k[h, w]``,
L2-normalised. The fully connected layers fix the feature-map size, so every branch has its own head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ColumnHead", "SpatialAwareAggregation"]


class SpatialAwareAggregation(nn.Module):
    """SAFA aggregation of (B, C, h, w) feature maps into (B, C*K) L2-normalised descriptors.

    Args:
        channels: feature channels ``C``.
        height: feature-map height ``h`` (fixed).
        width: feature-map width ``w`` (fixed).
        num_maps: number of spatial-aware embedding maps ``K``.
    """

    def __init__(self, channels: int, height: int, width: int, num_maps: int = 8) -> None:
        super().__init__()
        self.channels, self.height, self.width, self.num_maps = channels, height, width, num_maps
        positions = height * width
        hidden = max(1, positions // 2)
        # Per-map fully connected layers as batched weights (K, in, out), initialised like nn.Linear.
        self.weight1 = nn.Parameter(torch.empty(num_maps, positions, hidden))
        self.bias1 = nn.Parameter(torch.empty(num_maps, 1, hidden))
        self.weight2 = nn.Parameter(torch.empty(num_maps, hidden, positions))
        self.bias2 = nn.Parameter(torch.empty(num_maps, 1, positions))
        for weight, bias, fan_in in ((self.weight1, self.bias1, positions), (self.weight2, self.bias2, hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    @property
    def out_dim(self) -> int:
        return self.channels * self.num_maps

    def attention(self, features: Tensor) -> Tensor:
        """The K spatial-aware embedding maps, (B, K, h*w), of features (B, C, h, w)."""
        pooled = features.amax(dim=1).flatten(1)  # (B, h*w): max over channels
        hidden = torch.einsum("bi,kio->kbo", pooled, self.weight1) + self.bias1
        maps = torch.einsum("kbi,kio->kbo", hidden, self.weight2) + self.bias2
        return maps.transpose(0, 1)

    def forward(self, features: Tensor) -> Tensor:
        """Args: features (B, C, h, w). Returns descriptors (B, C*K), unit L2 norm."""
        if features.shape[1:] != (self.channels, self.height, self.width):
            raise ValueError(
                f"SAFA head expects features (B, {self.channels}, {self.height}, {self.width}), "
                f"got {tuple(features.shape)}"
            )
        maps = self.attention(features)
        # Concatenated over k: entries k*C .. k*C + C - 1 hold sum_hw F * A_k.
        descriptor = torch.einsum("bcp,bkp->bkc", features.flatten(2), maps).flatten(1)
        return F.normalize(descriptor, dim=1)


class ColumnHead(nn.Module):
    """Azimuth column features: 1x1 projection to ``channels``, average over height down to ``rows`` rows,
    flattened to ``channels * rows`` features per column (the height layout is kept, as DSM correlates whole
    feature maps rather than height-pooled columns).
    """

    def __init__(self, in_channels: int, channels: int, rows: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(in_channels, channels, kernel_size=1)
        self.rows = rows

    @property
    def out_dim(self) -> int:
        return self.project.out_channels * self.rows

    def forward(self, features: Tensor) -> Tensor:
        """Args: features (B, C, h, w). Returns (B, channels*rows, w)."""
        projected = self.project(features)
        pooled = F.adaptive_avg_pool2d(projected, (self.rows, projected.shape[-1]))
        return pooled.flatten(1, 2)
