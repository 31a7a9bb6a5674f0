"""Image size and camera/GPS metadata from EXIF, read from the file header without decoding any pixels.

The reader is forgiving about tags and strict about files: a missing, malformed or out-of-range tag becomes
``None`` in :class:`ImageMetadata` (EXIF written by phones, action cams and editing tools is often wrong),
while a file that cannot be identified as an image, or whose header claims more pixels than allowed, raises
:class:`~crossview.errors.ImageReadError` with a one-line message naming the file.

Convention: positions are WGS84 degrees (south and west negative), altitudes metres (below sea level
negative), headings degrees clockwise from north in [0, 360) exactly as the EXIF tag records them; the
``heading_ref`` field says whether that north is true ('T') or magnetic ('M').
"""

from __future__ import annotations

import math
import numbers
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, ImageFile, PngImagePlugin, UnidentifiedImageError

from crossview.errors import ConfigError, ImageReadError

#: Largest image, in pixels (width × height), whose header ``read_image_metadata`` accepts. It guards
#: whatever decodes the image later against decompression bombs (a small file whose header claims a huge
#: raster). It equals Pillow's default hard limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``), so one threshold holds
#: whichever check meets the file first; Pillow's global is left as the application set it.
MAX_IMAGE_PIXELS = 178_956_970

_GPS = ExifTags.GPS
_TAG = ExifTags.Base

# EXIF orientations 5-8 store the picture transposed: the displayed width is the stored height.
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})

# What a corrupt EXIF block can make Pillow raise while parsing; such a block reads as "no tags".
_EXIF_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    SyntaxError,
    ArithmeticError,
    EOFError,
    struct.error,
)

# What Image.open raises for a file it cannot open or identify (FileNotFoundError is an OSError).
_OPEN_ERRORS = (OSError, Image.DecompressionBombError, ValueError, SyntaxError, EOFError, struct.error)


@dataclass(frozen=True)
class ImageMetadata:
    """Size and EXIF metadata of one image file. Every optional field is ``None`` when absent or malformed.

    Attributes:
        path: The file, as given to :func:`read_image_metadata`.
        width: Displayed width in pixels, after applying the EXIF orientation (5-8 swap the axes).
        height: Displayed height in pixels, after applying the EXIF orientation.
        raw_width: Stored width in pixels, as in the file header.
        raw_height: Stored height in pixels, as in the file header.
        orientation: EXIF Orientation, 1-8 (1 when absent or invalid).
        format: Pillow's name of the file format ('JPEG', 'MPO', 'PNG', 'WEBP', ...).
        lat: Latitude, WGS84 degrees in [-90, 90], north positive.
        lon: Longitude, WGS84 degrees in [-180, 180], east positive.
        alt_m: GPS altitude in metres, negative below sea level (GPSAltitudeRef = 1).
        heading_deg: Degrees clockwise from north in [0, 360): GPSImgDirection (where the camera looks)
            when valid, else GPSTrack (direction of travel).
        heading_ref: 'T' (true north) or 'M' (magnetic north) from the chosen tag's reference; ``None`` if
            absent. A magnetic heading must be corrected for declination before use as a true heading.
        heading_source: 'GPSImgDirection' or 'GPSTrack', the tag ``heading_deg`` came from.
        focal_length_35mm: FocalLengthIn35mmFilm in millimetres (35 mm film equivalent, > 0).
        focal_length_mm: FocalLength, the real lens focal length in millimetres (> 0).
        gps_error_m: GPSHPositioningError, horizontal position error in metres (>= 0).
        gps_dop: GPSDOP, dilution of precision (dimensionless, > 0).
        datetime_original: DateTimeOriginal as written ('YYYY:MM:DD HH:MM:SS', local time, no zone).
        make: Camera maker (IFD0 Make).
        model: Camera model (IFD0 Model).
    """

    path: Path
    width: int
    height: int
    raw_width: int
    raw_height: int
    orientation: int = 1
    format: str | None = None
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    heading_deg: float | None = None
    heading_ref: str | None = None
    heading_source: str | None = None
    focal_length_35mm: float | None = None
    focal_length_mm: float | None = None
    gps_error_m: float | None = None
    gps_dop: float | None = None
    datetime_original: str | None = None
    make: str | None = None
    model: str | None = None

    @property
    def has_position(self) -> bool:
        """True when both ``lat`` and ``lon`` were read."""
        return self.lat is not None and self.lon is not None


