"""The cross-view model: aerial and ground branches, retrieval descriptors, orientation-aware scores and
multi-scale refinement features.

Variants (config ``variant``):

* ``"safa"``: aerial chip -> polar transform (DESIGN's convention) -> CNN -> SAFA aggregation -> descriptor;
  ground panorama -> CNN (widths wrap across the 360° seam) -> SAFA -> descriptor. A pinhole image is first
  resampled onto its window of a heading-0 equirectangular canvas (``pano_height`` x ``pano_width``), so that its
  columns have the panorama's azimuth spacing; canvas rows beyond the image's top and bottom edges repeat the
  edge rows (an artificial black border would dominate the CNN's features), and the SAFA head sees the window's
  features on an otherwise zero full-width canvas, so pinhole descriptors live in the panorama's space.
* ``"bev"`` (panorama-free): a ground image of either camera -> flat-ground bird's-eye view, heading-up, with the
  chip's footprint (``aerial_extent_m``) -> the same polar transform as the chips -> CNN -> SAFA -> descriptor.

Both branches also give azimuth column features for DSM-style orientation matching
(:mod:`crossview.encoders.orientation`) and, through small FPN decoders, three levels of features and confidences
in image space for the LM refiner. The aerial branch is ``map_input -> backbone``; ``map_input`` is chosen by the
config's ``map_modality`` (:mod:`crossview.encoders.modalities`).

Convention:
    The retrieval descriptor of a ground image assumes heading 0 (the image's centre column looks north), like
    VIGOR's north-aligned panoramas; with an unknown heading use ``similarity(..., unknown_heading=True)``, which
    searches all azimuths and returns the heading of the image's centre column (degrees clockwise from north, in
    [0, 360), resolution ``360 / Wc`` with ``Wc = polar_width / 16`` columns).

    Feature column ``j`` summarises input columns ``16 j .. 16 j + 15``; ResNet and EfficientNet centre it on
    input column ``16 j`` (odd kernels, symmetric padding), VGG and ConvNeXt on ``16 j + 7.5`` (even pooling and
    patchify kernels). Both branches share the layout, so headings are unaffected; only the absolute azimuth of
    an aerial column can be up to half a column past ``180 + 360 j / Wc``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossview.encoders.aggregation import ColumnHead, SpatialAwareAggregation
from crossview.encoders.backbones import STRIDE, build_backbone
from crossview.encoders.circular import circular_width
from crossview.encoders.decoder import RefinementDecoder
from crossview.encoders.modalities import ImageInput, ModelInputError, build_map_input
from crossview.encoders.orientation import (
    canvas_mask,
    orientation_scores,
    place_on_canvas,
    refine_peak,
    shift_to_heading_deg,
    window_start,
    window_width,
)
from crossview.errors import CameraError
from crossview.geometry.cameras import PanoramaCamera, PinholeCamera, pixel_centers, to_grid_sample_coords
from crossview.geometry.ground import to_bev
from crossview.geometry.polar import polar_transform

__all__ = ["AerialEncoding", "CrossViewModel", "GroundEncoding"]

CAMERAS = ("panorama", "pinhole")


@dataclass
class AerialEncoding:
    """Encoded aerial chips.

    Attributes:
        descriptor: (B, D) retrieval descriptors, unit L2 norm.
        columns: (B, Dc, Wc) azimuth features of the polar view; column ``j`` looks at azimuth
            ``180 + 360 j / Wc`` degrees (DESIGN's polar convention).
    """

    descriptor: Tensor
    columns: Tensor


@dataclass
class GroundEncoding:
    """Encoded ground images.

    Attributes:
        descriptor: (B, D) retrieval descriptors, unit L2 norm (they assume heading 0).
        columns: (B, Dc, Wg) azimuth features: the centred window of ``Wg`` canvas columns (``Wg = Wc`` for
            panoramas), zero outside each image's field of view (see :mod:`crossview.encoders.orientation`).
        column_fov: (B,) fraction of 360° the images span (1 for panoramas).
        heading_known: False makes :meth:`CrossViewModel.similarity` always search the heading.
    """

    descriptor: Tensor
    columns: Tensor
    column_fov: Tensor
    heading_known: bool = True


class CrossViewModel(nn.Module):
    """Cross-view localisation model; build it with :func:`crossview.encoders.get_model` or
    :func:`crossview.encoders.model_from_config`.

    Args:
        config: a complete, validated model config (see :mod:`crossview.encoders.registry`).
        load_pretrained: load the backbone weights named by ``config["weights"]``; False builds the architecture
            only (randomly initialised), e.g. to receive a checkpoint's state dict.
    """

    def __init__(self, config: dict, *, load_pretrained: bool = True) -> None:
        super().__init__()
        self.config = dict(config)
        weights = config["weights"] if load_pretrained else "none"
        self.map_input = build_map_input(config)
        self.ground_input = ImageInput()
        self.aerial_backbone = build_backbone(config["backbone"], weights, in_channels=self.map_input.out_channels)
        if self.map_input.out_channels == 3:
            # Same start for both branches (ImageNet or one random draw), built once; they train apart.
            self.ground_backbone = copy.deepcopy(self.aerial_backbone)
        else:
            self.ground_backbone = build_backbone(config["backbone"], weights)
        top_channels = self.aerial_backbone.channels[-1]
        projected = config["descriptor_dim"] // config["safa_maps"]
        polar_hw = (config["polar_height"] // STRIDE, config["polar_width"] // STRIDE)
        ground_hw = polar_hw if config["variant"] == "bev" else (config["pano_height"] // STRIDE, polar_hw[1])
        self.aerial_project = nn.Conv2d(top_channels, projected, kernel_size=1)
        self.ground_project = nn.Conv2d(top_channels, projected, kernel_size=1)
        self.aerial_safa = SpatialAwareAggregation(projected, *polar_hw, num_maps=config["safa_maps"])
        self.ground_safa = SpatialAwareAggregation(projected, *ground_hw, num_maps=config["safa_maps"])
        self.aerial_columns = ColumnHead(top_channels, config["column_channels"], config["column_rows"])
        self.ground_columns = ColumnHead(top_channels, config["column_channels"], config["column_rows"])
        refine = tuple(config["refine_channels"])
        self.aerial_decoder = RefinementDecoder(self.aerial_backbone.channels, refine, config["refine_hidden"])
        self.ground_decoder = RefinementDecoder(self.ground_backbone.channels, refine, config["refine_hidden"])

    @property
    def azimuth_columns(self) -> int:
        """``Wc``: azimuth columns of the aerial (and full-panorama) column features."""
        return self.config["polar_width"] // STRIDE

    # ---- aerial branch --------------------------------------------------------------------------------------
    def encode_aerial(self, chips: Tensor) -> AerialEncoding:
        """Encode north-up aerial chips centred on the candidate camera position.

        Args:
            chips: (B, 3, S, S) float in [0, 1] (or the input of the config's map modality; ``osm``: (B, G, S, S)
                class indices, embedded before the polar transform, see :mod:`crossview.encoders.osm_input`).

        Returns:
            :class:`AerialEncoding` with descriptor (B, D) and columns (B, Dc, Wc).

        Raises:
            ModelInputError: chips that are not what the map modality takes (for aerial: float (B, 3, S, S)).
        """
        x = self.map_input(chips)
        polar = polar_transform(x, self.config["polar_height"], self.config["polar_width"])
        with circular_width(True):  # the polar image is periodic in azimuth
            top = self.aerial_backbone(polar)[-1]
        descriptor = self.aerial_safa(self.aerial_project(top))
        return AerialEncoding(descriptor=descriptor, columns=self.aerial_columns(top))

    # ---- ground branch --------------------------------------------------------------------------------------
    def encode_ground(
        self,
        images: Tensor,
        *,
        camera: str = "panorama",
        hfov_deg: Tensor | float | None = None,
        heading_known: bool = True,
        camera_height_m: Tensor | float | None = None,
    ) -> GroundEncoding:
        """Encode ground images.

        Args:
            images: (B, 3, H, W) float in [0, 1]. Panoramas: equirectangular (resized to ``pano_height`` x
                ``pano_width`` for the ``safa`` variant); pinhole: level views with a centred principal point.
            camera: ``"panorama"`` or ``"pinhole"``.
            hfov_deg: pinhole horizontal field of view, degrees in (0, 180): a number or (B,).
            heading_known: recorded in the encoding; False makes :meth:`similarity` search the heading.
            camera_height_m: camera height above the ground for the ``bev`` variant (default: the config's).

        Returns:
            :class:`GroundEncoding`: descriptor (B, D), columns (B, Dc, Wg), column_fov (B,).

        Raises:
            CameraError: unknown camera, missing or invalid ``hfov_deg``.
            ModelInputError: images that are not a float (B, 3, H, W) tensor.
        """
        _check_images(images)
        fov = self._fov_fraction(images, camera, hfov_deg)
        if self.config["variant"] == "bev":
            height_m = self.config["camera_height_m"] if camera_height_m is None else camera_height_m
            descriptor, columns = self._encode_bev(images, camera, hfov_deg, height_m, fov)
        elif camera == "panorama":
            descriptor, columns = self._encode_panorama(images)
        else:
            descriptor, columns = self._encode_pinhole(images, hfov_deg, fov)
        return GroundEncoding(descriptor=descriptor, columns=columns, column_fov=fov, heading_known=heading_known)

    def _fov_fraction(self, images: Tensor, camera: str, hfov_deg: Tensor | float | None) -> Tensor:
        batch = images.shape[0]
        if camera not in CAMERAS:
            raise CameraError(f"camera must be one of {', '.join(CAMERAS)}, got {camera!r}")
        if camera == "panorama":
            return torch.ones(batch, device=images.device, dtype=images.dtype)
        if hfov_deg is None:
            raise CameraError("pinhole images need hfov_deg (horizontal field of view in degrees)")
        hfov = torch.as_tensor(hfov_deg, dtype=images.dtype, device=images.device).reshape(-1)
        if hfov.numel() not in (1, batch) or not bool(((hfov > 0) & (hfov < 180)).all()):
            raise CameraError(f"hfov_deg must be in (0, 180) degrees, one or {batch} values, got {hfov.tolist()}")
        return (hfov / 360.0).expand(batch).clone()

    def _encode_panorama(self, images: Tensor) -> tuple[Tensor, Tensor]:
        size = (self.config["pano_height"], self.config["pano_width"])
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        with circular_width(True):
            top = self.ground_backbone(self.ground_input(images))[-1]
        return self.ground_safa(self.ground_project(top)), self.ground_columns(top)

    def _encode_pinhole(self, images: Tensor, hfov_deg: Tensor | float, fov: Tensor) -> tuple[Tensor, Tensor]:
        total = self.azimuth_columns
        width = window_width(float(fov.max()), total)
        start = window_start(width, total)
        strip, _ = pinhole_to_equirect_window(
            images,
            hfov_deg,
            canvas_size=(self.config["pano_height"], self.config["pano_width"]),
            start_col=start * STRIDE,
            width=width * STRIDE,
        )
        x = self.ground_input(strip)
        top = self.ground_backbone(x)[-1]  # a window is not periodic: zero padding
        projected = self.ground_project(top)
        canvas = projected.new_zeros(*projected.shape[:3], total)
        canvas[..., start : start + width] = projected
        mask = canvas_mask(fov, total)[:, start : start + width].to(top.dtype)
        return self.ground_safa(canvas), self.ground_columns(top) * mask[:, None, :]

    def _encode_bev(
        self, images: Tensor, camera: str, hfov_deg: Tensor | float | None, height_m: Tensor | float, fov: Tensor
    ) -> tuple[Tensor, Tensor]:
        height_px, width_px = images.shape[-2:]
        if camera == "panorama":
            model: PanoramaCamera | PinholeCamera = PanoramaCamera(width_px, height_px)
        else:
            hfov = torch.as_tensor(hfov_deg, dtype=torch.float64).reshape(-1).expand(images.shape[0])
            model = PinholeCamera.from_hfov(width_px, height_px, hfov.to(images.device))
        size = self.config["bev_size"]
        x = self.ground_input(images)
        bev, valid = to_bev(x, model, height_m, size_px=size, gsd_m=self.config["aerial_extent_m"] / size)
        bev = bev * valid.unsqueeze(1).to(bev.dtype)
        polar = polar_transform(bev, self.config["polar_height"], self.config["polar_width"])
        with circular_width(True):
            top = self.ground_backbone(polar)[-1]
        descriptor = self.ground_safa(self.ground_project(top))
        columns = self.ground_columns(top)
        total = self.azimuth_columns
        width = window_width(float(fov.max()), total)
        start = window_start(width, total)
        mask = canvas_mask(fov, total)[:, start : start + width].to(columns.dtype)
        return descriptor, columns[..., start : start + width] * mask[:, None, :]

    # ---- matching -------------------------------------------------------------------------------------------
    def similarity(
        self, ground: GroundEncoding, aerial: AerialEncoding, *, unknown_heading: bool = False, subcolumn: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Similarity of every ground image to every aerial chip.

        Args:
            ground: encodings of ``Bg`` ground images.
            aerial: encodings of ``Ba`` chips.
            unknown_heading: search the heading (orientation-aware, DSM); also done when
                ``ground.heading_known`` is False.
            subcolumn: refine the heading inside the best column step (parabolic peak interpolation);
                without it, headings are multiples of ``360 / Wc``.

        Returns:
            scores: (Bg, Ba); the cosine of the descriptors, or with a heading search the best normalised
            column correlation, in [-1, 1].
            heading_deg: None, or with a heading search (Bg, Ba) the best heading of the ground image's centre
            column, degrees clockwise from north in [0, 360).
        """
        if not unknown_heading and ground.heading_known:
            return ground.descriptor @ aerial.descriptor.T, None
        total = aerial.columns.shape[-1]
        canvas, mask = place_on_canvas(ground.columns, ground.column_fov, total)
        per_shift = orientation_scores(canvas, mask, aerial.columns)
        scores, shift = per_shift.max(dim=-1)
        if subcolumn:
            shift = refine_peak(per_shift.detach(), shift)
        return scores, shift_to_heading_deg(shift, total)

    # ---- refinement -----------------------------------------------------------------------------------------
    def refinement_features(
        self,
        ground_images: Tensor,
        chips: Tensor,
        *,
        camera: str = "panorama",
        hfov_deg: Tensor | float | None = None,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Multi-scale features and confidences of both views, in their own image spaces, for the LM refiner.

        Args:
            ground_images: (B, 3, H, W) float in [0, 1], at their own size (a panorama's width wraps around).
            chips: (B, 3, S, S) north-up chips (or the input of the config's map modality).
            camera: ``"panorama"`` or ``"pinhole"``.
            hfov_deg: accepted for symmetry with :meth:`encode_ground`; image-space features do not need it.

        Returns:
            ground_features, ground_confidences, chip_features, chip_confidences: 3 levels each, coarse to fine
            (strides 16, 8, 4): features (B, C_l, H_l, W_l) with unit L2 norm over channels, confidences
            (B, 1, H_l, W_l) in (0, 1). ``C_l`` is ``config["refine_channels"]``.
        """
        ground_features, ground_confidences = self.ground_refinement_features(ground_images, camera=camera)
        chip_features, chip_confidences = self.map_refinement_features(chips)
        return ground_features, ground_confidences, chip_features, chip_confidences

    def ground_refinement_features(
        self, images: Tensor, *, camera: str = "panorama"
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The ground half of :meth:`refinement_features`: 3 levels of features and confidences of (B, 3, H, W)
        images in [0, 1] (a panorama's width wraps around)."""
        _check_images(images)
        if camera not in CAMERAS:
            raise CameraError(f"camera must be one of {', '.join(CAMERAS)}, got {camera!r}")
        with circular_width(camera == "panorama"):
            return self.ground_decoder(self.ground_backbone(self.ground_input(images)))

    def map_refinement_features(self, chips: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The map half of :meth:`refinement_features`: 3 levels of features and confidences of (B, C, S, S)
        north-up chips of the config's map modality."""
        return self.aerial_decoder(self.aerial_backbone(self.map_input(chips)))


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ModelInputError(f"ground images must be a float tensor (B, 3, H, W), got {shape}")
    if not images.is_floating_point():
        raise ModelInputError(f"ground images must be float in [0, 1], got dtype {images.dtype}")


def pinhole_to_equirect_window(
    images: Tensor,
    hfov_deg: Tensor | float,
    *,
    canvas_size: tuple[int, int],
    start_col: int,
    width: int,
) -> tuple[Tensor, Tensor]:
    """Resample level pinhole images onto a column window of a heading-0 equirectangular canvas.

    The canvas is a ``H x W`` panorama (DESIGN's convention) whose centre column looks along the optical axis;
    the window holds its columns ``start_col .. start_col + width - 1``.

    Args:
        images: (B, C, h, w) pinhole images (centred principal point, square pixels).
        hfov_deg: horizontal field of view, degrees: a number or (B,).
        canvas_size: ``(H, W)`` of the full canvas.
        start_col: first canvas column of the window.
        width: window width in columns.

    Returns:
        window: (B, C, H, width) bilinear samples, zero where the pinhole does not see; valid: (B, H, width).
    """
    batch, _, height_px, width_px = images.shape
    canvas_h, canvas_w = canvas_size
    hfov = torch.as_tensor(hfov_deg, dtype=torch.float64).reshape(-1).expand(batch).to(images.device)
    pinhole = PinholeCamera.from_hfov(width_px, height_px, hfov)
    uv_canvas = pixel_centers(canvas_w, canvas_h, dtype=images.dtype, device=images.device)
    uv_canvas = uv_canvas[:, start_col : start_col + width]
    rays, _ = PanoramaCamera(canvas_w, canvas_h).unproject(uv_canvas)
    uv, valid = pinhole.project(rays.expand(batch, *rays.shape))
    in_front = rays[..., 2] > 0
    grid = to_grid_sample_coords(uv, width_px, height_px).to(images.dtype)
    window = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return window * in_front.to(images.dtype), valid
