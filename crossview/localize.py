"""Localization of decoded ground images against map chips: retrieve candidate chips, refine each, keep the best.

For each image (its camera and prior from :mod:`crossview.inputs`):

1. Encode it (:meth:`CrossViewModel.encode_ground`): azimuth column features (and the descriptor).
2. Candidates (``search="dense"``, the default): the image's finest refinement features are laid on the ground
   plane as one bird's-eye-view template per heading (64) and correlated with the map's features over the whole
   prior disc (:mod:`crossview.retrieval.dense`; priors wider than :data:`DENSE_MAX_RADIUS_M`, or none, are
   searched in small discs around the retrieved chips of step 2b). The best pose is the candidate; its score is
   its margin over the best pose at least :data:`DENSE_PEAK_SEPARATION_M` away.
2b. Retrieval (``search="retrieval"``): every chip of the :class:`ChipTable` whose centre lies in the prior disc
   (the whole table without a prior) is scored by DSM-style orientation-aware matching of column features over
   all azimuths (restricted to +/- :data:`HEADING_PRIOR_TOLERANCE_DEG` around a heading prior); the ``top_k``
   chips, each with its best heading (and, without a heading prior, also the opposite heading: streets look
   alike both ways), are the candidates.
3. Refinement (:func:`crossview.refinement.refine_candidates`): for each retrieved candidate a chip is cut
   centred on it (true-north-up, the index's footprint) and the pose is refined by LM on the model's three feature
   levels, in the chip's local frame: x east, y TRUE north, ground metres, heading clockwise from true north. The
   candidate with the lowest final cost per ground point wins; if every refinement fails, the candidate itself is
   returned with its grid's spacing as uncertainty. A dense-search pose is not moved
   (:data:`DENSE_REFINE_ITERATIONS`): the refiner gives its covariance on the finest level, from the window of the
   map's feature raster around it (no chip is cut or encoded).
4. The pose goes back to the map frame (grid = true rotated by the meridian convergence, scaled by the UTM point
   scale factor) and to WGS84; its covariance becomes the 1-sigma ellipse and heading std of the record.

Score: dense search, the peak's margin (Spearman correlation with the position error -0.60 on a held-out
synthetic town: higher means a smaller error); retrieval, the orientation-aware similarity times
``exp(-mean cost per point / COST_SCALE)`` (no correlation with the error).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from crossview.encoders import check_map_modality
from crossview.encoders.decoder import LEVEL_STRIDES
from crossview.errors import CrossviewError
from crossview.export.records import CameraInfo, ImageResult, Prior, pose_uncertainty
from crossview.geometry.frames import LocalFrame
from crossview.locate import LocateError

HEADING_PRIOR_TOLERANCE_DEG = 45.0
COST_SCALE = 0.05
DEFAULT_CAMERA_HEIGHT_M = 2.0
PINHOLE_HEIGHT_PX = 128
"""Pinhole views are resized to this height (aspect kept) before encoding."""
CHIP_BATCH = 64
DENSE_MAX_RADIUS_M = 250.0
"""Priors up to this radius are searched densely over their whole disc; wider priors (or none) are searched
densely around the retrieved chips."""
DENSE_PEAKS = 3
"""Peaks kept per searched disc: the best is the candidate, the others its rivals for the margin (the score)."""
DENSE_PEAK_SEPARATION_M = 6.0
DENSE_HEADINGS = 64
DENSE_REFINE_ITERATIONS = 0
"""LM iterations on the finest level from a dense-search pose: none; the refiner only evaluates the pose's
covariance there. With features trained by the dense matching loss (synth-v3), LM moved the poses away: on the
held-out town, panoramas with 100 m priors ended at median 0.81 m and 2.0 deg with 10 finest-level iterations, 0.74 m
and 0.77 deg without, 0.57 m with the peak's sub-cell interpolation (synth-v2, trained for LM only: 2.4 m and 2.5
deg with them, 2.7 m and 1.8 deg without)."""
DENSE_MAX_REFINE_SHIFT_M = 5.0
"""LM may move a dense-search pose this far (about its convergence basin); farther, it has diverged and the
dense pose is kept."""
DENSE_SHARED_MAX_KM2 = 16.0
"""The map's features are shared by a run (each block encoded once, when an image first needs it) when the
images' prior discs fit in a square this large (its raster takes 4 MB per km^2 at the equator, 16 MB at 60
degrees of latitude); otherwise each disc is encoded for its image. An index's stored raster is always shared."""
DENSE_WHOLE_MAP_MAX_KM2 = 0.25
"""Images without a prior are searched densely over the whole map when it is this small (a correlation over
0.25 km^2 takes about a second on 2 cores); larger maps are searched around the retrieved chips."""
SEARCH_MODES = ("dense", "retrieval")
FINEST_STRIDE_PX = LEVEL_STRIDES[-1]
"""Map pixels per cell of the finest refinement level (what the dense search correlates)."""


# ---- per-image priors from a CSV ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvPrior:
    """One row of a ``--priors`` CSV."""

    prior: Prior
    camera_height_m: float | None