def read_image_metadata(path: str | os.PathLike[str], *, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageMetadata:
    """Reads the size and EXIF metadata of an image from its header; no pixel is decoded.

    Args:
        path: Image file (JPEG, PNG, WebP, TIFF, ... anything Pillow identifies).
        max_pixels: Largest accepted width × height in pixels, checked on the header before anything else.

    Returns:
        The metadata; tags that are missing or malformed are ``None`` (never an exception).

    Raises:
        ImageReadError: The file is missing, a directory, not an image, has an unreadable header, or is
            larger than ``max_pixels`` (an ``OSError``; the message names the file).
        ConfigError: ``max_pixels`` is not a positive integer.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    file_path = Path(path)
    with _open_header(file_path) as img:
        raw_width, raw_height = img.size
        if raw_width * raw_height > max_pixels:
            raise ImageReadError(f"image too large: {file_path} ({raw_width} x {raw_height} pixels > {max_pixels})")
        image_format = img.format
        ifd0, exif_ifd, gps = _read_exif_groups(img)
    orientation = _orientation(ifd0.get(_TAG.Orientation))
    transposed = orientation in _TRANSPOSED_ORIENTATIONS
    return ImageMetadata(
        path=file_path,
        width=raw_height if transposed else raw_width,
        height=raw_width if transposed else raw_height,
        raw_width=raw_width,
        raw_height=raw_height,
        orientation=orientation,
        format=image_format,
        **_parse_position(gps),
        **_parse_heading(gps),
        **_parse_gps_quality(gps),
        **_parse_camera(ifd0, exif_ifd),
    )


# --- opening ---------------------------------------------------------------------------------------------


def _open_header(path: Path) -> ImageFile.ImageFile:
    """Opens ``path`` lazily with Pillow (header only), turning every failure into ImageReadError."""
    if path.is_dir():
        raise ImageReadError(f"not a file: {path} (is a directory)")
    try:
        return Image.open(path)
    except _OPEN_ERRORS as exc:
        raise _open_error(path, exc) from exc


def _open_error(path: Path, exc: BaseException) -> ImageReadError:
    """The one-line ImageReadError for an exception raised by ``Image.open(path)``."""
    detail = " ".join(str(exc).split())
    if isinstance(exc, Image.DecompressionBombError):
        return ImageReadError(f"image too large: {path} (Pillow's decompression-bomb guard: {detail})")
    if isinstance(exc, FileNotFoundError):
        return ImageReadError(f"file not found: {path}")
    if isinstance(exc, PermissionError):
        return ImageReadError(f"cannot read image: {path} (permission denied)")
    if isinstance(exc, UnidentifiedImageError):
        reason = "empty file" if _is_empty(path) else "cannot identify image file"
        return ImageReadError(f"not an image: {path} ({reason})")
    return ImageReadError(f"unreadable image header: {path} ({detail or type(exc).__name__})")


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _read_exif_groups(img: Image.Image) -> tuple[Mapping[int, Any], Mapping[int, Any], Mapping[int, Any]]:
    """IFD0, Exif IFD and GPS IFD of an opened image; empty mappings where absent or corrupt."""
    try:
        exif = _header_exif(img)
        ifd0 = dict(exif)
    except _EXIF_ERRORS:
        return {}, {}, {}
    return ifd0, _sub_ifd(exif, ExifTags.IFD.Exif), _sub_ifd(exif, ExifTags.IFD.GPSInfo)


def _header_exif(img: Image.Image) -> Image.Exif:
    """The EXIF block found in the header. PngImageFile.getexif() decodes the whole image to look for an
    eXIf chunk after the pixel data, so PNG uses the base implementation (chunks before the pixels)."""
    if isinstance(img, PngImagePlugin.PngImageFile):
        return Image.Image.getexif(img)
    return img.getexif()


def _sub_ifd(exif: Image.Exif, tag: int) -> Mapping[int, Any]:
    try:
        ifd = exif.get_ifd(tag)
    except _EXIF_ERRORS:
        return {}
    return ifd if isinstance(ifd, dict) else {}


# --- tag groups -------------------------------------------------------------------------------------------


def _parse_position(gps: Mapping[int, Any]) -> dict[str, float | None]:
    """lat, lon (WGS84 degrees, signed by their N/S, E/W refs) and alt_m (metres, signed by its ref)."""
    return {
        "lat": _coordinate(gps.get(_GPS.GPSLatitude), gps.get(_GPS.GPSLatitudeRef), "N", "S", 90.0),
        "lon": _coordinate(gps.get(_GPS.GPSLongitude), gps.get(_GPS.GPSLongitudeRef), "E", "W", 180.0),
        "alt_m": _altitude_m(gps.get(_GPS.GPSAltitude), gps.get(_GPS.GPSAltitudeRef)),
    }


def _parse_heading(gps: Mapping[int, Any]) -> dict[str, float | str | None]:
    """heading_deg in [0, 360), its ref ('T'/'M') and source tag: GPSImgDirection first, then GPSTrack."""
    candidates = (
        ("GPSImgDirection", _GPS.GPSImgDirection, _GPS.GPSImgDirectionRef),
        ("GPSTrack", _GPS.GPSTrack, _GPS.GPSTrackRef),
    )
    for source, value_tag, ref_tag in candidates:
        heading_deg = _real(gps.get(value_tag))
        # EXIF allows 0-359.99; 360 is a rounding of 359.99.. and wraps to 0.
        if heading_deg is not None and 0.0 <= heading_deg <= 360.0:
            ref = _text(gps.get(ref_tag))
            return {
                "heading_deg": heading_deg % 360.0,
                "heading_ref": ref.upper() if ref and ref.upper() in ("T", "M") else None,
                "heading_source": source,
            }
    return {"heading_deg": None, "heading_ref": None, "heading_source": None}


def _parse_gps_quality(gps: Mapping[int, Any]) -> dict[str, float | None]:
    """gps_error_m (GPSHPositioningError, metres, >= 0) and gps_dop (GPSDOP, > 0)."""
    error_m = _real(gps.get(_GPS.GPSHPositioningError))
    return {
        "gps_error_m": error_m if error_m is not None and error_m >= 0.0 else None,
        "gps_dop": _positive(gps.get(_GPS.GPSDOP)),
    }


def _parse_camera(ifd0: Mapping[int, Any], exif_ifd: Mapping[int, Any]) -> dict[str, float | str | None]:
    """Focal lengths (millimetres, > 0), DateTimeOriginal, Make and Model."""
    return {
        "focal_length_35mm": _positive(exif_ifd.get(_TAG.FocalLengthIn35mmFilm)),
        "focal_length_mm": _positive(exif_ifd.get(_TAG.FocalLength)),
        "datetime_original": _text(exif_ifd.get(_TAG.DateTimeOriginal)),
        "make": _text(ifd0.get(_TAG.Make)),
        "model": _text(ifd0.get(_TAG.Model)),
    }


# --- value converters: each returns None for anything malformed -----------------------------------------


def _real(value: Any) -> float | None:
    """A finite float from an EXIF number (int, IFDRational, float); None for text, bytes, NaN, x/0."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (ArithmeticError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


def _positive(value: Any) -> float | None:
    number = _real(value)
    return number if number is not None and number > 0.0 else None


def _text(value: Any) -> str | None:
    """EXIF ASCII as a str without padding (NULs, blanks); None when absent, empty or not text."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    return value.strip("\x00 \t\r\n") or None


def _degrees(dms: Any) -> float | None:
    """Unsigned degrees from EXIF (degrees, minutes, seconds) rationals; None if malformed."""
    parts = [_real(part) for part in (dms if isinstance(dms, tuple) else (dms,))]
    if not 1 <= len(parts) <= 3 or any(part is None or part < 0.0 for part in parts):
        return None
    if any(part > 60.0 for part in parts[1:]):  # minutes and seconds; 60 itself is a rounding artefact
        return None
    return sum(part / 60.0**i for i, part in enumerate(parts))


def _coordinate(dms: Any, ref: Any, positive: str, negative: str, limit_deg: float) -> float | None:
    """Signed degrees from a DMS value and its hemisphere ref; None if either is malformed or |deg| > limit.

    A missing ref gives None rather than a guess: a wrong sign puts the photo on the other hemisphere.
    """
    degrees = _degrees(dms)
    hemisphere = (_text(ref) or "").upper()
    if degrees is None or degrees > limit_deg or hemisphere not in (positive, negative):
        return None
    return -degrees if hemisphere == negative else degrees


def _altitude_m(value: Any, ref: Any) -> float | None:
    """Altitude in metres; GPSAltitudeRef 1 means below sea level, absent means 0 (above), per EXIF."""
    altitude = _real(value)
    if altitude is None or altitude < 0.0:
        return None
    if ref is None:
        return altitude
    if isinstance(ref, (tuple, bytes)) and len(ref) == 1:
        ref = ref[0]
    if isinstance(ref, bool) or ref not in (0, 1):
        return None
    return -altitude if ref == 1 else altitude


def _orientation(value: Any) -> int:
    """EXIF Orientation 1-8; 1 (as stored) when absent or invalid."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return 1
