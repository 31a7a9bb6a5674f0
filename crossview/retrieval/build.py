"""``build_index``: cut chips on a lattice over a map's valid area, encode them with a model's aerial branch, and
index their descriptors (see :mod:`crossview.retrieval.chips` for the chip geometry)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossview.errors import ConfigError
from crossview.maps.raster import GeoRaster, MapError
from crossview.retrieval.chip_index import ChipIndex
from crossview.retrieval.chips import (
    DEFAULT_STRIDE_M,
    MIN_VALID_FRACTION,
    ChipSampler,
    chip_geometry_for_model,
    map_fingerprint,
)

DEFAULT_BATCH_SIZE = 64
FEATURES_MAX_KM2 = 16.0
"""An index stores the map's dense-search features (4 MB per km^2 at the equator, 16 MB at 60 degrees of
latitude) when the map is at most this large; ``locate`` encodes the parts it needs of a larger map."""


@dataclass(frozen=True)
class ModelSource:
    """A model ready to encode chips, and how the index records it.

    Attributes:
        model: the network (eval mode).
        name: registry name or checkpoint path (or the config's name for an in-memory model).
        sha256: hex SHA-256 of the checkpoint file; for an in-memory model, of its config and weights.
        sha256_of: ``checkpoint-file`` or ``weights``.
    """

    model: nn.Module
    name: str
    sha256: str
    sha256_of: str

    def record(self) -> dict[str, Any]:
        config = getattr(self.model, "config", {})
        return {
            "name": self.name,
            "sha256": self.sha256,
            "sha256_of": self.sha256_of,
            "architecture": config.get("name"),
            "descriptor_dim": config.get("descriptor_dim"),
            "aerial_size": config.get("aerial_size"),
        }


def model_weights_sha256(model: nn.Module) -> str:
    """Hex SHA-256 of a model's config (JSON) and state dict (names, dtypes, shapes and bytes, sorted by name)."""
    digest = hashlib.sha256(json.dumps(getattr(model, "config", {}), sort_keys=True).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resolve_model_source(model: Any, device: torch.device | str = "cpu") -> ModelSource:
    """A :class:`ModelSource` from a registry name, a checkpoint path, a ``Checkpoint``, a model or a
    ``ModelSource`` (moved to ``device``).

    Raises:
        CheckpointError: see :func:`crossview.checkpoints.load_checkpoint`.
        ConfigError: an object that is none of these.
    """
    from crossview.checkpoints import Checkpoint, load_checkpoint

    if isinstance(model, ModelSource):
        return ModelSource(model.model.to(device).eval(), model.name, model.sha256, model.sha256_of)
    if isinstance(model, str | os.PathLike):
        model = load_checkpoint(model)
    if isinstance(model, Checkpoint):
        name = model.name or str(model.path)
        return ModelSource(model.build_model(device), name, model.sha256, "checkpoint-file")
    if isinstance(model, nn.Module) and hasattr(model, "encode_aerial"):
        name = str(getattr(model, "config", {}).get("name", type(model).__name__))
        return ModelSource(model.to(device).eval(), name, model_weights_sha256(model), "weights")
    raise ConfigError(f"model must be a registry name, a checkpoint path or a CrossViewModel, got {type(model)}")


def _read_map(map_raster_or_path: GeoRaster | str | os.PathLike[str]) -> tuple[GeoRaster, str | None]:
    if isinstance(map_raster_or_path, GeoRaster):
        return map_raster_or_path, None
    path = Path(map_raster_or_path)
    if not path.is_file():
        raise MapError(f"map file not found: {path}")
    return GeoRaster.read(path), str(path)


def _check_settings(stride_m: float, batch_size: int) -> None:
    if not (isinstance(stride_m, int | float) and np.isfinite(stride_m) and stride_m > 0):
        raise ConfigError(f"stride_m={stride_m!r} must be a finite number of metres > 0")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1")


def _progress_bar(total: int, enabled: bool | None) -> Any:
    from tqdm import tqdm

    show = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(total=total, unit="chip", desc="encoding chips", disable=not show, file=sys.stderr)


def encode_chips(
    sampler: ChipSampler,
    model: nn.Module,
    centers_xy: np.ndarray,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of the chips at ``centers_xy`` that are valid enough (``MIN_VALID_FRACTION``).

    Args:
        sampler: cuts the chips.
        model: a ``CrossViewModel`` (its aerial branch encodes the chips).
        centers_xy: (N, 2) chip centres in the index frame, metres.
        batch_size: chips per forward pass.
        device: where chips are cut and encoded.
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        (descriptors (M, D) float32, kept (M,) int64 indices into ``centers_xy``).
    """
    descriptors, kept = [], []
    with torch.inference_mode(), _progress_bar(len(centers_xy), progress) as bar:
        for start, chips, valid in sampler.iter_chips(centers_xy, batch_size=batch_size, device=device):
            enough = valid.flatten(1).float().mean(dim=1) >= MIN_VALID_FRACTION
            if enough.any():
                encoding = model.encode_aerial(chips[enough])
                descriptors.append(encoding.descriptor.float().cpu().numpy())
                kept.append(start + np.flatnonzero(enough.cpu().numpy()))
            bar.update(len(chips))
    if not descriptors:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(descriptors), np.concatenate(kept)


def build_index(
    map_raster_or_path: GeoRaster | str | os.PathLike[str],
    model: Any,
    *,
    stride_m: float = DEFAULT_STRIDE_M,
    index_type: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    chip_extent_m: float | None = None,
    progress: bool | None = None,
    dense_features: bool = True,
) -> ChipIndex:
    """Index the chips of a map with a model's aerial descriptors.

    Chips are cut on a square lattice of step ``stride_m`` over the map's valid area, in the UTM frame of the
    map's centre, true-north-up, ``aerial_size`` px over the model's ground footprint (see
    :mod:`crossview.retrieval.chips`); chips whose centre pixel is invalid, or with less than
    ``MIN_VALID_FRACTION`` valid pixels, are skipped.

    Args:
        map_raster_or_path: the map (a ``GeoRaster`` or a raster file; any CRS, RGB).
        model: a registry name, a checkpoint path, a ``Checkpoint``, a ``CrossViewModel`` or a
            :class:`ModelSource` (a model loaded once for several builds).
        stride_m: lattice step, metres (default ``DEFAULT_STRIDE_M``).
        index_type: ``auto`` (flat up to ``AUTO_FLAT_MAX_CHIPS`` chips, HNSW above), ``flat``, ``hnsw``, ``ivf``.
        batch_size: chips per forward pass.
        device: where chips are cut and encoded.
        chip_extent_m: ground side of a chip in metres, overriding the model's footprint.
        progress: show a progress bar (default: when stderr is a terminal).
        dense_features: also encode the map's finest refinement features (the dense search's map, see
            :mod:`crossview.retrieval.feature_raster`) when the map is at most :data:`FEATURES_MAX_KM2`.

    Returns:
        The :class:`ChipIndex` (not yet saved).

    Raises:
        MapError: unreadable map, no RGB bands, or no valid chip.
        CheckpointError: an unloadable model.
        ConfigError: bad settings.
    """
    _check_settings(stride_m, batch_size)
    started = time.perf_counter()
    raster, map_path = _read_map(map_raster_or_path)
    source = resolve_model_source(model, device)
    geometry = chip_geometry_for_model(source.model.config, raster, extent_m=chip_extent_m)
    sampler = ChipSampler(raster, geometry)
    centers = sampler.lattice(stride_m)
    descriptors, kept = encode_chips(
        sampler, source.model, centers, batch_size=batch_size, device=device, progress=progress
    )
    if len(kept) == 0:
        raise MapError(
            f"no chip to index in {map_path or 'the map'}: its valid area holds no {geometry.extent_m:.0f} m chip "
            f"centred on the {stride_m:g} m lattice with >= {MIN_VALID_FRACTION:.0%} valid pixels"
        )
    seconds = time.perf_counter() - started
    features = _map_features(source.model, sampler, device) if dense_features else None
    feature_s = time.perf_counter() - started - seconds
    center = raster.center_latlon()
    map_info = {
        "fingerprint": map_fingerprint(raster),
        "path": map_path,
        "crs": raster.crs.to_string(),
        "shape": list(raster.array.shape),
        "center_lat": center.lat,
        "center_lon": center.lon,
        "sampled_gsd_m": float(np.mean(sampler.raster.res)),
        "bounds_xy": list(sampler.bounds_xy()),
    }
    build = {
        "encode_seconds": round(seconds, 3),
        "chips_per_s": round(len(kept) / seconds, 2),
        "lattice_points": len(centers),
        "device": str(device),
        "batch_size": batch_size,
        "feature_raster_seconds": round(feature_s, 3),
    }
    index = ChipIndex.from_descriptors(
        descriptors,
        centers[kept],
        geometry=geometry,
        index_type=index_type,
        stride_m=float(stride_m),
        model=source.record(),
        map_info=map_info,
        build=build,
    )
    index.feature_raster = features
    return index


def _map_features(model: nn.Module, sampler: ChipSampler, device: torch.device | str) -> Any:
    """The whole map's finest refinement features (None for a model without them or a map over
    :data:`FEATURES_MAX_KM2`)."""
    from crossview.encoders.decoder import LEVEL_STRIDES
    from crossview.retrieval.feature_raster import encode_feature_raster

    west, south, east, north = sampler.bounds_xy()
    if not hasattr(model, "map_refinement_features") or (east - west) * (north - south) > FEATURES_MAX_KM2 * 1e6:
        return None
    centre, half = (0.5 * (west + east), 0.5 * (south + north)), 0.5 * max(east - west, north - south)
    frame = sampler.geometry.frame
    return encode_feature_raster(model, sampler, frame, centre, half, cell_px=LEVEL_STRIDES[-1], device=str(device))