def read_priors_csv(path: str | os.PathLike[str], default_radius_m: float) -> dict[str, CsvPrior]:
    """``image,lat,lon[,radius_m][,heading_deg][,camera_height_m]`` rows keyed by image path and by file name.

    Image paths are matched as given on the command line, relative to the CSV's folder, or by file name.

    Raises:
        LocateError: missing file or columns, or a bad value (message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise LocateError(f"--priors {path}: file not found")
    table: dict[str, CsvPrior] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "lat", "lon"} - set(reader.fieldnames or [])
        if missing:
            raise LocateError(f"--priors {path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                entry = _csv_prior(row, default_radius_m)
            except (ValueError, CrossviewError) as error:
                raise LocateError(f"--priors {path}:{line}: {error}") from None
            image = row["image"]
            for key in (image, str(path.parent / image), Path(image).name):
                table.setdefault(key, entry)
    return table


def _csv_prior(row: dict[str, str], default_radius_m: float) -> CsvPrior:
    def number(key: str) -> float | None:
        text = (row.get(key) or "").strip()
        return float(text) if text else None

    radius = number("radius_m") or default_radius_m
    prior = Prior("cli", radius, number("lat"), number("lon"), number("heading_deg"))
    return CsvPrior(prior, number("camera_height_m"))


def lookup_prior(table: dict[str, CsvPrior], image: str) -> CsvPrior | None:
    return table.get(image) or table.get(str(Path(image))) or table.get(Path(image).name)


# ---- chips ---------------------------------------------------------------------------------------------------


@dataclass
class ChipTable:
    """The chips candidates are drawn from, in the index frame.

    Attributes:
        centers_xy: (N, 2) float64 chip centres, metres.
        encode_columns: (M, 2) centres -> (M, Dc, Wc) float32 aerial column features (orientation-aware
            matching); called once, on first use of :attr:`columns` (a dense search in small prior discs never
            needs them).
        frame: the index frame.
        sampler: cuts chips at any centre exactly as the table's were cut (None when the map is not loaded: an
            index's feature raster serves every image's dense search).
        map_name: the map's file name (recorded in the results).
        geometry: the chips' :class:`~crossview.retrieval.chips.ChipGeometry`.
        bounds_xy: west, south, east, north of the map in the frame, metres.
    """

    centers_xy: np.ndarray
    encode_columns: Callable[[np.ndarray], Tensor]
    frame: LocalFrame
    sampler: Any
    map_name: str
    geometry: Any
    bounds_xy: tuple[float, float, float, float]
    _columns: Tensor | None = None

    @property
    def columns(self) -> Tensor:
        """(N, Dc, Wc) column features of every chip."""
        if self._columns is None:
            self._columns = self.encode_columns(self.centers_xy)
        return self._columns

    def within(self, x_m: float, y_m: float, radius_m: float | None) -> np.ndarray:
        """Ids of chips whose centre is within ``radius_m`` grid metres of (x, y) (all when None)."""
        if radius_m is None or not math.isfinite(radius_m):
            return np.arange(len(self.centers_xy))
        d2 = (self.centers_xy[:, 0] - x_m) ** 2 + (self.centers_xy[:, 1] - y_m) ** 2
        return np.flatnonzero(d2 <= radius_m**2)


def encode_chip_columns(model: Any, sampler: Any, centers_xy: np.ndarray, device: str) -> Tensor:
    """(N, Dc, Wc) aerial column features of chips cut at ``centers_xy`` (batched, no gradients)."""
    out = []
    with torch.inference_mode():
        for _, chips, _ in sampler.iter_chips(centers_xy, batch_size=CHIP_BATCH, device=device):
            out.append(model.encode_aerial(chips).columns.float().cpu())
    if not out:
        return torch.zeros(0)
    return torch.cat(out)


def chip_table_from_map(
    raster: Any,
    model: Any,
    *,
    map_name: str,
    stride_m: float | None,
    priors: Sequence[Prior | None],
    device: str,
) -> ChipTable:
    """Chips of a map on the index lattice, only inside the images' prior discs when every image has one (the
    whole map otherwise), with their column features.

    Raises:
        LocateError: no valid chip in the map (or in the areas).
    """
    from crossview.retrieval.chips import DEFAULT_STRIDE_M, ChipSampler, chip_geometry_for_model

    geometry = chip_geometry_for_model(model.config, raster)
    sampler = ChipSampler(raster, geometry)
    stride = stride_m or DEFAULT_STRIDE_M
    centers = sampler.lattice(stride)
    centers = centers[in_prior_discs(centers, geometry.frame, priors, margin_m=stride)]
    if len(centers) == 0:
        raise LocateError(f"map {map_name}: no valid {geometry.extent_m:.0f} m chip where the images may be")
    encode = functools.partial(encode_chip_columns, model, sampler, device=device)
    return ChipTable(centers, encode, geometry.frame, sampler, map_name, geometry, sampler.bounds_xy())


# ---- decoding (worker processes) ---------------------------------------------------------------------------


@dataclass
class Decoded:
    """One input after decoding: the image tensor for the model, or why it failed."""

    image: str
    pixels: Tensor | None = None  # (3, H, W) float32 in [0, 1], model input size
    camera: CameraInfo | None = None
    prior: Prior = field(default_factory=Prior)
    error: str | None = None


@dataclass(frozen=True)
class DecodeSettings:
    pano_hw: tuple[int, int]
    camera: str
    hfov_deg: float | None
    camera_height_m: float | None
    prior_radius_m: float
    exif_prior: bool
    priors: dict[str, CsvPrior]


class ChunkDataset(torch.utils.data.Dataset):
    """Item ``i`` = the decoded images of chunk ``i`` (decoding runs in DataLoader workers)."""

    def __init__(self, chunks: Sequence[Sequence[str]], settings: DecodeSettings) -> None:
        self.chunks, self.settings = list(chunks), settings

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> list[Decoded]:
        return [decode_one(image, self.settings) for image in self.chunks[index]]


def _prior_for(image: str, metadata: Any, settings: DecodeSettings) -> Prior:
    """The image's row of the priors file, else what its EXIF gives (``--no-exif-prior``: nothing)."""
    from crossview.inputs import prior_from_metadata

    row = lookup_prior(settings.priors, image)
    if row is not None:
        return row.prior
    return prior_from_metadata(
        metadata, prior_radius_m=settings.prior_radius_m, use_gps=settings.exif_prior, use_heading=settings.exif_prior
    )


