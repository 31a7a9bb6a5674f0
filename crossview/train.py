"""``crossview train``: contrastive training of a cross-view encoder on a VIGOR-layout dataset.

The recipe (every knob is a key of :data:`crossview.config.DEFAULT_CONFIG`):

- batches of panorama/aerial-tile pairs; the other tiles of a batch are the negatives (in-batch negatives).
  In ``sampler.mode: gps`` a batch holds geographic neighbours (panoramas ordered along a Hilbert curve whose
  placement changes every epoch), so the negatives are nearby, look-alike tiles: hard negatives. The sampler
  keeps two panoramas with the same positive tile out of one batch (deferring and swapping items), and any pair
  whose tile also holds the panorama (the same positive tile; semi-positives with ``loss.mask_semi_positives``)
  is left out of the loss;
- loss: symmetric InfoNCE with a learnable temperature (a CLIP-style ``log(1/T)`` parameter) or SAFA's weighted
  soft-margin triplet loss, on ``model.similarity`` scores (orientation-aware scores when the panoramas are
  randomly rolled, ``data.random_roll``: training for unknown heading);
- AdamW (no weight decay on biases, norms and the temperature), linear warm-up then cosine decay per optimizer
  step, gradient accumulation; mixed precision and channels-last on CUDA;
- determinism: the batch order is a function of (seed, epoch), the augmentations of (seed, epoch, index), and the
  torch RNG is reseeded from (seed, step, rank) before every step, so ``--resume`` continues bit for bit;
- output folder: ``config.yaml`` (the resolved config), ``metrics.csv``, ``last.pt`` (after every epoch, at
  ``--max-steps`` and on SIGINT/SIGTERM), ``epoch-NNN.pt`` (the last ``train.keep_checkpoints`` epochs), and
  TensorBoard events in ``tb/`` when TensorBoard is installed;
- several GPUs or nodes: ``torchrun --nproc_per_node N -m crossview train ...`` (DDP: NCCL on CUDA, gloo on CPU;
  every process takes its share of each global batch; only rank 0 writes files).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn

from crossview.checkpoints import load_checkpoint, save_checkpoint
from crossview.cli import Command
from crossview.config import config_differences, default_config, dump_yaml, merge_config, resolve_config
from crossview.errors import ConfigError
from crossview.fsio import atomic_write_text

LAST_CHECKPOINT = "last.pt"
METRICS_CSV = "metrics.csv"
CONFIG_YAML = "config.yaml"
METRICS_FIELDS = ("epoch", "step", "loss", "lr", "temperature", "pairs_per_s", "elapsed_s")
EXIT_INTERRUPTED = 130
EARTH_RADIUS_M = 6_371_008.8  # mean radius: the sampler only needs neighbourhoods, not survey accuracy
HILBERT_ORDER = 16  # 65536 x 65536 cells per city
# horizontal fields of view of the pinhole views cut for loss.dense_pinhole_weight, degrees
PINHOLE_HFOV_RANGE_DEG = (60.0, 100.0)


# ---- cities ------------------------------------------------------------------------------------------------


def available_cities(root: str | os.PathLike[str]) -> list[str]:
    """Cities of a VIGOR-layout dataset: the folders of ``<root>/splits`` (sorted)."""
    splits = Path(root) / "splits"
    if not splits.is_dir():
        raise ConfigError(f"--data {root}: no splits/ folder: not a VIGOR-layout dataset (see 'crossview synth')")
    cities = sorted(p.name for p in splits.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not cities:
        raise ConfigError(f"--data {root}: splits/ holds no city folder")
    return cities


def split_cities(
    root: str | os.PathLike[str], split: str, *, train: bool, cities: Sequence[str] | None = None
) -> list[str]:
    """The cities a split reads.

    ``cities`` given: those. Same-area split: every city of the dataset (each city's train or test list).
    Cross-area split: VIGOR's (NewYork + Seattle to train, SanFrancisco + Chicago to test) when the dataset has
    all four; otherwise (a synthetic world) the first ``ceil(K / 2)`` of the K sorted cities train and the others
    test.

    Raises:
        ConfigError: no cities, or a cross-area split of a dataset with a single city.
    """
    from crossview.data.vigor import CROSS_AREA_TEST_CITIES, CROSS_AREA_TRAIN_CITIES, VIGOR_CITIES

    if cities is not None:
        return list(cities)
    found = available_cities(root)
    if split == "same":
        return found
    if set(VIGOR_CITIES) <= set(found):
        return list(CROSS_AREA_TRAIN_CITIES if train else CROSS_AREA_TEST_CITIES)
    if len(found) < 2:
        raise ConfigError(f"--split cross needs at least 2 cities, {root} has {found}")
    half = math.ceil(len(found) / 2)
    return found[:half] if train else found[half:]


# ---- batch sampler -----------------------------------------------------------------------------------------


def hilbert_index(x: np.ndarray, y: np.ndarray, order: int = HILBERT_ORDER) -> np.ndarray:
    """Position along the Hilbert curve of integer cells (x, y) in [0, 2**order), vectorised.

    Consecutive indices are neighbouring cells, so sorting by it keeps nearby points together.
    """
    x, y = np.asarray(x, dtype=np.int64).copy(), np.asarray(y, dtype=np.int64).copy()
    n = 1 << order
    d = np.zeros_like(x)
    s = n >> 1
    while s > 0:
        rx = ((x & s) > 0).astype(np.int64)
        ry = ((y & s) > 0).astype(np.int64)
        d += s * s * ((3 * rx) ^ ry)
        flip = (ry == 0) & (rx == 1)
        x = np.where(flip, n - 1 - x, x)
        y = np.where(flip, n - 1 - y, y)
        swap = ry == 0
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s >>= 1
    return d


def _local_xy_m(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular metres around the points' mean (enough to find neighbours within a city)."""
    lat0 = float(np.mean(lat))
    x = np.radians(lon - float(np.mean(lon))) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    y = np.radians(lat - lat0) * EARTH_RADIUS_M
    return x, y


class GeoBatchSampler:
    """Global batches of a training epoch: geographic neighbours (``"gps"``) or shuffled (``"random"``).

    The batches of an epoch are a pure function of (seed, epoch). Every epoch has ``len(self)`` batches of
    exactly ``batch_size`` items; the leftover items change from epoch to epoch.

    Args:
        lat, lon: (N,) panorama positions, degrees.
        groups: (N,) the city of each panorama (cities are ordered separately).
        positive_tiles: (N,) the positive tile of each panorama: a batch avoids holding one tile twice.
        batch_size: items per (global) batch.
        mode: ``"gps"`` or ``"random"``.
        cell_m: Hilbert cell size, metres.
        seed: base seed.
    """

    def __init__(
        self,
        lat: Sequence[float],
        lon: Sequence[float],
        groups: Sequence[str],
        positive_tiles: Sequence[str],
        *,
        batch_size: int,
        mode: str = "gps",
        cell_m: float = 25.0,
        seed: int = 0,
    ) -> None:
        self.lat, self.lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        self.groups = np.asarray(groups)
        tiles = np.asarray(positive_tiles)
        self.tile_ids = np.unique(tiles, return_inverse=True)[1]
        self.batch_size, self.mode, self.cell_m, self.seed = int(batch_size), mode, float(cell_m), int(seed)
        if len(self.lat) < self.batch_size:
            raise ConfigError(
                f"train.batch_size={self.batch_size} x processes is more than the {len(self.lat)} training panoramas"
            )

    def __len__(self) -> int:
        return len(self.lat) // self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's item order before batching (neighbours next to each other in ``"gps"`` mode)."""
        return np.concatenate(self._segments(epoch))

    def _segments(self, epoch: int) -> list[np.ndarray]:
        """Items in order, one segment per city (``"gps"``) or a single shuffled segment (``"random"``)."""
        rng = np.random.default_rng([self.seed, epoch, 0x5A3])
        if self.mode == "random":
            return [rng.permutation(len(self.lat))]
        segments = []
        for group in rng.permutation(np.unique(self.groups)):
            members = np.flatnonzero(self.groups == group)
            segments.append(members[self._hilbert_order(members, rng)])
        return segments

    def _hilbert_order(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x, y = _local_xy_m(self.lat[members], self.lon[members])
        angle = rng.uniform(0.0, 2.0 * math.pi)  # a new rotation and offset every epoch: new neighbourhoods
        u = math.cos(angle) * x - math.sin(angle) * y
        v = math.sin(angle) * x + math.cos(angle) * y
        cells = (1 << HILBERT_ORDER) - 1
        col = np.clip(np.floor((u - u.min()) / self.cell_m + rng.uniform(0, 4)), 0, cells)
        row = np.clip(np.floor((v - v.min()) / self.cell_m + rng.uniform(0, 4)), 0, cells)
        keys = hilbert_index(col.astype(np.int64), row.astype(np.int64))
        tie_break = rng.permutation(len(members))
        return np.lexsort((tie_break, keys))

    def batches(self, epoch: int) -> list[list[int]]:
        """The ``len(self)`` global batches of an epoch, in training order."""
        rng = np.random.default_rng([self.seed, epoch, 0xB47])
        full: list[list[int]] = []
        partial: list[int] = []
        for segment in self._segments(epoch):  # cities apart: batches never span two cities but at the end
            for batch in _batches_without_repeated_tiles(segment, self.tile_ids, self.batch_size):
                (full.append(batch) if len(batch) == self.batch_size else partial.extend(batch))
        flat = [i for batch in full for i in batch] + partial
        batches = [flat[k * self.batch_size : (k + 1) * self.batch_size] for k in range(len(self))]
        _repair_repeated_tiles(batches, flat[len(self) * self.batch_size :], self.tile_ids)
        return [batches[i] for i in rng.permutation(len(batches))]


def _batches_without_repeated_tiles(order: np.ndarray, tile_ids: np.ndarray, size: int) -> list[list[int]]:
    """Cut ``order`` into batches, deferring an item whose positive tile is already in the current batch."""
    pending = [int(i) for i in order]
    batches: list[list[int]] = []
    while pending:
        batch: list[int] = []
        used: set[int] = set()
        deferred: list[int] = []
        position = 0
        while position < len(pending) and len(batch) < size:
            item = pending[position]
            (deferred if tile_ids[item] in used else batch).append(item)
            used.add(int(tile_ids[item]))
            position += 1
        pending = deferred + pending[position:]
        batches.append(batch)
    return batches


def _repair_repeated_tiles(batches: list[list[int]], spare: list[int], tile_ids: np.ndarray) -> None:
    """Where a batch still holds a tile twice (the end of a city), swap one of the two with an item of the
    nearest batch in curve order (or an unused item of the epoch) that fits both batches. Batches left with a
    repeated tile, if any, have those pairs masked in the loss."""
    groups = [*batches, spare]  # the unused items come last in curve order
    for index, batch in enumerate(batches):
        for position in range(len(batch)):
            tiles = [int(tile_ids[i]) for i in batch]
            if tiles.count(tiles[position]) > 1:
                nearest = sorted(range(len(groups)), key=lambda k: (abs(k - index), k))
                _swap_out(batch, position, [groups[k] for k in nearest if k != index], tile_ids)


def _swap_out(batch: list[int], position: int, candidates: list[list[int]], tile_ids: np.ndarray) -> None:
    keep = {int(tile_ids[i]) for k, i in enumerate(batch) if k != position}
    mine = int(tile_ids[batch[position]])
    for other in candidates:
        other_tiles = [int(tile_ids[i]) for i in other]
        for k, theirs in enumerate(other_tiles):
            if theirs not in keep and mine not in other_tiles[:k] + other_tiles[k + 1 :]:
                batch[position], other[k] = other[k], batch[position]
                return


def shard(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This process's contiguous share of a global batch (``len(batch)`` is a multiple of ``world_size``)."""
    size = len(batch) // world_size
    return list(batch[rank * size : (rank + 1) * size])


# ---- loss --------------------------------------------------------------------------------------------------


def false_negative_mask(
    positive_tiles: Sequence[str], tiles_of_query: Sequence[Sequence[str]], *, semi_positives: bool
) -> torch.Tensor:
    """(B, B) bool: True where pair (panorama i, tile j) must not count as a negative.

    Args:
        positive_tiles: (B,) the tile of each column (the batch's positive tiles).
        tiles_of_query: (B,) for each panorama its tiles, positive first, then the semi-positives.
        semi_positives: also exclude tiles that hold the panorama as a semi-positive.

    Returns:
        The mask; the diagonal (the positives) is always False.
    """
    size = len(positive_tiles)
    mask = torch.zeros(size, size, dtype=torch.bool)
    for i, tiles in enumerate(tiles_of_query):
        holding = set(tiles if semi_positives else tiles[:1])
        for j, tile in enumerate(positive_tiles):
            mask[i, j] = i != j and tile in holding
    return mask


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with a learnable temperature, or SAFA's weighted soft-margin triplet loss.

    Args:
        kind: ``"infonce"`` or ``"triplet"``.
        temperature: initial temperature T (InfoNCE logits are ``score / T``).
        learn_temperature: optimise ``log(1/T)``.
        max_logit_scale: clamp of ``1/T``.
        triplet_alpha: SAFA's weight alpha in ``log(1 + exp(alpha (d_pos - d_neg)))``, ``d = 2 - 2 score``.
    """

    def __init__(
        self,
        kind: str = "infonce",
        *,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        max_logit_scale: float = 100.0,
        triplet_alpha: float = 10.0,
    ) -> None:
        super().__init__()
        self.kind, self.max_logit_scale, self.triplet_alpha = kind, float(max_logit_scale), float(triplet_alpha)
        log_scale = torch.tensor(math.log(1.0 / temperature), dtype=torch.float32)
        self.log_scale = nn.Parameter(log_scale, requires_grad=bool(learn_temperature) and kind == "infonce")

    @property
    def temperature(self) -> float:
        """The current temperature T (1 / the clamped logit scale)."""
        return 1.0 / min(math.exp(float(self.log_scale.detach())), self.max_logit_scale)

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of a (B, B) score matrix (rows: panoramas, columns: tiles; positives on the diagonal).

        Args:
            scores: (B, B) similarity, higher is better (cosine in [-1, 1] for L2-normalised descriptors).
            mask: (B, B) bool, True for pairs to leave out (never on the diagonal), or None.

        Returns:
            Scalar loss, float32.
        """
        scores = scores.float()
        if mask is None:
            mask = torch.zeros_like(scores, dtype=torch.bool)
        mask = mask.to(scores.device)
        if self.kind == "triplet":
            return self._triplet(scores, mask)
        scale = self.log_scale.exp().clamp(max=self.max_logit_scale)
        logits = (scores * scale).masked_fill(mask, float("-inf"))
        target = torch.arange(scores.shape[0], device=scores.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    def _triplet(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        distance = 2.0 - 2.0 * scores
        positive = distance.diagonal()
        valid = ~mask & ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        ground_anchor = F.softplus(self.triplet_alpha * (positive[:, None] - distance))  # tile j as the negative
        aerial_anchor = F.softplus(self.triplet_alpha * (positive[None, :] - distance))  # panorama i as the negative
        count = valid.sum().clamp(min=1)
        return 0.5 * ((ground_anchor * valid).sum() + (aerial_anchor * valid).sum()) / count


class TrainStep(nn.Module):
    """The network and the loss in one module (what DDP wraps): ``forward`` returns the batch's loss.

    With ``orientation_weight > 0`` the loss also trains the azimuth column features, from the same forward pass:
    the contrastive loss on the orientation-aware scores (max over shifts) plus, with ``heading_weight > 0``, a
    cross-entropy over the shifts of each positive pair whose target is the panorama's heading. Because the
    panorama branch is equivariant to rolls (it wraps across the seam), north-aligned panoramas teach the
    column features for every heading, while the descriptor keeps learning north-aligned retrieval.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: ContrastiveLoss,
        *,
        unknown_heading: bool,
        orientation_weight: float = 0.0,
        heading_weight: float = 0.0,
        heading_logit_scale: float = 20.0,
        refine_weight: float = 0.0,
        refine_camera_height_m: float = 2.0,
        dense_weight: float = 0.0,
        dense_pinhole_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.model, self.loss, self.unknown_heading = model, loss, unknown_heading
        self.orientation_weight, self.heading_weight = float(orientation_weight), float(heading_weight)
        self.heading_logit_scale = float(heading_logit_scale)
        self.refine_weight, self.refine_camera_height_m = float(refine_weight), float(refine_camera_height_m)
        self.dense_weight, self.dense_pinhole_weight = float(dense_weight), float(dense_pinhole_weight)

    def forward(
        self,
        pano: torch.Tensor,
        aerial: torch.Tensor,
        mask: torch.Tensor,
        heading_deg: torch.Tensor | None = None,
        px_in_tile: torch.Tensor | None = None,
        mpp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ground = self.model.encode_ground(pano, camera="panorama")
        tiles = self.model.encode_aerial(aerial)
        scores, _ = self.model.similarity(ground, tiles, unknown_heading=self.unknown_heading)
        loss = self.loss(scores, mask)
        if self.orientation_weight > 0 and not self.unknown_heading:
            loss = loss + self._orientation_loss(ground, tiles, mask, heading_deg)
        if (
            max(self.refine_weight, self.dense_weight, self.dense_pinhole_weight) > 0
            and px_in_tile is not None
            and mpp is not None
        ):
            loss = loss + self._refine_loss(pano, aerial, heading_deg, px_in_tile, mpp)
        return loss

    def _refine_loss(
        self, pano: torch.Tensor, aerial: torch.Tensor, heading_deg: Any, px_in_tile: torch.Tensor, mpp: torch.Tensor
    ) -> Any:
        """The losses on the refinement features (:mod:`crossview.correspondence_loss`), weighted: the dense
        correspondence loss (``refine_weight``), the dense matching loss on the finest level (``dense_weight``) and
        the same on pinhole views cut from the panoramas (``dense_pinhole_weight``)."""
        from crossview.correspondence_loss import correspondence_loss, dense_matching_loss

        model = self.model
        size = (model.config["pano_height"], model.config["pano_width"])
        if tuple(pano.shape[-2:]) != size:
            pano = F.interpolate(pano, size=size, mode="bilinear", align_corners=False, antialias=True)
        ground, ground_conf = model.ground_refinement_features(pano, camera="panorama")
        tile, _ = model.map_refinement_features(aerial)
        heading = torch.zeros(pano.shape[0], device=pano.device) if heading_deg is None else heading_deg
        geometry = (aerial.shape[-1], px_in_tile.to(pano.device), mpp.to(pano.device).float())
        heading = heading.to(pano.device).float()
        loss = torch.zeros((), device=pano.device)
        if self.refine_weight > 0:
            loss = self.refine_weight * correspondence_loss(
                ground, tile, *geometry, heading, camera_height_m=self.refine_camera_height_m
            )
        if self.dense_weight > 0:
            dense = dense_matching_loss(
                ground[-1], ground_conf[-1], tile[-1], *geometry, heading, camera_height_m=self.refine_camera_height_m
            )
            loss = loss + self.dense_weight * dense
        if self.dense_pinhole_weight > 0:
            loss = loss + self.dense_pinhole_weight * self._pinhole_loss(pano, tile[-1], geometry, heading)
        return loss

    def _pinhole_loss(self, pano: torch.Tensor, tile: torch.Tensor, geometry: tuple, heading: torch.Tensor) -> Any:
        """The dense matching loss of pinhole views cut from the panoramas (random field of view in
        :data:`PINHOLE_HFOV_RANGE_DEG`, random direction), at the size ``locate`` encodes pinhole views."""
        from crossview.correspondence_loss import dense_matching_loss, pinhole_crops
        from crossview.geometry.cameras import PinholeCamera
        from crossview.localize import PINHOLE_HEIGHT_PX

        low, high = PINHOLE_HFOV_RANGE_DEG
        hfov = float(torch.empty(()).uniform_(low, high))
        yaw = torch.rand(pano.shape[0], device=pano.device) * 360.0
        size = (PINHOLE_HEIGHT_PX, round(PINHOLE_HEIGHT_PX * 4 / 3))
        views = pinhole_crops(pano, hfov, yaw, size)
        features, confidence = self.model.ground_refinement_features(views, camera="pinhole")
        camera = PinholeCamera.from_hfov(features[-1].shape[-1], features[-1].shape[-2], hfov)
        return dense_matching_loss(
            features[-1],
            confidence[-1],
            tile,
            *geometry,
            heading + yaw,
            camera_height_m=self.refine_camera_height_m,
            camera=camera,
        )

    def _orientation_loss(self, ground: Any, tiles: Any, mask: torch.Tensor, heading_deg: torch.Tensor | None) -> Any:
        from crossview.encoders.orientation import orientation_scores, place_on_canvas

        total = tiles.columns.shape[-1]
        canvas, canvas_mask = place_on_canvas(ground.columns, ground.column_fov, total)
        per_shift = orientation_scores(canvas, canvas_mask, tiles.columns)  # (B, B, Wc)
        loss = self.orientation_weight * self.loss(per_shift.max(dim=-1).values, mask)
        if self.heading_weight > 0:
            positive = per_shift.diagonal(dim1=0, dim2=1).T  # (B, Wc): each panorama against its own tile
            heading = torch.zeros(positive.shape[0]) if heading_deg is None else heading_deg.float().cpu()
            target = torch.remainder(torch.round(heading * total / 360.0), total).long().to(positive.device)
            loss = loss + self.heading_weight * F.cross_entropy(positive.float() * self.heading_logit_scale, target)
        return loss


# ---- optimizer and schedule --------------------------------------------------------------------------------


def freeze_except(model: nn.Module, trainable: Sequence[str] | None) -> None:
    """Train only the parameters whose names start with one of ``trainable`` (``train.trainable``; None: all).

    E.g. ``[ground_decoder, aerial_decoder]`` trains the refinement features of a model started with
    ``train.init_from`` while its retrieval branches stay as they are.

    Raises:
        ConfigError: a prefix that names no parameter.
    """
    if trainable is None:
        return
    names = [name for name, _ in model.named_parameters()]
    for prefix in trainable:
        if not any(name.startswith(prefix) for name in names):
            raise ConfigError(f"train.trainable: {prefix!r} names no parameter of the model")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(name.startswith(prefix) for prefix in trainable))


def freeze_statistics(model: nn.Module) -> None:
    """Put submodules without a trainable parameter in eval mode, so frozen BatchNorm statistics stay as loaded."""
    for module in model.modules():
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            module.eval()


def build_optimizer(module: nn.Module, optim: Mapping[str, Any]) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices and kernels only (not biases, norms, the temperature)."""
    decay, no_decay = [], []
    for _, parameter in module.named_parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": float(optim["weight_decay"])},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # foreach: one multi-tensor kernel per update instead of a loop over parameters (~5x faster on CPU)
    return torch.optim.AdamW(groups, lr=float(optim["lr"]), betas=tuple(optim["betas"]), foreach=True)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up, then cosine to min_ratio."""
    warmup = min(warmup_steps, total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, optim: Mapping[str, Any], total_steps: int) -> Any:
    """``LambdaLR`` over :func:`lr_factor` (its state dict holds only plain values)."""

    def factor(step: int) -> float:
        return lr_factor(
            step, total_steps=total_steps, warmup_steps=int(optim["warmup_steps"]), min_ratio=optim["min_lr_ratio"]
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- determinism -------------------------------------------------------------------------------------------


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for the torch RNG at optimizer step ``step`` of process ``rank``."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python RNG states as tensors and lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- distributed -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """The process's place in a DDP run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def all_mean(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        torch_dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)], device=_collective_device())
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
        return bool(tensor.item())


def _collective_device() -> torch.device:
    backend = torch_dist.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def _select_device(requested: str, dist: Dist) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: CUDA is not available")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def _init_distributed(dist: Dist, device: torch.device) -> None:
    if not dist.enabled or torch_dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


# ---- run-time pieces ---------------------------------------------------------------------------------------


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loop checks after every step (a second SIGINT interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MetricsLog:
    """Rows of ``metrics.csv`` (appended across resumes), TensorBoard when installed, a progress line on a TTY."""

    def __init__(self, out: Path, *, enabled: bool, tensorboard: bool, start_step: int = 0) -> None:
        self.enabled, self.path = enabled, out / METRICS_CSV
        self.writer = _tensorboard_writer(out / "tb") if enabled and tensorboard else None
        self.tty = enabled and sys.stderr.isatty()
        if enabled:
            self._keep_rows_up_to(start_step)

    def _keep_rows_up_to(self, step: int) -> None:
        """Start the file, or drop rows past ``step`` (written after the checkpoint a run resumes from)."""
        rows: list[list[str]] = []
        if self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = [row for row in list(csv.reader(handle))[1:] if row and row[1].isdigit() and int(row[1]) <= step]
        lines = [",".join(METRICS_FIELDS)] + [",".join(row) for row in rows]
        _write_text_atomic(self.path, "\n".join(lines) + "\n")

    def row(self, values: Mapping[str, float | int]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerow([_csv_value(values[k]) for k in METRICS_FIELDS])
        if self.writer is not None:
            for key in ("loss", "lr", "temperature", "pairs_per_s"):
                self.writer.add_scalar(f"train/{key}", values[key], int(values["step"]))

    def progress(self, text: str, *, final: bool = False) -> None:
        if self.tty:
            print(f"\r\033[K{text}", end="\n" if final else "", file=sys.stderr, flush=True)
        elif self.enabled and final:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _csv_value(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _tensorboard_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(folder))


# ---- the trainer -------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` did: ``status`` is ``"finished"``, ``"stopped"`` (max steps) or ``"interrupted"``."""

    status: str
    out: Path
    checkpoint: Path | None
    global_step: int
    epoch: int
    step_in_epoch: int
    losses: list[float]
    pairs_per_s: float


def build_model(config: Mapping[str, Any], *, pretrained: bool = True) -> nn.Module:
    """The encoder of ``config["model"]`` (``get_model(name, **other keys)``), initialised from the seed.

    Args:
        config: the training configuration.
        pretrained: load the backbone weights the model config names (False when a checkpoint replaces them).
    """
    from crossview.encoders import model_config, model_from_config

    model_section = dict(config["model"])
    name = model_section.pop("name")
    torch.manual_seed(int(config["seed"]))
    resolved = model_config(name, **model_section)
    init_from = config["train"].get("init_from")
    model = model_from_config(resolved, load_pretrained=pretrained and not init_from)
    if init_from and pretrained:
        _load_initial_weights(model, resolved, init_from, partial=bool(config["train"].get("init_partial")))
    return model


def _load_initial_weights(
    model: nn.Module, resolved: Mapping[str, Any], init_from: str, *, partial: bool = False
) -> None:
    """Start from a checkpoint's weights (``train.init_from``); its model config must equal the run's, unless
    ``partial`` (``train.init_partial``): then every tensor of the same name and shape is taken (e.g. an aerial
    model's ground branch and decoders for an OSM model) and the rest keeps its initialisation."""
    from crossview.checkpoints import CheckpointError, load_checkpoint

    checkpoint = load_checkpoint(init_from)
    if partial:
        own = model.state_dict()
        taken = {k: v for k, v in checkpoint.state_dict.items() if k in own and own[k].shape == v.shape}
        if not taken:
            raise ConfigError(f"train.init_from={init_from}: no tensor of its weights fits the model")
        model.load_state_dict(taken, strict=False)
        print(f"train.init_from={init_from}: {len(taken)} of {len(own)} tensors taken (init_partial)", file=sys.stderr)
        return
    if checkpoint.model_config != dict(resolved):
        differing = sorted(
            key
            for key in set(checkpoint.model_config) | set(resolved)
            if checkpoint.model_config.get(key) != resolved.get(key)
        )
        raise ConfigError(f"train.init_from={init_from}: its model config differs from the run's in {differing}")
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"train.init_from={init_from}: weights do not fit the model") from error


def build_train_dataset(root: str | os.PathLike[str], config: Mapping[str, Any], model_config: Mapping) -> Any:
    """The training VigorDataset; its image sizes come from the model's config, its tiles from ``data.map``.

    Raises:
        MapModalityError: ``data.map`` (or the legend of its OSM tiles) does not suit the model's map modality.
    """
    from crossview.data.vigor import VigorDataset
    from crossview.encoders import check_data_map, check_map_modality

    data = config["data"]
    data_map = data.get("map", "satellite")
    check_data_map(model_config, data_map)
    cities = split_cities(root, data["split"], train=True, cities=data["cities"])
    dataset = VigorDataset(
        root,
        split=data["split"],
        train=True,
        cities=cities,
        corrected=data["corrected"],
        pano_size=_pano_size(model_config),
        aerial_size=model_config.get("aerial_size"),
        augment=data["augment"],
        random_roll=data["random_roll"],
        flip=data["flip"],
        photometric=data["photometric"],
        seed=int(config["seed"]),
        map=data_map,
    )
    check_map_modality(model_config, dataset.map_tags(), map_name=f"{data_map}/ tiles of {root}")
    return dataset


def _pano_size(model_config: Mapping[str, Any]) -> tuple[int, int] | None:
    height, width = model_config.get("pano_height"), model_config.get("pano_width")
    return (int(height), int(width)) if height and width else None


class Trainer:
    """One training run (see :func:`train`); the pieces are attributes so tests and tools can inspect them."""

    def __init__(
        self,
        data_root: Path,
        config: dict[str, Any],
        out: Path,
        *,
        device: str = "auto",
        resume_from: Any = None,
    ) -> None:
        self.data_root, self.config, self.out = data_root, config, out
        self.dist = Dist.from_env()
        self.device = _select_device(device, self.dist)
        _init_distributed(self.dist, self.device)
        seed_everything(int(config["seed"]))
        self.model = build_model(config, pretrained=resume_from is None)
        self.dataset = build_train_dataset(data_root, config, self.model.config)
        self._setup_sampler()
        self._setup_modules()
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        if resume_from is not None:
            self._restore(resume_from)

    # -- construction --
    def _setup_sampler(self) -> None:
        records = self.dataset.records
        train = self.config["train"]
        self.batch_size = int(train["batch_size"])
        self.sampler = GeoBatchSampler(
            [r.lat for r in records],
            [r.lon for r in records],
            [r.city for r in records],
            [r.sat_names[0] for r in records],
            batch_size=self.batch_size * self.dist.world_size,
            mode=self.config["sampler"]["mode"],
            cell_m=self.config["sampler"]["cell_m"],
            seed=int(self.config["seed"]),
        )
        self.accumulate = int(self.config["optim"]["accumulate"])
        self.steps_per_epoch = len(self.sampler) // self.accumulate
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"an epoch has {len(self.sampler)} batches, fewer than optim.accumulate={self.accumulate}: "
                "lower train.batch_size or optim.accumulate"
            )
        self.total_steps = self.steps_per_epoch * int(train["epochs"])

    def _setup_modules(self) -> None:
        loss_cfg, train = self.config["loss"], self.config["train"]
        loss = ContrastiveLoss(
            loss_cfg["type"],
            temperature=loss_cfg["temperature"],
            learn_temperature=loss_cfg["learn_temperature"],
            max_logit_scale=loss_cfg["max_logit_scale"],
            triplet_alpha=loss_cfg["triplet_alpha"],
        )
        cuda = self.device.type == "cuda"
        self.channels_last = cuda and bool(train["channels_last"])
        self.step_module = TrainStep(
            self.model,
            loss,
            unknown_heading=self.config["data"]["random_roll"],
            orientation_weight=loss_cfg["orientation_weight"],
            refine_weight=loss_cfg["refine_weight"],
            refine_camera_height_m=loss_cfg["refine_camera_height_m"],
            dense_weight=loss_cfg["dense_weight"],
            dense_pinhole_weight=loss_cfg["dense_pinhole_weight"],
            heading_weight=loss_cfg["heading_weight"],
        )
        self.step_module.to(self.device)
        if self.channels_last:
            self.step_module.to(memory_format=torch.channels_last)
        freeze_except(self.model, train.get("trainable"))
        self.optimizer = build_optimizer(self.step_module, self.config["optim"])
        self.scheduler = build_scheduler(self.optimizer, self.config["optim"], self.total_steps)
        self.amp_dtype = _amp_dtype() if cuda and bool(train["amp"]) else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.wrapped: nn.Module = self.step_module
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if cuda else None
            # the refinement decoders take no part in the retrieval loss: their parameters get no gradient
            self.wrapped = DistributedDataParallel(self.step_module, device_ids=device_ids, find_unused_parameters=True)

    def _restore(self, checkpoint: Any) -> None:
        state = checkpoint.state
        saved = (state.get("world_size"), state.get("steps_per_epoch"))
        if saved != (self.dist.world_size, self.steps_per_epoch):
            raise ConfigError(
                f"--resume: the checkpoint was written by {saved[0]} process(es) with {saved[1]} steps per epoch, "
                f"this run has {self.dist.world_size} with {self.steps_per_epoch}: the batches would differ"
            )
        self.model.load_state_dict(checkpoint.state_dict, strict=True)
        self.step_module.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        if checkpoint.scaler:
            self.scaler.load_state_dict(checkpoint.scaler)
        if "rng" in state:
            set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])

    # -- one step --
    def _micro_batches(self, epoch: int, first_step: int) -> list[list[int]]:
        batches = self.sampler.batches(epoch)[first_step * self.accumulate : self.steps_per_epoch * self.accumulate]
        return [shard(batch, self.dist.rank, self.dist.world_size) for batch in batches]

    def _loader(self, micro_batches: list[list[int]]) -> Any:
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=micro_batches,
            num_workers=int(self.config["data"]["num_workers"]),
            pin_memory=self.device.type == "cuda",
        )

    def _mask(self, indices: Sequence[int]) -> torch.Tensor:
        records = [self.dataset.records[i] for i in indices]
        return false_negative_mask(
            [r.sat_names[0] for r in records],
            [r.sat_names for r in records],
            semi_positives=self.config["loss"]["mask_semi_positives"],
        )

    def _forward_backward(self, batch: Mapping[str, Any], sync: bool) -> float:
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        pano = batch["pano"].to(self.device, non_blocking=True).contiguous(memory_format=memory)
        aerial = batch["aerial"].to(self.device, non_blocking=True).contiguous(memory_format=memory)
        mask = self._mask([int(i) for i in batch["index"]]).to(self.device)
        no_sync = getattr(self.wrapped, "no_sync", None)
        context = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with context:
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                heading = batch.get("heading_deg")
                loss = self.wrapped(
                    pano,
                    aerial,
                    mask,
                    None if heading is None else torch.as_tensor(heading),
                    batch.get("pano_px_in_tile"),
                    None if batch.get("mpp") is None else torch.as_tensor(batch["mpp"]),
                )
            self.scaler.scale(loss / self.accumulate).backward()
        return float(loss.detach())

    def _optimizer_step(self) -> None:
        clip = self.config["optim"]["grad_clip"]
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.step_module.parameters(), float(clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    # -- checkpoints --
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "world_size": self.dist.world_size,
            "loss": self.step_module.loss.state_dict(),
            "rng": rng_state(),
            "data_root": str(self.data_root),
        }

    def save(self, name: str, metrics: Mapping[str, Any]) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_checkpoint(
            self.out / name,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            state=self.state(),
            config=self.config,
            metrics=metrics,
        )


def _amp_dtype() -> torch.dtype:
    """bfloat16 where the GPU supports it (no loss scaling needed), else float16 with a GradScaler."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _finish_epoch_checkpoint(trainer: Trainer, metrics: Mapping[str, Any]) -> Path | None:
    """``last.pt`` and its copy ``epoch-NNN.pt`` (pruned to ``train.keep_checkpoints``), written by rank 0."""
    last = trainer.save(LAST_CHECKPOINT, metrics)
    keep = int(trainer.config["train"]["keep_checkpoints"])
    if last is not None and keep > 0:
        _link_or_copy(last, trainer.out / f"epoch-{trainer.epoch:03d}.pt")
        for old in sorted(trainer.out.glob("epoch-[0-9][0-9][0-9].pt"))[:-keep]:
            old.unlink(missing_ok=True)
    return last


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically: a hard link when the file system allows (no extra space)."""
    temp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(src, temp)
    except OSError:
        shutil.copyfile(src, temp)
    os.replace(temp, dst)


@dataclass
class _Meter:
    """Losses of the steps run in this process, and the throughput since the last metrics row."""

    pairs_per_step: int
    losses: list[float] = field(default_factory=list)
    rate: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    window_start: float = field(default_factory=time.perf_counter)
    window_steps: int = 0

    def add(self, loss: float) -> None:
        self.losses.append(loss)
        self.window_steps += 1
        elapsed = time.perf_counter() - self.window_start
        self.rate = self.window_steps * self.pairs_per_step / max(elapsed, 1e-9)

    def restart_window(self) -> None:
        self.window_start, self.window_steps = time.perf_counter(), 0

    def summary(self) -> dict[str, float]:
        if not self.losses:
            return {}
        tail = self.losses[-min(len(self.losses), 20) :]
        return {"train_loss": float(np.mean(tail)), "last_loss": self.losses[-1], "pairs_per_s": self.rate}


def _run_epoch(trainer: Trainer, log: MetricsLog, meter: _Meter, stop: StopRequest, max_steps: int | None) -> str:
    """Train the rest of the current epoch; returns ``"finished"``, ``"stopped"`` or ``"interrupted"``."""
    epoch, epochs = trainer.epoch, int(trainer.config["train"]["epochs"])
    trainer.dataset.set_epoch(epoch)
    trainer.step_module.train()
    freeze_statistics(trainer.model)
    pending: list[float] = []
    for position, batch in enumerate(trainer._loader(trainer._micro_batches(epoch, trainer.step_in_epoch))):
        if not pending:  # the first micro-batch of a step: the step's RNG depends on (seed, step, rank) only
            torch.manual_seed(step_seed(int(trainer.config["seed"]), trainer.global_step, trainer.dist.rank))
        sync = (position + 1) % trainer.accumulate == 0
        pending.append(trainer._forward_backward(batch, sync))
        if not sync:
            continue
        lr = trainer.optimizer.param_groups[0]["lr"]
        trainer._optimizer_step()
        trainer.global_step += 1
        trainer.step_in_epoch += 1
        loss = trainer.dist.all_mean(sum(pending) / len(pending))
        pending = []
        meter.add(loss)
        log.progress(
            f"epoch {epoch + 1}/{epochs} step {trainer.step_in_epoch}/{trainer.steps_per_epoch} "
            f"loss {loss:.4f} lr {lr:.3g} {meter.rate:.1f} pairs/s"
        )
        if trainer.global_step % int(trainer.config["log"]["every_steps"]) == 0:
            log.row(_row(trainer, epoch, loss, lr, meter))
            meter.restart_window()
        if trainer.dist.any(stop.requested):
            return "interrupted"
        if max_steps is not None and trainer.global_step >= max_steps:
            return "stopped"
    return "finished"


def run_training(trainer: Trainer, *, max_steps: int | None = None) -> TrainResult:
    """Train from the trainer's current position until the last epoch, ``max_steps`` or a stop signal."""
    config = trainer.config
    meter = _Meter(trainer.batch_size * trainer.dist.world_size * trainer.accumulate)
    status, checkpoint = "finished", None
    if max_steps is not None and trainer.global_step >= max_steps:
        status = "stopped"
    log = MetricsLog(
        trainer.out,
        enabled=trainer.dist.is_main,
        tensorboard=config["log"]["tensorboard"],
        start_step=trainer.global_step,
    )
    try:
        with StopRequest() as stop:
            while status == "finished" and trainer.epoch < int(config["train"]["epochs"]):
                status = _run_epoch(trainer, log, meter, stop, max_steps)
                if status != "finished":
                    checkpoint = trainer.save(LAST_CHECKPOINT, meter.summary())
                    break
                trainer.epoch, trainer.step_in_epoch = trainer.epoch + 1, 0
                checkpoint = _finish_epoch_checkpoint(trainer, meter.summary())
                epoch_losses = meter.losses[-trainer.steps_per_epoch :]
                mean_loss = f"{np.mean(epoch_losses):.4f}" if epoch_losses else "-"
                log.progress(f"epoch {trainer.epoch}/{config['train']['epochs']} done: loss {mean_loss}", final=True)
    finally:
        log.close()
    return TrainResult(
        status,
        trainer.out,
        checkpoint,
        trainer.global_step,
        trainer.epoch,
        trainer.step_in_epoch,
        meter.losses,
        meter.rate,
    )


def _row(trainer: Trainer, epoch: int, loss: float, lr: float, meter: _Meter) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "step": trainer.global_step,
        "loss": loss,
        "lr": lr,
        "temperature": trainer.step_module.loss.temperature,
        "pairs_per_s": meter.rate,
        "elapsed_s": time.perf_counter() - meter.started,
    }


# ---- the run: configuration, resume and output folder ------------------------------------------------------


def prepare_run(
    data_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    split: str | None = None,
    resume: bool = False,
) -> tuple[dict[str, Any], Any]:
    """Resolve the configuration and, with ``resume``, load ``out/last.pt`` and check it matches.

    Without ``--config``, overrides or ``--split``, a resumed run takes the checkpoint's configuration.

    Returns:
        (config, checkpoint or None).

    Raises:
        ConfigError: ``out`` already holds a run (without ``resume``), nothing to resume, or a configuration
            that differs from the checkpoint's (naming the keys).
    """
    out = Path(out)
    split_override = [f"data.split={split}"] if split is not None else []
    config = resolve_config(config_file, [*split_override, *overrides])
    last = out / LAST_CHECKPOINT
    if not resume:
        if last.exists():
            raise ConfigError(f"--out {out} already holds a training run ({last}): add --resume or pick another --out")
        return config, None
    if not last.is_file():
        raise ConfigError(f"--resume: no checkpoint {last} to resume from")
    checkpoint = load_checkpoint(last)
    saved = merge_config(default_config(), checkpoint.config, source=str(last))  # keys added since: defaults
    if config_file is None and not overrides and split is None:
        return saved, checkpoint
    differences = config_differences(saved, config)
    if differences:
        shown = ", ".join(f"{k} ({_flat_get(saved, k)!r} -> {_flat_get(config, k)!r})" for k in differences[:8])
        raise ConfigError(f"--resume: the configuration differs from the checkpoint {last}: {shown}")
    return config, checkpoint


def _flat_get(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return "<missing>"
        value = value[part]
    return value


def train(
    data_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    split: str | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    device: str = "auto",
) -> TrainResult:
    """Train (or resume) a model; see the module docstring for what is written.

    Args:
        data_root: VIGOR-layout dataset folder.
        out: run folder.
        config_file: YAML configuration or None.
        overrides: ``"dotted.key=value"`` strings.
        split: ``"same"`` or ``"cross"`` (``data.split``); None keeps the configuration's.
        resume: continue the run in ``out`` from ``out/last.pt``.
        max_steps: stop once this many optimizer steps (counted from the run's start) are done.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: bad configuration, out folder or resume request.
        CheckpointError: an unreadable checkpoint to resume from.
    """
    data_root, out = Path(data_root), Path(out)
    if not data_root.is_dir():
        raise ConfigError(f"--data {data_root}: folder not found")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps {max_steps}: must be at least 1")
    config, checkpoint = prepare_run(
        data_root, out, config_file=config_file, overrides=overrides, split=split, resume=resume
    )
    trainer = Trainer(data_root, config, out, device=device, resume_from=checkpoint)
    if trainer.dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(out / CONFIG_YAML, dump_yaml(config))
    try:
        return run_training(trainer, max_steps=max_steps)
    finally:
        if trainer.dist.enabled and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


# ---- command line ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="VIGOR-layout dataset (real or 'crossview synth')")
    parser.add_argument("--split", choices=("same", "cross"), help="same-area or cross-area split (data.split)")
    parser.add_argument("--config", metavar="CONF.yaml", help="YAML file merged over the defaults (strict keys)")
    parser.add_argument("--out", metavar="runs/NAME", help="run folder (default: runs/<data folder>-<split>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop (with a checkpoint) after N optimizer steps")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if present")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=3e-4")


def run(args: argparse.Namespace) -> int:
    """``crossview train``: returns 0 when finished or stopped at --max-steps, 130 when interrupted."""
    if args.print_config:
        split = [f"data.split={args.split}"] if args.split else []
        print(dump_yaml(resolve_config(args.config, [*split, *args.overrides])), end="")
        return 0
    out = args.out or str(Path("runs") / f"{Path(args.data).resolve().name}-{args.split or 'same'}")
    result = train(
        args.data,
        out,
        config_file=args.config,
        overrides=args.overrides,
        split=args.split,
        resume=args.resume,
        max_steps=args.max_steps,
        device=args.device,
    )
    if Dist.from_env().is_main:
        where = f"; checkpoint {result.checkpoint}" if result.checkpoint else ""
        print(f"{result.status} at step {result.global_step} (epoch {result.epoch}){where}")
        if result.status == "interrupted":
            print(f"resume with: crossview train --data {args.data} --out {out} --resume", file=sys.stderr)
    return EXIT_INTERRUPTED if result.status == "interrupted" else 0


DESCRIPTION = """\
Train a cross-view encoder (panorama <-> aerial tile) with contrastive losses.

The configuration is the defaults (crossview/config.py, one comment per key), then --config YAML, then
KEY=VALUE overrides with dotted keys; the resolved configuration is saved as OUT/config.yaml and inside every
checkpoint. --resume continues bit for bit (same batches, schedule and RNG) and refuses a different config.

examples:
  crossview train --data world/ --out runs/synth train.epochs=5 train.batch_size=16
  crossview train --data VIGOR/ --split cross --config conf.yaml optim.lr=3e-4 loss.type=triplet
  crossview train --data world/ --out runs/synth --resume
  crossview train --data world/ --print-config model.descriptor_dim=512
  crossview train --data world/ --out runs/osm model.name=safa-resnet18-lite-osm data.map=osm   # OSM tiles
  torchrun --nproc_per_node 4 -m crossview train --data VIGOR/ --out runs/vigor   # DDP on 4 GPUs
"""

COMMAND = Command(
    name="train",
    description=DESCRIPTION,
    add_arguments=add_arguments,
    run=run,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crossview.train ...``: the same as ``crossview train ...``."""
    from crossview import cli

    return cli.main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
