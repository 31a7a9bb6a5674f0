"""``ChipIndex``: descriptors of a map's chips in a FAISS index, their centres, and what they were built from.

File format (``area.idx``, one file, written atomically): a ZIP archive (stored, not compressed; ZIP64 for large
indexes) of

- ``meta.json``: ``format`` = ``"crossview-chip-index"``, ``format_version``, ``crossview_version``, ``created``,
  ``count``, ``dim``, ``index`` (``type``, ``metric``, ``params``), ``chips`` (frame EPSG and WKT, ``size_px``,
  ``extent_m``, ``gsd_m``, ``extent_source``, ``orientation``, ``stride_m``, ``min_valid_fraction``), ``model``
  (``name``, ``sha256``, ``sha256_of``, ``architecture``, ``descriptor_dim``, ``aerial_size``), ``map``
  (``fingerprint``, ``path``, ``crs``, ``shape``, centre) and ``build`` (timing, device; informative);
- ``centers_xy.npy``: (N, 2) float64 chip centres (x, y) in the index frame, metres;
- ``latlon.npy``: (N, 2) float64 chip centres (lat, lon), WGS84 degrees;
- ``index.faiss``: the FAISS index (``faiss.write_index``), chip id i = row i of the arrays;
- optionally the map's finest refinement features for the dense search
  (:class:`~crossview.retrieval.feature_raster.FeatureRaster`, described by ``meta.json``'s ``features``):
  ``feature_raster.npy`` (C, R, R) float16, ``feature_confidences.npy`` (R, R) float16 and ``feature_valid.npy``
  (R, R) bool.

Nothing is unpickled: the arrays load with ``np.load(allow_pickle=False)``, the index with ``faiss.read_index``,
and the archive's CRC-32 checks catch corrupt bytes.

Convention:
    Chip ids are rows 0..N-1 of the arrays. Scores are inner products of unit descriptors (cosine similarity),
    higher is better. Chip centres are in the index frame (``frame``, UTM of the map's centre: x = east,
    y = north, metres); prior radii are ground metres.
"""

from __future__ import annotations

import datetime
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from crossview import __version__
from crossview.errors import CoordinateError, CrossviewError
from crossview.fsio import atomic_path
from crossview.geometry.frames import LocalFrame
from crossview.maps.raster import GeoRaster
from crossview.retrieval.ann import (
    PARALLEL_MIN_QUERIES,
    apply_search_params,
    build_faiss_index,
    faiss_threads,
    resolve_index_type,
    search_parameters,
)
from crossview.retrieval.chips import ChipGeometry, ChipSampler, map_fingerprint
from crossview.retrieval.feature_raster import FeatureRaster
from crossview.retrieval.spatial import BucketGrid

FORMAT = "crossview-chip-index"
FORMAT_VERSION = 1
MEMBERS = ("meta.json", "centers_xy.npy", "latlon.npy", "index.faiss")
FEATURE_MEMBERS = {
    "features": "feature_raster.npy",
    "confidences": "feature_confidences.npy",
    "valid": "feature_valid.npy",
}
"""The optional feature raster's arrays (:meth:`FeatureRaster.to_arrays` keys) and their members."""

EXACT_SUBSET_MAX = 16_384
"""A prior disc holding at most this many chips is scored exactly (its vectors against the query); a larger one
goes through the FAISS index with an ``IDSelector`` (exact for flat, approximate for HNSW/IVF)."""


UNIT_NORM_TOLERANCE = 1e-3
"""Largest deviation from 1 of an indexed descriptor's norm (scores are cosines only for unit vectors)."""


class ChipIndexError(CrossviewError, ValueError):
    """Bad input to a chip index (descriptors of the wrong shape, a bad prior, k < 1)."""


class IndexMismatchError(ChipIndexError):
    """An index used with another model or map than the one it was built from."""


class IndexFileError(CrossviewError, OSError):
    """An index file that cannot be read or written (missing, corrupt, not an index, newer format)."""


# ---- priors and results ------------------------------------------------------------------------------------


def _float_vector(value: npt.ArrayLike, name: str) -> np.ndarray:
    try:
        array = np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise ChipIndexError(f"prior {name}={value!r} must be numbers") from None
    if array.ndim != 1:
        raise ChipIndexError(f"prior {name} must be a number or a (Q,) array, got shape {array.shape}")
    return array