def decode_one(image: str, settings: DecodeSettings) -> Decoded:
    """Decode, pick the camera and prior, resize for the model; any failure is recorded, never raised."""
    from crossview.inputs import choose_camera, load_image

    try:
        rgb, metadata = load_image(image)
        row = lookup_prior(settings.priors, image)
        height = settings.camera_height_m or (row.camera_height_m if row else None) or DEFAULT_CAMERA_HEIGHT_M
        camera = choose_camera(metadata, camera=settings.camera, hfov_deg=settings.hfov_deg, height_m=height)
        prior = _prior_for(image, metadata, settings)
        pixels = _model_pixels(rgb, camera, settings.pano_hw)
    except (CrossviewError, OSError, ValueError) as error:
        return Decoded(image, error=" ".join(str(error).split()))
    return Decoded(image, pixels, camera, prior)


def _model_pixels(rgb: np.ndarray, camera: CameraInfo, pano_hw: tuple[int, int]) -> Tensor:
    tensor = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).float().div_(255.0)[None]
    if camera.model == "panorama":
        size = pano_hw
    else:
        height = PINHOLE_HEIGHT_PX
        size = (height, max(8, round(height * rgb.shape[1] / rgb.shape[0])))
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)[0]


# ---- the localizer -------------------------------------------------------------------------------------------

GroundLevels = tuple[list[Tensor], list[Tensor], Any]
"""One ground image's refinement levels: features [(1, C, H_l, W_l)], confidences [(1, 1, H_l, W_l)] (coarse to
fine) and its camera at the model input's size."""


@dataclass
class Candidates:
    """Top-k chips of one image: ids, centres (x, y), orientation-aware scores, true headings in degrees."""

    ids: np.ndarray
    centers_xy: np.ndarray
    scores: np.ndarray
    heading_deg: np.ndarray
    dense: bool = False  # poses of the dense search (ids are -1), not retrieved chip centres
    raster: Any = None  # the feature raster the dense search found the pose in


def within_heading_tolerance(headings_deg: Tensor, prior_deg: float) -> Tensor:
    """(N,) bool: headings within :data:`HEADING_PRIOR_TOLERANCE_DEG` of a heading prior (degrees, circular)."""
    diff = torch.remainder(headings_deg - float(prior_deg) + 180.0, 360.0) - 180.0
    return diff.abs() <= HEADING_PRIOR_TOLERANCE_DEG


@dataclass(frozen=True)
class DenseArea:
    """The square of the map whose features the dense search of a run shares: centre (grid metres), half side
    (ground metres), and whether it holds the whole map (then images without a prior search all of it)."""

    center_xy: tuple[float, float]
    half_extent_m: float
    whole_map: bool


