"""Deterministic noise for the synthetic world: hashed value noise on pixel grids and small tileable textures.

``fbm_grid`` is value-noise fBm defined on the *global* zoom-20 pixel grid: the lattice value of every octave is a
hash of (global lattice index, octave, key), and octaves are summed coarse to fine by exact 2x bilinear
upsampling. The value at a pixel therefore depends only on its global position, not on the extent of the grid
it is computed on, so a fine grid and a coarser grid (``step`` > 1, which simply skips the octaves finer than
its pixels) show the same pattern: the ground seen far away (coarse raster) continues the ground seen nearby.

``tileable_texture`` makes small periodic fBm textures by spectral synthesis (random phases, power-law
amplitudes) for surfaces that are looked up at arbitrary continuous coordinates (facades, tree crowns, clouds).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_PRIME_X = np.uint64(0x9E3779B185EBCA87)
_PRIME_Y = np.uint64(0xC2B2AE3D27D4EB4F)
_PAD_NODES = 2  # lattice nodes kept beyond the needed range at every octave (absorbs the upsampling border)
_PERIOD_NODES = 1024  # fine octaves repeat a hashed tile of this many nodes (speed; see _lattice)
_PERIODIC_MAX_SPACING_PX = 4  # octaves this fine or finer use the periodic tile


def hash_uniform(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Pseudo-random values in [-1, 1) from integer lattice coordinates (a 64-bit mix; broadcasts).

    Args:
        ix, iy: integer arrays (any shapes that broadcast together).
        key: an integer selecting an independent field.

    Returns:
        float32 array of the broadcast shape.
    """
    with np.errstate(over="ignore"):
        h = np.asarray(ix).astype(np.uint64) * _PRIME_X
        h = h ^ (np.asarray(iy).astype(np.uint64) * _PRIME_Y)
        h = h ^ np.uint64(key & 0xFFFFFFFFFFFFFFFF)
        h = (h ^ (h >> np.uint64(33))) * _MIX1
        h = (h ^ (h >> np.uint64(33))) * _MIX2
        h = h ^ (h >> np.uint64(33))
    return ((h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-23)) - np.float32(1.0)


def _lattice(c_lo: int, c_hi: int, r_lo: int, r_hi: int, spacing: int, key: int) -> np.ndarray:
    """Hashed lattice values for node columns [c_lo, c_hi) and rows [r_lo, r_hi): (rows, cols) float32.

    Fine octaves (spacing <= 4 px, millions of nodes on a town-sized grid) repeat a hashed tile of
    ``_PERIOD_NODES`` nodes instead of hashing every node: still a function of the global node index only, with a
    period (>= 1024 px, about 100 m at zoom 20) far beyond the few pixels such an octave is visible at.
    """
    if spacing > _PERIODIC_MAX_SPACING_PX:
        return hash_uniform(np.arange(c_lo, c_hi)[None, :], np.arange(r_lo, r_hi)[:, None], key)
    tile = _periodic_tile(key)
    rows = np.arange(r_lo, r_hi) % _PERIOD_NODES
    cols = np.arange(c_lo, c_hi) % _PERIOD_NODES
    return tile[rows][:, cols]


@lru_cache(maxsize=16)
def _periodic_tile(key: int) -> np.ndarray:
    tile = hash_uniform(np.arange(_PERIOD_NODES)[None, :], np.arange(_PERIOD_NODES)[:, None], key)
    tile.flags.writeable = False
    return tile


def _node_range(lo_px: int, hi_px: int, spacing: int) -> tuple[int, int]:
    """Lattice node indices [first, last) of spacing ``spacing`` covering global pixels [lo_px, hi_px], padded."""
    return lo_px // spacing - _PAD_NODES, -(-hi_px // spacing) + _PAD_NODES


def _upsample2(array: np.ndarray) -> np.ndarray:
    """Exact 2x bilinear upsampling with cell-centred samples (``align_corners=False``)."""
    tensor = torch.from_numpy(array)[None, None]
    return F.interpolate(tensor, scale_factor=2, mode="bilinear", align_corners=False)[0, 0].numpy()