@dataclass(frozen=True)
class SearchPrior:
    """Where each query may be: a disc per query, given in the index frame or in WGS84.

    Build it with :meth:`at_xy` or :meth:`at_latlon`. Values broadcast to the number of queries Q; a radius of
    ``inf`` leaves that query unconstrained.

    Attributes:
        center: (Q, 2) disc centres, (x_m, y_m) in the index frame or (lat, lon) degrees.
        radius_m: (Q,) radii, ground metres (>= 0).
        latlon: whether ``center`` is (lat, lon).
    """

    center: np.ndarray
    radius_m: np.ndarray
    latlon: bool = False

    @classmethod
    def at_xy(cls, *, x_m: npt.ArrayLike, y_m: npt.ArrayLike, radius_m: npt.ArrayLike) -> SearchPrior:
        """Discs centred at (x_m, y_m) of the index frame (metres), radius ``radius_m`` ground metres."""
        x, y, radius = np.broadcast_arrays(*(_float_vector(v, n) for v, n in ((x_m, "x_m"), (y_m, "y_m"))), radius_m)
        return cls(np.stack([x, y], axis=-1).astype(np.float64), _radius(radius), latlon=False)

    @classmethod
    def at_latlon(cls, *, lat: npt.ArrayLike, lon: npt.ArrayLike, radius_m: npt.ArrayLike) -> SearchPrior:
        """Discs centred at WGS84 (lat, lon) degrees, radius ``radius_m`` ground metres."""
        lat_a, lon_a, radius = np.broadcast_arrays(_float_vector(lat, "lat"), _float_vector(lon, "lon"), radius_m)
        return cls(np.stack([lat_a, lon_a], axis=-1).astype(np.float64), _radius(radius), latlon=True)

    def discs(self, frame: LocalFrame, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, radius) of Q = ``count`` discs in ``frame``'s grid units.

        The ground radius is scaled by the frame's point scale factor at the centre (UTM: 0.9996-1.001), so
        that a grid-distance test matches ground distances to a few millimetres over a few hundred metres.
        """
        if len(self.radius_m) not in (1, count):
            raise ChipIndexError(f"the prior has {len(self.radius_m)} discs for {count} queries")
        center = np.broadcast_to(self.center, (count, 2))
        radius = np.broadcast_to(self.radius_m, (count,))
        try:
            if self.latlon:
                lat, lon = center[:, 0], center[:, 1]
                x, y = (np.asarray(v, dtype=np.float64) for v in frame.to_xy(lat=lat, lon=lon))
            else:
                x, y = center[:, 0].copy(), center[:, 1].copy()
                lat, lon = (np.asarray(v, dtype=np.float64) for v in frame.to_latlon(x, y))
            scale = np.asarray(frame.scale_factor(lat=lat, lon=lon), dtype=np.float64)
        except CoordinateError as error:
            raise ChipIndexError(f"prior centre: {error}") from None
        return x, y, radius * scale


def _radius(value: np.ndarray) -> np.ndarray:
    radius = np.asarray(value, dtype=np.float64)
    if np.isnan(radius).any() or (radius < 0).any():
        raise ChipIndexError(f"prior radius_m must be >= 0 metres (inf for none), got {radius[:5].tolist()}")
    return radius


@dataclass(frozen=True)
class SearchResult:
    """Top-k chips per query, best first; rows with fewer than k chips are padded (ids -1, floats NaN).

    Attributes:
        ids: (Q, k) int64 chip ids.
        scores: (Q, k) float32 cosine similarities.
        x_m, y_m: (Q, k) float64 chip centres in the index frame, metres.
        lat, lon: (Q, k) float64 chip centres, WGS84 degrees.
    """

    ids: np.ndarray
    scores: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    lat: np.ndarray
    lon: np.ndarray

    @property
    def centers_xy(self) -> np.ndarray:
        """(Q, k, 2) chip centres (x, y) in the index frame."""
        return np.stack([self.x_m, self.y_m], axis=-1)


# ---- the index ---------------------------------------------------------------------------------------------


class ChipIndex:
    """Descriptors of a map's chips, searchable by similarity and restricted to a prior disc.

    Build one with :func:`crossview.retrieval.build_index` (from a map and a model) or :meth:`from_descriptors`
    (from arrays); read one with :meth:`load`.

    Args:
        faiss_index: FAISS index holding N descriptors of dimension D, ids 0..N-1.
        centers_xy: (N, 2) chip centres (x, y) in the index frame, metres.
        latlon: (N, 2) chip centres (lat, lon), degrees.
        meta: the metadata (see the module docstring); ``index.type`` and ``index.params`` must match the index.
        path: the file it was loaded from (for messages).
        feature_raster: the map's finest refinement features over the whole map (saved with the index), or None.
    """

    def __init__(
        self,
        faiss_index: faiss.Index,
        centers_xy: np.ndarray,
        latlon: np.ndarray,
        meta: Mapping[str, Any],
        *,
        path: Path | None = None,
        feature_raster: FeatureRaster | None = None,
    ) -> None:
        self._faiss = faiss_index
        self.feature_raster = feature_raster
        self.centers_xy = np.ascontiguousarray(centers_xy, dtype=np.float64)
        self.latlon = np.ascontiguousarray(latlon, dtype=np.float64)
        self.meta = json.loads(json.dumps(meta))
        self.path = path
        count = int(faiss_index.ntotal)
        if self.centers_xy.shape != (count, 2) or self.latlon.shape != (count, 2):
            raise ChipIndexError(
                f"{self._name}: {count} descriptors but centres of shape {self.centers_xy.shape} "
                f"and lat/lon of shape {self.latlon.shape}"
            )
        self.geometry = ChipGeometry.from_json(self.meta["chips"])
        self._grid = BucketGrid(self.centers_xy, cell_m=self.meta["chips"].get("stride_m"))
        apply_search_params(self._faiss, self.index_type, self.params)

    @classmethod
    def from_descriptors(
        cls,
        descriptors: npt.ArrayLike,
        centers_xy: npt.ArrayLike,
        *,
        geometry: ChipGeometry,
        index_type: str = "auto",
        stride_m: float | None = None,
        model: Mapping[str, Any] | None = None,
        map_info: Mapping[str, Any] | None = None,
        build: Mapping[str, Any] | None = None,
    ) -> ChipIndex:
        """Index descriptors of chips at known centres.

        Args:
            descriptors: (N, D) unit-norm descriptors (float32 or castable).
            centers_xy: (N, 2) chip centres (x, y) in ``geometry.frame``, metres.
            geometry: the chips' frame, size and footprint.
            index_type: ``auto``, ``flat``, ``hnsw`` or ``ivf`` (see :mod:`crossview.retrieval.ann`).
            stride_m: lattice step of the centres, metres (recorded; also the cell of the radius search).
            model: ``name``, ``sha256``, ``sha256_of``, ... of the model that made the descriptors.
            map_info: ``fingerprint``, ``path``, ... of the map the chips come from.
            build: informative build figures to record.
        """
        vectors = _descriptors(descriptors)
        centers = np.asarray(centers_xy, dtype=np.float64)
        if centers.shape != (len(vectors), 2) or not np.isfinite(centers).all():
            raise ChipIndexError(f"centers_xy must be finite with shape ({len(vectors)}, 2), got {centers.shape}")
        if len(vectors) == 0:
            raise ChipIndexError("no chips to index")
        norms = np.linalg.norm(vectors, axis=1)
        if np.abs(norms - 1.0).max() > UNIT_NORM_TOLERANCE:
            worst = int(np.argmax(np.abs(norms - 1.0)))
            raise ChipIndexError(f"descriptors must have unit L2 norm; row {worst} has norm {norms[worst]:.4g}")
        kind = resolve_index_type(index_type, len(vectors))
        index, params = build_faiss_index(vectors, kind)
        lat, lon = geometry.frame.to_latlon(centers[:, 0], centers[:, 1])
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "crossview_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "count": len(vectors),
            "dim": int(vectors.shape[1]),
            "index": {"type": kind, "requested": index_type, "metric": "inner_product", "params": params},
            "chips": {**geometry.to_json(), "stride_m": stride_m},
            "model": dict(model or {}),
            "map": dict(map_info or {}),
            "build": dict(build or {}),
        }
        latlon = np.stack([np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)], axis=-1)
        return cls(index, centers, latlon.reshape(-1, 2), meta)

    # ---- properties -------------------------------------------------------------------------------------
    @property
    def _name(self) -> str:
        return str(self.path) if self.path is not None else "chip index"

    def __len__(self) -> int:
        return int(self._faiss.ntotal)

    def __repr__(self) -> str:
        return f"ChipIndex({len(self)} chips, {self.index_type}, dim {self.dim}, {self.frame!r})"

    @property
    def dim(self) -> int:
        """Descriptor length D."""
        return int(self._faiss.d)

    @property
    def index_type(self) -> str:
        """``flat``, ``hnsw`` or ``ivf``."""
        return str(self.meta["index"]["type"])

    @property
    def params(self) -> dict[str, Any]:
        """Search settings of the FAISS index (``ef_search`` for HNSW, ``nprobe`` for IVF)."""
        return self.meta["index"]["params"]

    @property
    def frame(self) -> LocalFrame:
        """The index frame of the chip centres."""
        return self.geometry.frame

    @property
    def model_sha256(self) -> str | None:
        """SHA-256 of the model the descriptors come from (checkpoint file, or weights for in-memory models)."""
        return self.meta["model"].get("sha256")

    @property
    def map_fingerprint(self) -> str | None:
        """Fingerprint of the map the chips come from (:func:`crossview.retrieval.chips.map_fingerprint`)."""
        return self.meta["map"].get("fingerprint")

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying FAISS index (ids = chip ids)."""
        return self._faiss

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change the recall/speed trade-off: HNSW's ``ef_search`` or IVF's ``nprobe`` (saved with the index)."""
        for name, value, kind in (("ef_search", ef_search, "hnsw"), ("nprobe", nprobe, "ivf")):
            if value is None:
                continue
            if self.index_type != kind:
                raise ChipIndexError(f"{name} applies to {kind} indexes; this one is {self.index_type}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ChipIndexError(f"{name}={value!r} must be an integer >= 1")
            self.params[name] = value
        apply_search_params(self._faiss, self.index_type, self.params)

    def vectors(self, ids: npt.ArrayLike) -> np.ndarray:
        """(M, D) float32 stored descriptors of chips ``ids``."""
        chosen = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if len(chosen) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if chosen.min() < 0 or chosen.max() >= len(self):
            raise ChipIndexError(f"chip ids must lie in [0, {len(self)}), got {chosen.min()}..{chosen.max()}")
        return self._faiss.reconstruct_batch(chosen)

    # ---- checks -----------------------------------------------------------------------------------------
    def verify(self, *, model_sha256: str | None = None, map_fingerprint: str | None = None) -> None:
        """Check that the index belongs to a model and a map (arguments left None are not checked).

        Raises:
            IndexMismatchError: another model (SHA-256) or another map (fingerprint) than the index's.
        """
        model = self.meta["model"]
        if model_sha256 is not None and model_sha256 != model.get("sha256"):
            built = model.get("name") or "?"
            raise IndexMismatchError(
                f"{self._name} was built with model {built} (sha256 {_short(model.get('sha256'))}), not with this "
                f"model (sha256 {_short(model_sha256)}): rebuild the index with 'crossview index'"
            )
        if map_fingerprint is not None and map_fingerprint != self.map_fingerprint:
            built = self.meta["map"].get("path") or "?"
            raise IndexMismatchError(
                f"{self._name} was built from another map ({built}, {_short(self.map_fingerprint)}) than this one "
                f"({_short(map_fingerprint)}): rebuild the index with 'crossview index'"
            )

    def chip_sampler(self, raster: GeoRaster, *, check_map: bool = True) -> ChipSampler:
        """A sampler cutting chips of ``raster`` exactly as this index did (frame, size, footprint), at any
        centre (e.g. around a candidate, for refinement).

        Raises:
            IndexMismatchError: ``raster`` is not the map the index was built from (unless ``check_map`` is
                False).
        """
        if check_map:
            self.verify(map_fingerprint=map_fingerprint(raster))
        return ChipSampler(raster, self.geometry)

    # ---- search -----------------------------------------------------------------------------------------
    def search(self, descriptors: npt.ArrayLike, k: int, *, prior: SearchPrior | None = None) -> SearchResult:
        """The k chips most similar to each query descriptor, optionally only those inside a prior disc.

        Without a prior (or for queries with an infinite radius), the FAISS index answers (exact for flat,
        approximate for HNSW/IVF). With a finite radius, the chips whose centre lies within it are found on a
        bucket grid; up to ``EXACT_SUBSET_MAX`` of them are scored exactly, more go through FAISS with an
        ``IDSelector``.

        Args:
            descriptors: (Q, D) float32 query descriptors (unit norm), or (D,) for one query.
            k: chips per query (>= 1).
            prior: discs restricting each query (:class:`SearchPrior`), or None.

        Returns:
            :class:`SearchResult` with (Q, k) arrays, best first, padded with -1 / NaN when fewer than k chips
            qualify.

        Raises:
            ChipIndexError: descriptors of the wrong shape or non-finite, k < 1, a bad prior.
        """
        queries = _descriptors(descriptors)
        if queries.shape[1] != self.dim:
            raise ChipIndexError(f"query descriptors have dimension {queries.shape[1]}, the index {self.dim}")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ChipIndexError(f"k={k!r} must be an integer >= 1")
        count = len(queries)
        ids = np.full((count, int(k)), -1, dtype=np.int64)
        scores = np.full((count, int(k)), np.nan, dtype=np.float32)
        if prior is None:
            free = np.arange(count)
        else:
            x, y, radius = prior.discs(self.frame, count)
            free = np.flatnonzero(np.isinf(radius))
            for q in np.flatnonzero(np.isfinite(radius)):
                candidates = self._grid.within(float(x[q]), float(y[q]), float(radius[q]))
                ids[q], scores[q] = self._search_subset(queries[q], candidates, int(k))
        if len(free):
            ids[free], scores[free] = self._search_faiss(queries[free], int(k))
        return self._result(ids, scores)

    def _search_faiss(
        self, queries: np.ndarray, k: int, candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        available = len(self) if candidates is None else len(candidates)
        k_asked = min(k, available)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), np.nan, dtype=np.float32)
        if k_asked == 0:
            return ids, scores
        selector = None if candidates is None else faiss.IDSelectorBatch(candidates)
        params = search_parameters(self.index_type, self.params, selector)
        with faiss_threads(1 if len(queries) < PARALLEL_MIN_QUERIES else None):
            found_scores, found_ids = self._faiss.search(queries, k_asked, params=params)
        found = found_ids >= 0
        ids[:, :k_asked] = np.where(found, found_ids, -1)
        scores[:, :k_asked] = np.where(found, found_scores, np.nan)
        return ids, scores

    def _search_subset(self, query: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(candidates) > EXACT_SUBSET_MAX:
            found_ids, found_scores = self._search_faiss(query[None], k, candidates)
            return found_ids[0], found_scores[0]
        ids = np.full(k, -1, dtype=np.int64)
        scores = np.full(k, np.nan, dtype=np.float32)
        if len(candidates) == 0:
            return ids, scores
        similarity = self.vectors(candidates) @ query
        kept = min(k, len(candidates))
        best = np.argpartition(-similarity, kept - 1)[:kept] if kept < len(candidates) else np.arange(kept)
        order = np.lexsort((candidates[best], -similarity[best]))  # by score, ties by chip id
        ids[:kept] = candidates[best[order]]
        scores[:kept] = similarity[best[order]]
        return ids, scores

    def _result(self, ids: np.ndarray, scores: np.ndarray) -> SearchResult:
        found = ids >= 0
        safe = np.where(found, ids, 0)

        def take(values: np.ndarray) -> np.ndarray:
            return np.where(found, values[safe], np.nan)

        return SearchResult(
            ids=ids,
            scores=scores,
            x_m=take(self.centers_xy[:, 0]),
            y_m=take(self.centers_xy[:, 1]),
            lat=take(self.latlon[:, 0]),
            lon=take(self.latlon[:, 1]),
        )

    # ---- files ------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to one file atomically (see the module docstring for the format).

        Raises:
            IndexFileError: the file cannot be written.
        """
        path = Path(path)
        self.meta.pop("features", None)
        arrays: dict[str, np.ndarray] = {}
        if self.feature_raster is not None:
            self.meta["features"], arrays = self.feature_raster.to_arrays()
        try:
            with (
                atomic_path(path) as temp,
                zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
            ):
                archive.writestr("meta.json", json.dumps(self.meta, indent=2, allow_nan=False))
                for name, array in (("centers_xy.npy", self.centers_xy), ("latlon.npy", self.latlon)):
                    with archive.open(name, "w", force_zip64=True) as handle:
                        np.save(handle, array, allow_pickle=False)
                with archive.open("index.faiss", "w", force_zip64=True) as handle:
                    faiss.write_index(self._faiss, faiss.PyCallbackIOWriter(handle.write))
                for name, array in arrays.items():
                    with archive.open(FEATURE_MEMBERS[name], "w", force_zip64=True) as handle:
                        np.save(handle, array, allow_pickle=False)
        except (OSError, RuntimeError, ValueError) as error:
            raise IndexFileError(f"cannot write index {path}: {_one_line(error)}") from None
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        model_sha256: str | None = None,
        map_fingerprint: str | None = None,
    ) -> ChipIndex:
        """Read an index file and check it against the model and map it will be used with.

        Args:
            path: the ``.idx`` file.
            model_sha256: SHA-256 of the model's checkpoint file (``Checkpoint.sha256``); None skips the check.
            map_fingerprint: :func:`~crossview.retrieval.chips.map_fingerprint` of the map; None skips it.

        Raises:
            IndexFileError: missing, unreadable or corrupt file, not a chip index, or a newer format.
            IndexMismatchError: built with another model or from another map.
        """
        path = Path(path)
        if not path.is_file():
            raise IndexFileError(f"index file not found: {path}")
        try:
            with zipfile.ZipFile(path) as archive:
                meta = _read_meta(archive, path)
                damaged = archive.testzip()  # CRC-32 of every member, before any parsing
                if damaged is not None:
                    raise IndexFileError(f"{path} is corrupt: member {damaged} fails its CRC-32 check")
                centers = _read_array(archive, "centers_xy.npy")
                latlon = _read_array(archive, "latlon.npy")
                index = _read_faiss(archive)
                raster = _read_feature_raster(archive, meta)
        except IndexFileError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, RuntimeError, EOFError) as error:
            reason = _one_line(error)
            raise IndexFileError(f"{path} is not a readable chip index (corrupt or truncated?): {reason}") from None
        except OSError as error:
            raise IndexFileError(f"cannot read index {path}: {_one_line(error)}") from None
        if int(meta.get("dim", -1)) != index.d or int(meta.get("count", -1)) != index.ntotal:
            raise IndexFileError(f"{path}: its metadata does not describe its FAISS index (corrupt?)")
        try:
            chip_index = cls(index, centers, latlon, meta, path=path, feature_raster=raster)
        except (ChipIndexError, KeyError, TypeError, CrossviewError) as error:
            raise IndexFileError(f"{path}: inconsistent chip index: {_one_line(error)}") from None
        chip_index.verify(model_sha256=model_sha256, map_fingerprint=map_fingerprint)
        return chip_index