class Localizer:
    """Runs the stages on decoded images (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        table: ChipTable,
        *,
        model_name: str,
        top_k: int,
        decode: DecodeSettings,
        batch_size: int = 16,
        workers: int = 0,
        device: str = "cpu",
        refiner_config: Any = None,
        search: str = "dense",
        dense_area: DenseArea | None = None,
        feature_raster: Any = None,
    ) -> None:
        from crossview.refinement import RefinerConfig

        if search not in SEARCH_MODES:
            raise LocateError(f"--search {search!r}: must be one of {', '.join(SEARCH_MODES)}")
        self.search, self.dense_area, self._shared_raster = search, dense_area, feature_raster
        self.model, self.table, self.model_name, self.top_k = model, table, model_name, int(top_k)
        self.decode, self.batch_size, self.workers, self.device = decode, int(batch_size), int(workers), device
        self.refiner_config = refiner_config or RefinerConfig()
        self.map_name = table.map_name
        self.total_columns = model.azimuth_columns
        geometry = table.geometry
        self.chip_gsd_m, self.chip_px = float(geometry.gsd_m), int(geometry.size_px)
        self.dense_cell_m = self.chip_gsd_m * FINEST_STRIDE_PX  # the dense search's cell side, ground metres
        self.stride_m = (
            float(np.median(np.diff(np.unique(table.centers_xy[:, 0])))) if len(table.centers_xy) > 1 else 10.0
        )

    # ---- stages ------------------------------------------------------------------------------------------
    def candidates(self, ground: Any, index: int, prior: Prior) -> Candidates | None:
        """The top-k chips for image ``index`` of a ground encoding (None when no chip is inside the prior)."""
        from crossview.encoders.orientation import orientation_scores, place_on_canvas, refine_peak

        x, y, radius = self._prior_xy(prior)
        ids = self.table.within(x, y, radius)
        if len(ids) == 0:
            return None
        canvas, mask = place_on_canvas(
            ground.columns[index : index + 1].float(), ground.column_fov[index : index + 1], self.total_columns
        )
        per_shift = orientation_scores(canvas, mask, self.table.columns[ids])[0]  # (M, Wc)
        if prior.heading_deg is not None:
            per_shift = per_shift + self._heading_penalty(prior.heading_deg)
        scores, best = per_shift.max(dim=-1)
        shift = refine_peak(per_shift, best)
        order = torch.argsort(scores, descending=True)[: self.top_k].numpy()
        heading = np.remainder(shift.numpy()[order] * 360.0 / self.total_columns, 360.0)
        chosen, chosen_scores = ids[order], scores.numpy()[order]
        if prior.heading_deg is None:
            # Street scenes look alike ahead and behind: also refine each chip facing the other way.
            opposite = (best[order] + self.total_columns // 2) % self.total_columns
            opposite_scores = per_shift[torch.from_numpy(order), opposite].numpy()
            chosen = np.concatenate([chosen, chosen])
            chosen_scores = np.concatenate([chosen_scores, opposite_scores])
            heading = np.concatenate([heading, np.remainder(heading + 180.0, 360.0)])
        return Candidates(chosen, self.table.centers_xy[chosen], chosen_scores, heading)

    def _heading_penalty(self, heading_deg: float) -> Tensor:
        shifts_deg = torch.arange(self.total_columns, dtype=torch.float32) * 360.0 / self.total_columns
        return torch.where(within_heading_tolerance(shifts_deg, heading_deg), 0.0, -10.0)

    def _prior_xy(self, prior: Prior) -> tuple[float, float, float | None]:
        if prior.lat is None or prior.radius_m is None:
            return 0.0, 0.0, None
        x, y = self.table.frame.to_xy(lat=prior.lat, lon=prior.lon)
        scale = float(self.table.frame.scale_factor(lat=prior.lat, lon=prior.lon))
        return float(x), float(y), float(prior.radius_m) * scale

    def ground_levels(self, pixels: Sequence[Tensor], camera: CameraInfo) -> list[GroundLevels]:
        """The three refinement levels of images of one camera and size, encoded in one batch: for each image,
        its features (1, C, H_l, W_l), confidences (1, 1, H_l, W_l) and the camera at the model input's size."""
        from crossview.geometry.cameras import PanoramaCamera, PinholeCamera

        images = torch.stack(list(pixels)).to(self.device)
        with torch.inference_mode():
            feats, confs = self.model.ground_refinement_features(images, camera=camera.model)
        height_px, width_px = images.shape[-2:]
        if camera.model == "panorama":
            cam = PanoramaCamera(width_px, height_px)
        else:
            cam = PinholeCamera.from_hfov(width_px, height_px, float(camera.hfov_deg))
        feats, confs = [f.float() for f in feats], [c.float() for c in confs]
        return [([f[i : i + 1] for f in feats], [c[i : i + 1] for c in confs], cam) for i in range(len(images))]

    def dense_areas(self, prior: Prior) -> list[tuple[float, float, float]] | None:
        """The discs (x, y, radius in grid metres) the dense search covers without retrieval: a small prior's
        disc, or the whole shared map for an image without a prior; None when retrieval chooses the places
        (``--search retrieval``, a wide prior, a large map)."""
        if not searched_densely(prior, self.search, self.dense_area):
            return None
        x, y, radius = self._prior_xy(prior)
        return [(x, y, math.inf if radius is None else radius)]

    def find_candidates(self, ground: Any, index: int, levels: GroundLevels, item: Decoded) -> Candidates | None:
        """Candidate poses of one image: the dense search over a small prior disc, or over the whole map without
        a prior when the map's feature raster holds it; otherwise retrieved chips (``--search retrieval``), or
        the dense search in small discs around them. None when no map is in reach."""
        areas = self.dense_areas(item.prior)
        if areas is not None:
            return self.dense_candidates(levels, item.camera, item.prior, areas)
        found = self.candidates(ground, index, item.prior)
        if found is None or self.search != "dense":
            return found
        _, first = np.unique(found.ids, return_index=True)
        areas = [(*found.centers_xy[i], self.stride_m) for i in sorted(first)]
        return self.dense_candidates(levels, item.camera, item.prior, areas) or found

    def dense_candidates(
        self, levels: GroundLevels, camera: CameraInfo, prior: Prior, areas: Sequence[tuple[float, float, float]]
    ) -> Candidates | None:
        """The best pose of an exhaustive search (:mod:`crossview.retrieval.dense`) over discs (x, y, radius in
        grid metres); its score is its margin over the best pose at least :data:`DENSE_PEAK_SEPARATION_M` away.
        None when no disc holds valid map."""
        from crossview.retrieval.dense import bev_templates

        feats, confs, cam = levels
        level_camera = cam.scaled(feats[-1].shape[-1] / cam.width)
        headings = torch.arange(DENSE_HEADINGS, dtype=torch.float32) * (2 * math.pi / DENSE_HEADINGS)
        templates = bev_templates(
            feats[-1],
            confs[-1],
            level_camera,
            float(camera.height_m),
            cell_m=self.dense_cell_m,
            headings_rad=headings,
        )
        heading_ok = self._heading_allowed(headings, prior)
        peaks = []
        for x, y, radius in areas:
            peaks.extend(self._area_peaks(templates, (float(x), float(y)), float(radius), heading_ok))
        if not peaks:
            return None
        peaks.sort(key=lambda peak: -peak[2])
        best_xy, best_heading, best_score, raster = peaks[0]
        rivals = [p[2] for p in peaks[1:] if np.hypot(*(p[0] - best_xy)) >= DENSE_PEAK_SEPARATION_M]
        margin = best_score - max(rivals) if rivals else best_score
        best = (np.array([-1]), best_xy[None], np.array([margin]), np.array([best_heading]))
        return Candidates(*best, dense=True, raster=raster)

    def _heading_allowed(self, headings_rad: Tensor, prior: Prior) -> Tensor:
        """(N, 1, 1) bool: the headings within the heading prior's tolerance (all without one)."""
        if prior.heading_deg is None:
            return torch.ones(len(headings_rad), 1, 1, dtype=torch.bool)
        return within_heading_tolerance(torch.rad2deg(headings_rad), prior.heading_deg)[:, None, None]

    def feature_raster(self, x_m: float, y_m: float, radius_m: float, reach_m: float) -> Any:
        """The map's finest features around a disc: the raster shared by the run when there is one (the index's,
        or one whose blocks are encoded as images need them), else one encoded for this disc."""
        from crossview.retrieval.feature_raster import encode_feature_raster

        common = {"cell_px": FINEST_STRIDE_PX, "device": self.device}
        if self._shared_raster is None and self.dense_area is not None:
            centre, half = self.dense_area.center_xy, self.dense_area.half_extent_m
            self._shared_raster = encode_feature_raster(
                self.model, self.table.sampler, self.table.frame, centre, half, **common, lazy=True
            )
        if self._shared_raster is not None:
            return self._shared_raster
        return encode_feature_raster(
            self.model, self.table.sampler, self.table.frame, (x_m, y_m), radius_m + reach_m, **common
        )

    def _area_peaks(
        self, templates: Any, center_xy: tuple[float, float], radius_m: float, heading_ok: Tensor
    ) -> list[tuple[np.ndarray, float, float, Any]]:
        """Peaks (grid centre, true heading in degrees, score, the feature raster) of the dense search in one disc
        (``radius_m`` infinite: the whole feature raster)."""
        from crossview.retrieval.dense import correlate, find_peaks

        reach_m = templates.radius_cells * templates.cell_m
        raster = self.feature_raster(*center_xy, 0.0 if math.isinf(radius_m) else radius_m, reach_m)
        if math.isinf(radius_m):
            east0, north0, half = 0.0, 0.0, raster.size // 2 + 1
        else:
            east0, north0 = raster.from_grid(*center_xy)
            half = math.ceil(radius_m / raster.cell_m) + 1
        features, _, valid, east_w, north_w = raster.window(east0, north0, half)
        steps = (torch.arange(2 * half + 1, dtype=torch.float64) - half) * raster.cell_m
        north, east = torch.meshgrid(north_w - steps, east_w + steps, indexing="ij")
        allowed = valid & ((east - east0) ** 2 + (north - north0) ** 2 <= radius_m**2)
        scores = correlate(features, templates)
        peaks = find_peaks(
            scores,
            heading_ok & allowed[None],
            DENSE_PEAKS,
            min_separation_cells=DENSE_PEAK_SEPARATION_M / raster.cell_m,
        )
        cell_m = raster.cell_m
        return [
            (
                raster.to_grid(
                    float(east[peak.row, peak.col]) + peak.d_col * cell_m,
                    float(north[peak.row, peak.col]) - peak.d_row * cell_m,
                ),
                math.degrees(peak.heading_rad),
                peak.score,
                raster,
            )
            for peak in peaks
        ]

    def refine(self, ground: GroundLevels, camera: CameraInfo, found: Candidates) -> dict:
        """LM refinement of every candidate of one image in the chips' true-north frames; the best one. A dense
        search's pose is evaluated on the finest level against the window of its feature raster around it
        (``pose_local`` is then its shift from the candidate)."""
        from crossview.geometry.pose import Pose2
        from crossview.refinement import refine_candidates

        g_feats, g_confs, cam = ground
        if found.dense:
            c_feats, c_confs, chips, init = self._raster_window_chip(found)
            g_feats, g_confs = g_feats[-1:], g_confs[-1:]
            config = dataclasses.replace(self.refiner_config, iterations=DENSE_REFINE_ITERATIONS)
        else:
            c_feats, c_confs, chips, init = self._candidate_chips(found)
            config = self.refiner_config
        result = refine_candidates(
            g_feats, g_confs, c_feats, c_confs, chips, cam, float(camera.height_m), Pose2(init.clone()), config
        )
        shift = result.pose.data.double().cpu() - init  # from the candidate (the chips' centres: init offsets 0)
        pose_local = torch.cat([shift[:, :2], result.pose.data[:, 2:].double().cpu()], dim=1)
        mean_cost = (result.cost / result.num_points.clamp(min=1)).double()
        mean_cost = torch.where(result.failed, torch.full_like(mean_cost, math.inf), mean_cost)
        best = int(torch.argmin(mean_cost))
        return {
            "best": best,
            "pose_local": pose_local[best].numpy(),
            "covariance": result.covariance[best].double().cpu().numpy(),
            "mean_cost": float(mean_cost[best]),
            "failed": bool(result.failed[best]) or not math.isfinite(float(mean_cost[best])),
        }

    def _candidate_chips(self, found: Candidates) -> tuple[list[Tensor], list[Tensor], Any, Tensor]:
        """Chips cut and encoded at the candidates (three levels), their geometry and the initial poses (K, 3)
        (east, north relative to each chip's centre, true heading in radians)."""
        from crossview.geometry.ground import MapChip

        k = len(found.ids)
        chips, _ = self.table.sampler.crop(found.centers_xy, device=self.device)
        with torch.inference_mode():
            c_feats, c_confs = self.model.map_refinement_features(chips)
        init = torch.zeros(k, 3, dtype=torch.float64)
        init[:, 2] = torch.from_numpy(np.deg2rad(found.heading_deg))
        geometry = MapChip.square(torch.zeros(k, 2), self.chip_gsd_m, self.chip_px)
        return [f.float() for f in c_feats], [c.float() for c in c_confs], geometry, init

    def _raster_window_chip(self, found: Candidates) -> tuple[list[Tensor], list[Tensor], Any, Tensor]:
        """The finest-level features (1, C, S, S) and confidences (1, 1, S, S; zero off the map) of the feature
        raster window around a dense-search pose (as wide as a chip), its geometry, and the pose (1, 3) relative
        to the window's centre cell."""
        from crossview.geometry.ground import MapChip

        raster = found.raster
        east, north = raster.from_grid(*found.centers_xy[0])
        half = self.chip_px // FINEST_STRIDE_PX // 2
        features, confidences, valid, east_w, north_w = raster.window(east, north, half)
        weights = (confidences * valid)[None, None].to(self.device)
        geometry = MapChip.square(torch.zeros(1, 2), raster.cell_m, 2 * half + 1)
        pose = [east - east_w, north - north_w, math.radians(float(found.heading_deg[0]))]
        return [features[None].to(self.device)], [weights], geometry, torch.tensor([pose], dtype=torch.float64)

    # ---- one image -----------------------------------------------------------------------------------------
    def result_for(self, item: Decoded, ground: Any, index: int, levels: GroundLevels) -> ImageResult:
        """The record of one decoded image, given its retrieval encoding (``ground`` at ``index``; None when the
        dense search needs none) and refinement levels (failed with the reason when no pose can be given)."""
        common = {"prior": item.prior, "camera": item.camera, "model": self.model_name, "map": self.map_name}
        found = self.find_candidates(ground, index, levels, item)
        if found is None:
            where = (
                f"{item.prior.radius_m:g} m of {item.prior.lat:.6f}, {item.prior.lon:.6f}"
                if item.prior.lat is not None
                else "the map"
            )
            return ImageResult.failed(item.image, f"no map chip within {where}", **common)
        refined = self.refine(levels, item.camera, found)
        dense = found.dense
        if dense and float(np.hypot(*refined["pose_local"][:2])) > DENSE_MAX_REFINE_SHIFT_M:
            refined["failed"] = True
        if refined["failed"]:
            offset, heading_true, center = np.zeros(2), float(found.heading_deg[0]), found.centers_xy[0]
            spacing_m = self.dense_cell_m if dense else self.stride_m
            bin_deg = 360.0 / (DENSE_HEADINGS if dense else self.total_columns)
            cov = np.diag([spacing_m**2 / 6.0] * 2 + [math.radians(bin_deg) ** 2 / 12.0])
            score = float(found.scores[0]) * 0.5
        else:
            best = refined["best"]
            offset, heading_true = refined["pose_local"][:2], math.degrees(refined["pose_local"][2])
            center, cov = found.centers_xy[best], refined["covariance"]
            score = float(found.scores[best])
            if not dense:
                score *= math.exp(-refined["mean_cost"] / COST_SCALE)
        lat, lon = self._to_latlon(center, offset)
        uncertainty = pose_uncertainty(cov).as_fields() if np.isfinite(cov).all() else {}
        return ImageResult(
            image=item.image,
            status="ok",
            lat=lat,
            lon=lon,
            heading_deg=heading_true % 360.0,
            score=score,
            **uncertainty,
            **common,
        )

    def _to_latlon(self, center_xy: np.ndarray, offset_true_m: np.ndarray) -> tuple[float, float]:
        """Chip centre (grid) + offset (east, true north, ground metres) -> WGS84."""
        frame = self.table.frame
        x, y = frame.ground_offset_to_grid(center_xy[0], center_xy[1], offset_true_m[0], offset_true_m[1])
        lat, lon = frame.to_latlon(x, y)
        return float(lat), float(lon)

    # ---- batches -------------------------------------------------------------------------------------------
    def localize(self, items: Sequence[Decoded]) -> list[ImageResult]:
        """Records of a chunk of decoded images, in order (images encoded in groups of equal camera and size)."""
        results: dict[int, ImageResult] = {}
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            if item.error is not None:
                results[i] = ImageResult.failed(
                    item.image, item.error, prior=item.prior, model=self.model_name, map=self.map_name
                )
            else:
                key = (item.camera.model, round(item.camera.hfov_deg or 0.0, 3), tuple(item.pixels.shape))
                groups.setdefault(key, []).append(i)
        for (camera_model, hfov, _), members in groups.items():
            ground = None  # the retrieval encoding, only when some image of the group needs retrieval
            if any(self.dense_areas(items[i].prior) is None for i in members):
                ground = self._encode_ground([items[i].pixels for i in members], camera_model, hfov)
            levels = self.ground_levels([items[i].pixels for i in members], items[members[0]].camera)
            for j, i in enumerate(members):
                try:
                    results[i] = self.result_for(items[i], ground, j, levels[j])
                except CrossviewError as error:
                    results[i] = ImageResult.failed(
                        items[i].image, str(error), prior=items[i].prior, model=self.model_name, map=self.map_name
                    )
        return [results[i] for i in range(len(items))]

    def _encode_ground(self, pixels: list[Tensor], camera_model: str, hfov_deg: float) -> Any:
        """The batched retrieval encoding (descriptors and azimuth columns, on the CPU) of a group of images."""
        images = torch.stack(pixels).to(self.device)
        with torch.inference_mode():
            ground = self.model.encode_ground(
                images, camera=camera_model, hfov_deg=None if camera_model == "panorama" else hfov_deg
            )
        ground.columns, ground.column_fov = ground.columns.float().cpu(), ground.column_fov.float().cpu()
        return ground

    def run(self, images: Sequence[str], *, skip: set[str]) -> Iterator[ImageResult]:
        """Yield the record of every image not in ``skip``, chunk by chunk (chunks are fixed slices of
        ``images``, so a resumed run processes the same batches); images are decoded in ``workers`` processes."""
        size = self.batch_size
        chunks = [images[i : i + size] for i in range(0, len(images), size)]
        pending = [[image for image in chunk if image not in skip] for chunk in chunks]
        pending = [chunk for chunk in pending if chunk]
        loader = torch.utils.data.DataLoader(
            ChunkDataset(pending, self.decode),
            batch_size=None,
            num_workers=self.workers,
            persistent_workers=False,
            multiprocessing_context="fork" if self.workers and os.name == "posix" else None,
        )
        for decoded in loader:
            yield from self.localize(decoded)