def fbm_grid(
    col0: int,
    row0: int,
    width: int,
    height: int,
    *,
    step: int = 1,
    key: int,
    max_spacing_px: int = 512,
    min_spacing_px: int = 1,
    persistence: float = 0.6,
) -> np.ndarray:
    """Value-noise fBm sampled at the centres of a grid of global zoom-20 pixels.

    Grid pixel (i, j) covers global pixels [col0 + j * step, col0 + (j + 1) * step) (same for rows); octave
    lattices have spacings max_spacing_px, max_spacing_px / 2, ... down to max(min_spacing_px, step) global
    pixels, with amplitude ``persistence ** k`` for the k-th octave.

    Args:
        col0, row0: global pixel of the grid's top-left corner (multiples of ``step``).
        width, height: grid size in grid pixels.
        step: global pixels per grid pixel (a power of two).
        key: selects an independent noise field.
        max_spacing_px, min_spacing_px: coarsest and finest octave spacings (powers of two), global pixels.
        persistence: amplitude ratio between successive octaves.

    Returns:
        (height, width) float32, roughly zero-mean with a standard deviation near 0.3.
    """
    if col0 % step or row0 % step:
        raise ValueError(f"grid origin ({col0}, {row0}) must be a multiple of its step {step}")
    finest = max(min_spacing_px, step)
    if max_spacing_px < finest:
        return np.zeros((height, width), dtype=np.float32)
    col1, row1 = col0 + width * step, row0 + height * step
    spacing = max_spacing_px
    c_lo, c_hi = _node_range(col0, col1, spacing)
    r_lo, r_hi = _node_range(row0, row1, spacing)
    level_key = key * 1_000_003
    field = _lattice(c_lo, c_hi, r_lo, r_hi, spacing, level_key + spacing)
    amplitude, total = 1.0, 1.0
    while spacing > step:
        up = _upsample2(field)
        spacing //= 2
        c_lo2, c_hi2 = _node_range(col0, col1, spacing)
        r_lo2, r_hi2 = _node_range(row0, row1, spacing)
        field = up[r_lo2 - 2 * r_lo : r_hi2 - 2 * r_lo, c_lo2 - 2 * c_lo : c_hi2 - 2 * c_lo]
        c_lo, c_hi, r_lo, r_hi = c_lo2, c_hi2, r_lo2, r_hi2
        if spacing >= finest:
            amplitude *= persistence
            total += amplitude**2
            field += np.float32(amplitude) * _lattice(c_lo, c_hi, r_lo, r_hi, spacing, level_key + spacing)
    top, left = row0 // step - r_lo, col0 // step - c_lo
    out = field[top : top + height, left : left + width]
    return np.ascontiguousarray(out * np.float32(0.5 / math.sqrt(total)))


def tileable_texture(rng: np.random.Generator, size: int = 256, *, beta: float = 2.0) -> np.ndarray:
    """A periodic (size x size) fBm texture by spectral synthesis, zero mean and unit standard deviation.

    Args:
        rng: the random generator (consumed deterministically).
        size: side in texels (the texture repeats every ``size`` texels in both axes).
        beta: spectral exponent (power ~ 1 / f**beta); 2 looks like clouds, larger is smoother.

    Returns:
        (size, size) float32.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    amplitude = radius ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    spectrum = amplitude * (rng.standard_normal(radius.shape) + 1j * rng.standard_normal(radius.shape))
    texture = np.fft.irfft2(spectrum, s=(size, size))
    texture = (texture - texture.mean()) / max(float(texture.std()), 1e-12)
    return texture.astype(np.float32)


def sample_texture(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup in a periodic texture at continuous texel coordinates (u = column, v = row), wrapping.

    Args:
        texture: (N, M) float32 periodic texture.
        u, v: arrays of the same shape, texel units (any real values).

    Returns:
        float32 array of the shape of ``u``.
    """
    rows, cols = texture.shape
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = (u - u0).astype(np.float32)
    fv = (v - v0).astype(np.float32)
    c0 = u0.astype(np.int64) % cols
    r0 = v0.astype(np.int64) % rows
    c1 = (c0 + 1) % cols
    r1 = (r0 + 1) % rows
    top = texture[r0, c0] * (1 - fu) + texture[r0, c1] * fu
    bottom = texture[r1, c0] * (1 - fu) + texture[r1, c1] * fu
    return top * (1 - fv) + bottom * fv