# ---- helpers -----------------------------------------------------------------------------------------------


def _descriptors(value: npt.ArrayLike) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ChipIndexError("descriptors must be an array of numbers") from None
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ChipIndexError(f"descriptors must have shape (N, D), got {array.shape}")
    if not np.isfinite(array).all():
        raise ChipIndexError("descriptors hold NaN or infinite values")
    return np.ascontiguousarray(array)


def _short(digest: str | None) -> str:
    if not digest:
        return "unknown"
    algorithm, _, hexdigest = str(digest).rpartition(":")
    return f"{algorithm + ':' if algorithm else ''}{hexdigest[:12]}..."


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def _read_meta(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    names = set(archive.namelist())
    if "meta.json" not in names:
        raise IndexFileError(f"{path} is not a crossview chip index: no meta.json in the archive")
    try:
        meta = json.loads(archive.read("meta.json").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileError(f"{path}: unreadable meta.json (corrupt?): {_one_line(error)}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexFileError(f"{path} is not a crossview chip index (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise IndexFileError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise IndexFileError(
            f"{path} has index format {version}, written by crossview {meta.get('crossview_version')}; this "
            f"crossview {__version__} reads up to format {FORMAT_VERSION}: upgrade crossview or rebuild the index"
        )
    missing = [name for name in MEMBERS if name not in names]
    if missing:
        raise IndexFileError(f"{path}: incomplete chip index, missing {', '.join(missing)}")
    return meta


def _read_array(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as handle:
        array = np.load(handle, allow_pickle=False)
        _check_consumed(handle)
    return array


def _read_faiss(archive: zipfile.ZipFile) -> faiss.Index:
    with archive.open("index.faiss") as handle:
        index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
        _check_consumed(handle)
    return index


def _read_feature_raster(archive: zipfile.ZipFile, meta: dict[str, Any]) -> FeatureRaster | None:
    """The stored feature raster (None for an index without one); ValueError or KeyError when inconsistent."""
    if "features" not in meta:
        return None
    arrays = {key: _read_array(archive, name) for key, name in FEATURE_MEMBERS.items()}
    return FeatureRaster.from_arrays(meta["features"], arrays)


def _check_consumed(handle: Any) -> None:
    if handle.read(1):
        raise ValueError(f"{handle.name} has trailing bytes")