# ---- building a localizer from the command line's settings --------------------------------------------------


def image_priors(images: Sequence[str], decode: DecodeSettings) -> list[Prior | None]:
    """The prior of every image from its header (EXIF) or the priors table; None where no header can be read.

    Start-up reads every header once more than decoding will (a few kB each): the chips to prepare depend on
    where all the images may be.
    """
    from crossview.imagemeta import read_image_metadata

    priors: list[Prior | None] = []
    for image in images:
        try:
            metadata = None if lookup_prior(decode.priors, image) else read_image_metadata(image)
        except CrossviewError:
            priors.append(None)  # the image fails later, with its reason
            continue
        priors.append(_prior_for(image, metadata, decode))
    return priors


def in_prior_discs(
    centers_xy: np.ndarray, frame: LocalFrame, priors: Sequence[Prior | None], *, margin_m: float
) -> np.ndarray:
    """(N,) bool: the chip centres (in ``frame``) within ``margin_m`` of some image's prior disc; all True when an
    image has no position prior (its search covers the whole map). Images whose header could not be read (None)
    fail later and need no chips."""
    usable = [p for p in priors if p is not None]
    keep = np.zeros(len(centers_xy), dtype=bool)
    if not usable or any(p.lat is None for p in usable):
        return ~keep
    for prior in usable:
        x, y = frame.to_xy(lat=prior.lat, lon=prior.lon)
        reach_m = float(prior.radius_m) * 1.001 + margin_m  # 1.001: the UTM scale factor, at most
        keep |= (centers_xy[:, 0] - x) ** 2 + (centers_xy[:, 1] - y) ** 2 <= reach_m**2
    return keep


