"""The inputs of ``crossview locate``: which files are images, how to decode them, which camera and prior each has.

Every function here works on one image and fails with a one-line :class:`~crossview.errors.CrossviewError`
naming the file, so that a batch records the failure and goes on.

Convention:
    Camera ``auto``: an image whose displayed width is twice its height (within 2%) is an equirectangular
    panorama (heading unknown unless EXIF gives one); any other is a gravity-aligned pinhole camera whose
    horizontal field of view comes from EXIF ``FocalLengthIn35mmFilm`` (``hfov = 2 atan(18 mm / f35)``, DESIGN's
    ``fx = f35 / 36 mm x width``), else from ``--hfov``, else 90 degrees.

    Prior: EXIF GPS gives a circle around the recorded position whose radius is three times
    ``GPSHPositioningError`` (at least :data:`MIN_EXIF_RADIUS_M`) when the tag is present, else
    ``--prior-radius``. The heading prior is EXIF ``GPSImgDirection`` (else ``GPSTrack``) referenced to true
    north; a magnetic one is not used (converting it needs the local declination, which crossview does not model).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from crossview.errors import CameraError, ConfigError, CrossviewError, ImageReadError
from crossview.export.records import CameraInfo, Prior
from crossview.imagemeta import MAX_IMAGE_PIXELS, ImageMetadata, read_image_metadata

__all__ = [
    "DEFAULT_HFOV_DEG",
    "IMAGE_SUFFIXES",
    "InputError",
    "choose_camera",
    "discover_images",
    "hfov_from_focal_35mm",
    "load_image",
    "prior_from_metadata",
]

DEFAULT_HFOV_DEG = 90.0
PANORAMA_ASPECT = 2.0
PANORAMA_ASPECT_TOLERANCE = 0.02  # relative
MIN_EXIF_RADIUS_M = 20.0
EXIF_RADIUS_SIGMAS = 3.0
CAMERA_CHOICES = ("auto", "panorama", "pinhole")


HEIF_SUFFIXES = frozenset({".heic", ".heif"})


def _heif_available() -> bool:
    return importlib.util.find_spec("pillow_heif") is not None


def _register_heif() -> None:
    """Let Pillow open HEIC/HEIF (pillow-heif's opener), on first use rather than at import time."""
    import pillow_heif

    pillow_heif.register_heif_opener()


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}) | (
    HEIF_SUFFIXES if _heif_available() else frozenset()
)
"""Suffixes (lower case) picked up when a folder is searched; HEIC/HEIF only when pillow-heif is installed."""


class InputError(CrossviewError, FileNotFoundError):
    """An input path given on the command line does not exist."""


# ---- discovery ---------------------------------------------------------------------------------------------


def discover_images(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The images named by ``inputs``, in order: files as given, folders searched recursively (sorted).

    A file named explicitly is kept whatever its suffix (if it is not an image, its record says so); in folders
    only files with a suffix of :data:`IMAGE_SUFFIXES` count, hidden files and folders are skipped. Duplicates
    are dropped (first occurrence kept).

    Returns:
        Paths as strings, in the spelling of the input (``folder/sub/a.jpg``).

    Raises:
        InputError: an input that does not exist.
    """
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(str(p) for p in _walk(path))
        elif path.exists():
            found.append(str(path))
        else:
            raise InputError(f"input {item}: no such file or folder")
    return list(dict.fromkeys(found))


def _walk(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(root) / name


# ---- decoding ----------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, ImageMetadata]:
    """Decode an image upright (EXIF orientation applied) as RGB.

    The header is checked against ``max_pixels`` before any pixel is decoded (decompression bombs).

    Returns:
        (H, W, 3) uint8 array and the file's metadata.

    Raises:
        ImageReadError: missing, empty, truncated, corrupt, too large or not an image (message names the file).
    """
    if Path(path).suffix.lower() in HEIF_SUFFIXES and _heif_available():
        _register_heif()
    metadata = read_image_metadata(path, max_pixels=max_pixels)
    try:
        with Image.open(path) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = np.asarray(upright.convert("RGB"))
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise ImageReadError(f"cannot decode image {path}: {detail}") from None
    if rgb.shape[:2] != (metadata.height, metadata.width):
        raise ImageReadError(f"cannot decode image {path}: decoded size differs from its header")
    return rgb, metadata


# ---- camera ------------------------------------------------------------------------------------------------


def hfov_from_focal_35mm(focal_35mm: float) -> float:
    """Horizontal field of view (degrees) of a 35 mm-equivalent focal length (mm) across the long side."""
    return math.degrees(2.0 * math.atan(18.0 / focal_35mm))


def is_panorama_shape(width: int, height: int) -> bool:
    """True for a 2:1 (equirectangular) image, within :data:`PANORAMA_ASPECT_TOLERANCE`."""
    return height > 0 and abs(width / height / PANORAMA_ASPECT - 1.0) <= PANORAMA_ASPECT_TOLERANCE


def choose_camera(
    metadata: ImageMetadata,
    *,
    camera: str = "auto",
    hfov_deg: float | None = None,
    height_m: float,
) -> CameraInfo:
    """The camera of an image (module docstring: ``auto``), or the one forced by ``camera``.

    Returns:
        a :class:`crossview.export.records.CameraInfo` (model, hfov_deg, height_m).

    Raises:
        CameraError: ``camera="panorama"`` for an image that is not 2:1.
        ConfigError: an unknown ``camera`` or a field of view outside (0, 180).
    """
    if camera not in CAMERA_CHOICES:
        raise ConfigError(f"--camera {camera!r}: choose from {', '.join(CAMERA_CHOICES)}")
    if hfov_deg is not None and not 0.0 < hfov_deg < 180.0:
        raise ConfigError(f"--hfov {hfov_deg:g}: must be between 0 and 180 degrees")
    panorama = is_panorama_shape(metadata.width, metadata.height)
    if camera == "panorama" or (camera == "auto" and panorama):
        if not panorama:
            raise CameraError(
                f"{metadata.path}: --camera panorama needs a 2:1 image, got {metadata.width}x{metadata.height}"
            )
        return CameraInfo("panorama", 360.0, height_m)
    if metadata.focal_length_35mm is not None:
        return CameraInfo("pinhole", hfov_from_focal_35mm(metadata.focal_length_35mm), height_m)
    if hfov_deg is not None:
        return CameraInfo("pinhole", float(hfov_deg), height_m)
    return CameraInfo("pinhole", DEFAULT_HFOV_DEG, height_m)


# ---- prior -------------------------------------------------------------------------------------------------


def prior_from_metadata(
    metadata: ImageMetadata, *, prior_radius_m: float, use_gps: bool = True, use_heading: bool = True
) -> Prior:
    """The prior EXIF gives an image (module docstring), or ``Prior("none")`` without GPS tags.

    Returns:
        a :class:`crossview.export.records.Prior` (the record written with the result).
    """
    heading = None
    if use_heading and metadata.heading_deg is not None and metadata.heading_ref != "M":
        heading = float(metadata.heading_deg)
    if not (use_gps and metadata.has_position):
        return Prior("none", heading_deg=heading)
    radius = prior_radius_m
    if metadata.gps_error_m is not None:
        radius = max(EXIF_RADIUS_SIGMAS * metadata.gps_error_m, MIN_EXIF_RADIUS_M)
    return Prior("exif", float(radius), metadata.lat, metadata.lon, heading)