def build_localizer(settings: Any, images: Sequence[str]) -> Localizer:
    """Load the model and the map (``--index``, ``--map`` or ``--source``) for ``crossview locate``.

    Raises:
        CrossviewError: an unusable model, map, index, source or priors file (before any image is processed).
    """
    from crossview.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(settings.model)
    model = checkpoint.build_model(settings.device)
    model_name = checkpoint.name or Path(settings.model).name
    priors_table = read_priors_csv(settings.priors, settings.prior_radius_m) if settings.priors else {}
    decode = DecodeSettings(
        pano_hw=(int(model.config["pano_height"]), int(model.config["pano_width"])),
        camera=settings.camera,
        hfov_deg=settings.hfov_deg,
        camera_height_m=settings.camera_height_m,
        prior_radius_m=settings.prior_radius_m,
        exif_prior=settings.exif_prior,
        priors=priors_table,
    )
    priors = image_priors(images, decode)
    stored = None  # an index's feature raster
    if settings.index:
        table, stored = _table_from_index(settings, model, checkpoint, priors)
    else:
        raster, map_name = _map_raster(settings, priors)
        check_map_modality(model.config, raster, map_name=map_name)
        table = chip_table_from_map(
            raster, model, map_name=map_name, stride_m=settings.stride_m, priors=priors, device=settings.device
        )
    return Localizer(
        model,
        table,
        dense_area=dense_area(table.bounds_xy, table.frame, priors),
        feature_raster=stored,
        model_name=model_name,
        top_k=settings.top_k,
        decode=decode,
        batch_size=settings.batch_size,
        workers=settings.workers,
        device=settings.device,
        search=settings.search,
    )


def searched_densely(prior: Prior, search: str, area: DenseArea | None) -> bool:
    """Whether the dense search alone places an image with this prior (no chip retrieved): a prior disc up to
    :data:`DENSE_MAX_RADIUS_M`, or no position prior on a map the run searches whole."""
    if search != "dense":
        return False
    if prior.lat is not None and prior.radius_m is not None:
        return float(prior.radius_m) <= DENSE_MAX_RADIUS_M
    return area is not None and area.whole_map


def dense_area(
    bounds_xy: tuple[float, float, float, float], frame: LocalFrame, priors: Sequence[Prior | None]
) -> DenseArea | None:
    """The square whose map features a run shares: around the prior discs when every image has a small one,
    else the whole map when it is small enough (see :data:`DENSE_SHARED_MAX_KM2` and
    :data:`DENSE_WHOLE_MAP_MAX_KM2`); None otherwise."""
    from crossview.retrieval.dense import DEFAULT_MAX_RANGE_M

    west, south, east, north = bounds_xy
    usable = [p for p in priors if p is not None]
    small = bool(usable) and all(p.lat is not None and p.radius_m <= DENSE_MAX_RADIUS_M for p in usable)
    if small:
        reach_m = DEFAULT_MAX_RANGE_M + 5.0  # the templates reach beyond the disc, plus a few cells
        xy = np.array([frame.to_xy(lat=p.lat, lon=p.lon) for p in usable], dtype=np.float64).reshape(-1, 2)
        radius = np.array([p.radius_m * 1.001 + reach_m for p in usable])
        west, east = max(west, float((xy[:, 0] - radius).min())), min(east, float((xy[:, 0] + radius).max()))
        south, north = max(south, float((xy[:, 1] - radius).min())), min(north, float((xy[:, 1] + radius).max()))
    if east <= west or north <= south:
        return None
    half = 0.5 * max(east - west, north - south)
    limit_km2 = DENSE_SHARED_MAX_KM2 if small else DENSE_WHOLE_MAP_MAX_KM2
    if (2 * half) ** 2 > limit_km2 * 1e6:
        return None
    return DenseArea((0.5 * (west + east), 0.5 * (south + north)), half, whole_map=not small)


def _map_raster(settings: Any, priors: Sequence[Prior | None]) -> tuple[Any, str]:
    from crossview.maps.raster import GeoRaster

    if settings.map:
        return GeoRaster.read(settings.map), Path(settings.map).name
    return _fetch_source(settings, priors), str(settings.source)


def _fetch_source(settings: Any, priors: Sequence[Prior | None]) -> Any:
    """The map of ``--source`` around every image's prior (one fetch over their bounding box; tiles are cached,
    so images of the same area never fetch a tile twice)."""
    from crossview.fetch import FetchRequest, fetch_map
    from crossview.geometry.bbox import BBox

    if not priors or any(p is None or p.lat is None for p in priors):
        raise LocateError("--source needs a position prior for every image (EXIF GPS or --priors)")
    margin_m = 100.0  # room for the chips around the edge of each prior disc
    boxes = [BBox.from_center(lat=p.lat, lon=p.lon, radius_m=float(p.radius_m) + margin_m) for p in priors]
    union = BBox(
        min(b.west for b in boxes), min(b.south for b in boxes), max(b.east for b in boxes), max(b.north for b in boxes)
    )
    request = FetchRequest(
        source=settings.source, bbox=union, cache_dir=Path(settings.cache_dir), offline=settings.offline
    )
    return fetch_map(request)


def _table_from_index(
    settings: Any, model: Any, checkpoint: Any, priors: Sequence[Prior | None]
) -> tuple[ChipTable, Any]:
    """The chips of an index and its stored feature raster (None for an index without one). The map is read only
    when some image needs it: for retrieval or chip refinement, or when the index holds no feature raster."""
    from crossview.maps.raster import GeoRaster
    from crossview.retrieval import ChipIndex

    index = ChipIndex.load(settings.index, model_sha256=checkpoint.sha256)
    map_path = index.meta.get("map", {}).get("path")
    map_name = Path(map_path).name if map_path else "?"
    centers = index.centers_xy[in_prior_discs(index.centers_xy, index.frame, priors, margin_m=20.0)]
    stored, bounds = index.feature_raster, index.meta.get("map", {}).get("bounds_xy")
    if stored is not None and bounds is not None:
        area = dense_area(tuple(bounds), index.frame, priors)
        if all(p is None or searched_densely(p, settings.search, area) for p in priors):
            table = ChipTable(centers, _no_columns, index.frame, None, map_name, index.geometry, tuple(bounds))
            return table, stored
    if not map_path or not Path(map_path).is_file():
        raise LocateError(f"--index {settings.index}: its map {map_path} is not there (pass --map instead)")
    raster = GeoRaster.read(map_path)
    check_map_modality(model.config, raster, map_name=map_name)
    sampler = index.chip_sampler(raster)
    encode = functools.partial(encode_chip_columns, model, sampler, device=settings.device)  # not in the index
    bounds_xy = sampler.bounds_xy()
    return ChipTable(centers, encode, index.frame, sampler, map_name, index.geometry, bounds_xy), stored


def _no_columns(centers_xy: np.ndarray) -> Tensor:
    raise LocateError("internal: chip columns asked of a run that reads only the index's feature raster")
