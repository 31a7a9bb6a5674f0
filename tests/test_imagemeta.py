"""Tests for crossview.imagemeta: EXIF position, heading and camera tags, read from the header only.

Synthetic files are written here with Pillow, so the expected values are what the test wrote, not what the
parser returned. Real files (../shared/realdata) are checked against numbers published by other projects:
mapillary_tools' own tests for the Portland and Malta images, OpenSfM's reconstruction for Berlin.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pyproj
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageFile, ImageOps
from PIL.TiffImagePlugin import IFDRational

from crossview.errors import ConfigError, ImageReadError
from crossview.imagemeta import MAX_IMAGE_PIXELS, ImageMetadata, read_image_metadata

REALDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
GPS = ExifTags.GPS
TAG = ExifTags.Base
OPTIONAL_FIELDS = [
    f.name
    for f in dataclasses.fields(ImageMetadata)
    if f.name not in {"path", "width", "height", "raw_width", "raw_height", "orientation", "format"}
]


# --- writing synthetic files --------------------------------------------------------------------------------


def dms(degrees: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """|degrees| as EXIF (degrees, minutes, seconds) with exact micro-arcsecond seconds."""
    total_uas = round(abs(degrees) * 3600 * 10**6)
    whole_deg, rest_uas = divmod(total_uas, 3600 * 10**6)
    minutes, seconds_uas = divmod(rest_uas, 60 * 10**6)
    return IFDRational(whole_deg, 1), IFDRational(minutes, 1), IFDRational(seconds_uas, 10**6)


def write_image(
    path: Path,
    *,
    size: tuple[int, int] = (40, 30),
    gps: dict | None = None,
    exif_ifd: dict | None = None,
    ifd0: dict | None = None,
) -> Path:
    """Saves a small image (format from the suffix) with the given IFD0, Exif-IFD and GPS-IFD tags."""
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    if gps:
        exif[ExifTags.IFD.GPSInfo] = gps
    if exif_ifd:
        exif[ExifTags.IFD.Exif] = exif_ifd
    Image.new("RGB", size, (90, 120, 200)).save(path, exif=exif)
    return path


def gps_position(lat: float, lon: float) -> dict:
    return {
        GPS.GPSLatitudeRef: "N" if lat >= 0 else "S",
        GPS.GPSLatitude: dms(lat),
        GPS.GPSLongitudeRef: "E" if lon >= 0 else "W",
        GPS.GPSLongitude: dms(lon),
    }


def raw_gps_exif(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """EXIF block (little-endian TIFF) whose GPS IFD holds raw (tag, type, count, data) entries as given.

    Pillow's writer coerces known tags to their declared types; this bypasses it so that tests can store
    wrongly typed values (text in GPSLatitude, bytes in GPSAltitude) as real-world writers sometimes do.
    """
    gps_offset = 8 + 2 + 12 + 4
    data_offset = gps_offset + 2 + 12 * len(entries) + 4
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHLL", 0x8825, 4, 1, gps_offset) + struct.pack("<L", 0)
    table, blob = b"", b""
    for tag, typ, count, data in sorted(entries):
        if len(data) <= 4:
            table += struct.pack("<HHL", tag, typ, count) + data.ljust(4, b"\0")
        else:
            table += struct.pack("<HHLL", tag, typ, count, data_offset + len(blob))
            blob += data + b"\0" * (len(data) % 2)
    gps_ifd = struct.pack("<H", len(entries)) + table + struct.pack("<L", 0)
    return b"Exif\x00\x00" + b"II*\x00" + struct.pack("<L", 8) + ifd0 + gps_ifd + blob


def ascii_entry(tag: int, text: str) -> tuple[int, int, int, bytes]:
    data = text.encode("ascii") + b"\0"
    return tag, 2, len(data), data


def rational_entry(tag: int, *pairs: tuple[int, int]) -> tuple[int, int, int, bytes]:
    return tag, 5, len(pairs), b"".join(struct.pack("<LL", n, d) for n, d in pairs)


def png_with_header_size(path: Path, width: int, height: int) -> Path:
    """A valid 1×1 PNG whose IHDR is patched to claim width × height (CRC recomputed): no such pixels."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


# --- positions ----------------------------------------------------------------------------------------------


def test_full_gps_and_camera_tags(tmp_path: Path) -> None:
    path = write_image(
        tmp_path / "full.jpg",
        gps={
            **gps_position(45.5169031, 122.572765),
            GPS.GPSAltitudeRef: 0,
            GPS.GPSAltitude: IFDRational(703, 10),
            GPS.GPSDOP: IFDRational(178, 100),
            GPS.GPSHPositioningError: IFDRational(35, 10),
        },
        exif_ifd={
            TAG.FocalLengthIn35mmFilm: 28,
            TAG.FocalLength: IFDRational(43, 10),
            TAG.DateTimeOriginal: "2018:06:08 13:24:10",
        },
        ifd0={TAG.Make: "SONY", TAG.Model: "HDR-AS300"},
    )
    meta = read_image_metadata(path)
    assert (meta.width, meta.height, meta.format, meta.orientation) == (40, 30, "JPEG", 1)
    assert meta.path == path
    assert meta.lat == pytest.approx(45.5169031, abs=1e-9)
    assert meta.lon == pytest.approx(122.572765, abs=1e-9)
    assert meta.has_position
    assert meta.alt_m == pytest.approx(70.3)
    assert meta.gps_dop == pytest.approx(1.78)
    assert meta.gps_error_m == pytest.approx(3.5)
    assert meta.focal_length_35mm == 28
    assert meta.focal_length_mm == pytest.approx(4.3)
    assert meta.datetime_original == "2018:06:08 13:24:10"
    assert (meta.make, meta.model) == ("SONY", "HDR-AS300")


@pytest.mark.parametrize("lat_ref, lon_ref", [("N", "E"), ("S", "E"), ("N", "W"), ("S", "W")])
def test_convention_lat_lon_wgs84_degrees_south_and_west_negative(tmp_path: Path, lat_ref: str, lon_ref: str) -> None:
    lat_abs, lon_abs = 33.8568, 151.2153
    gps = {
        GPS.GPSLatitudeRef: lat_ref,
        GPS.GPSLatitude: dms(lat_abs),
        GPS.GPSLongitudeRef: lon_ref,
        GPS.GPSLongitude: dms(lon_abs),
    }
    meta = read_image_metadata(write_image(tmp_path / "ref.jpg", gps=gps))
    assert meta.lat == pytest.approx(-lat_abs if lat_ref == "S" else lat_abs, abs=1e-9)
    assert meta.lon == pytest.approx(-lon_abs if lon_ref == "W" else lon_abs, abs=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lat=st.floats(-90.0, 90.0, allow_nan=False),
    lon=st.floats(-180.0, 180.0, allow_nan=False),
)
def test_lat_lon_round_trip_through_exif(tmp_path: Path, lat: float, lon: float) -> None:
    meta = read_image_metadata(write_image(tmp_path / "rt.jpg", size=(8, 8), gps=gps_position(lat, lon)))
    # dms() rounds to a micro-arcsecond (2.8e-10 degrees).
    assert meta.lat == pytest.approx(lat, abs=1e-9)
    assert meta.lon == pytest.approx(lon, abs=1e-9)
    assert -90.0 <= meta.lat <= 90.0 and -180.0 <= meta.lon <= 180.0


@pytest.mark.parametrize(
    "ref, expected_m",
    [(0, 12.5), (1, -12.5), (b"\x01", -12.5), (None, 12.5), (7, None)],
    ids=["above", "below", "below-bytes", "ref-absent-means-above", "invalid-ref"],
)
def test_altitude_signed_by_ref(tmp_path: Path, ref: object, expected_m: float | None) -> None:
    gps = {GPS.GPSAltitude: IFDRational(25, 2)}
    if ref is not None:
        gps[GPS.GPSAltitudeRef] = ref
    meta = read_image_metadata(write_image(tmp_path / "alt.jpg", gps=gps))
    assert meta.alt_m == expected_m


# --- headings -----------------------------------------------------------------------------------------------


def test_img_direction_wins_over_track(tmp_path: Path) -> None:
    gps = {
        GPS.GPSImgDirectionRef: "M",
        GPS.GPSImgDirection: IFDRational(12345, 100),
        GPS.GPSTrackRef: "T",
        GPS.GPSTrack: IFDRational(200, 1),
    }
    meta = read_image_metadata(write_image(tmp_path / "dir.jpg", gps=gps))
    assert meta.heading_deg == pytest.approx(123.45)
    assert (meta.heading_ref, meta.heading_source) == ("M", "GPSImgDirection")


def test_track_only(tmp_path: Path) -> None:
    gps = {GPS.GPSTrackRef: "T", GPS.GPSTrack: IFDRational(27127, 100)}
    meta = read_image_metadata(write_image(tmp_path / "track.jpg", gps=gps))
    assert meta.heading_deg == pytest.approx(271.27)
    assert (meta.heading_ref, meta.heading_source) == ("T", "GPSTrack")


def test_heading_without_ref_keeps_value(tmp_path: Path) -> None:
    meta = read_image_metadata(write_image(tmp_path / "noref.jpg", gps={GPS.GPSTrack: IFDRational(90, 1)}))
    assert (meta.heading_deg, meta.heading_ref, meta.heading_source) == (90.0, None, "GPSTrack")


def test_convention_heading_360_wraps_to_0(tmp_path: Path) -> None:
    gps = {GPS.GPSImgDirectionRef: "T", GPS.GPSImgDirection: IFDRational(360, 1)}
    meta = read_image_metadata(write_image(tmp_path / "wrap.jpg", gps=gps))
    assert meta.heading_deg == 0.0
    assert meta.heading_source == "GPSImgDirection"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(centidegrees=st.integers(0, 35999))
def test_convention_heading_clockwise_from_north_unchanged(tmp_path: Path, centidegrees: int) -> None:
    # EXIF GPSImgDirection is already degrees clockwise from north, like crossview: no conversion allowed
    # (e.g. 90 = east must stay 90, not become a counter-clockwise math angle).
    gps = {GPS.GPSImgDirectionRef: "T", GPS.GPSImgDirection: IFDRational(centidegrees, 100)}
    meta = read_image_metadata(write_image(tmp_path / "h.jpg", size=(8, 8), gps=gps))
    assert meta.heading_deg == pytest.approx(centidegrees / 100, abs=1e-12)
    assert 0.0 <= meta.heading_deg < 360.0


@pytest.mark.parametrize(
    "direction",
    [IFDRational(400, 1), IFDRational(5, 0)],
    ids=["out-of-range", "zero-denominator"],
)
def test_invalid_img_direction_falls_back_to_track(tmp_path: Path, direction: IFDRational) -> None:
    gps = {
        GPS.GPSImgDirectionRef: "M",
        GPS.GPSImgDirection: direction,
        GPS.GPSTrackRef: "T",
        GPS.GPSTrack: IFDRational(45, 1),
    }
    meta = read_image_metadata(write_image(tmp_path / "bad_dir.jpg", gps=gps))
    assert (meta.heading_deg, meta.heading_ref, meta.heading_source) == (45.0, "T", "GPSTrack")


# --- orientation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_5_to_8_swap_width_and_height(tmp_path: Path, orientation: int) -> None:
    path = write_image(tmp_path / "o.jpg", size=(40, 30), ifd0={TAG.Orientation: orientation})
    meta = read_image_metadata(path)
    with Image.open(path) as img:  # independent reference: Pillow decodes and really transposes the pixels
        displayed_size = ImageOps.exif_transpose(img).size
    assert (meta.width, meta.height) == displayed_size == ((30, 40) if orientation >= 5 else (40, 30))
    assert (meta.raw_width, meta.raw_height) == (40, 30)
    assert meta.orientation == orientation


@pytest.mark.parametrize("orientation", [0, 9, 300])
def test_invalid_orientation_reads_as_1(tmp_path: Path, orientation: int) -> None:
    meta = read_image_metadata(write_image(tmp_path / "bad_o.jpg", ifd0={TAG.Orientation: orientation}))
    assert (meta.orientation, meta.width, meta.height) == (1, 40, 30)


# --- missing and malformed tags -----------------------------------------------------------------------------


def test_no_exif_all_optional_fields_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (41, 23)).save(path)
    meta = read_image_metadata(path)
    assert (meta.width, meta.height, meta.raw_width, meta.raw_height) == (41, 23, 41, 23)
    assert (meta.orientation, meta.format) == (1, "JPEG")
    assert {name: getattr(meta, name) for name in OPTIONAL_FIELDS} == dict.fromkeys(OPTIONAL_FIELDS)
    assert not meta.has_position


@pytest.mark.parametrize(
    "gps, exif_ifd, field",
    [
        ({**gps_position(10, 20), GPS.GPSLatitude: (IFDRational(1, 0), 0, 0)}, {}, "lat"),
        ({**gps_position(10, 20), GPS.GPSLatitude: (95, 0, 0)}, {}, "lat"),
        ({**gps_position(10, 20), GPS.GPSLongitude: (181, 0, 0)}, {}, "lon"),
        ({**gps_position(10, 20), GPS.GPSLatitude: (10, 75, 0)}, {}, "lat"),
        ({**gps_position(10, 20), GPS.GPSLatitudeRef: "X"}, {}, "lat"),
        ({GPS.GPSLatitude: dms(10), GPS.GPSLongitudeRef: "E", GPS.GPSLongitude: dms(20)}, {}, "lat"),
        ({GPS.GPSAltitude: IFDRational(3, 0)}, {}, "alt_m"),
        ({GPS.GPSDOP: IFDRational(0, 0)}, {}, "gps_dop"),
        ({GPS.GPSHPositioningError: IFDRational(1, 0)}, {}, "gps_error_m"),
        ({}, {TAG.FocalLengthIn35mmFilm: 0}, "focal_length_35mm"),
        ({}, {TAG.FocalLength: IFDRational(0, 0)}, "focal_length_mm"),
    ],
    ids=[
        "lat-zero-denominator",
        "lat-95",
        "lon-181",
        "lat-75-minutes",
        "lat-ref-X",
        "lat-ref-missing",
        "alt-zero-denominator",
        "dop-0/0",
        "hpos-error-zero-denominator",
        "focal35-zero",
        "focal-0/0",
    ],
)
def test_malformed_tag_reads_as_none(tmp_path: Path, gps: dict, exif_ifd: dict, field: str) -> None:
    meta = read_image_metadata(write_image(tmp_path / "bad.jpg", gps=gps, exif_ifd=exif_ifd))
    assert getattr(meta, field) is None
    assert not (field in ("lat", "lon") and meta.has_position)
    if field == "lat" and GPS.GPSLongitudeRef in gps:  # one bad coordinate does not spoil the other
        assert meta.lon == pytest.approx(20.0, abs=1e-9)


@pytest.mark.parametrize(
    "entries, field",
    [
        ([ascii_entry(GPS.GPSLatitude, "45.5"), ascii_entry(GPS.GPSLatitudeRef, "N")], "lat"),
        ([(GPS.GPSLongitude, 1, 3, b"\x0a\x14\x1e"), ascii_entry(GPS.GPSLongitudeRef, "E")], "lon"),
        ([(GPS.GPSAltitude, 1, 1, b"\x05")], "alt_m"),
        ([ascii_entry(GPS.GPSImgDirection, "90"), ascii_entry(GPS.GPSImgDirectionRef, "T")], "heading_deg"),
    ],
    ids=["text-latitude", "byte-longitude", "byte-altitude", "text-direction"],
)
def test_wrongly_typed_gps_tag_reads_as_none(tmp_path: Path, entries: list, field: str) -> None:
    path = tmp_path / "typed.jpg"
    Image.new("RGB", (12, 10)).save(path, exif=raw_gps_exif(entries))
    with Image.open(path) as img:  # the file really holds text/bytes where a number belongs
        assert isinstance(img.getexif().get_ifd(ExifTags.IFD.GPSInfo)[entries[0][0]], (str, bytes))
    meta = read_image_metadata(path)
    assert getattr(meta, field) is None
    assert (meta.width, meta.height) == (12, 10)


def test_two_part_dms_and_byte_ref_accepted(tmp_path: Path) -> None:
    # Some writers store (degrees, decimal minutes) and a BYTE-typed ref; both are unambiguous.
    entries = [
        rational_entry(GPS.GPSLatitude, (1, 1), (15, 2)),
        (GPS.GPSLatitudeRef, 1, 1, b"S"),
        rational_entry(GPS.GPSLongitude, (7, 1), (0, 1), (36, 1)),
        ascii_entry(GPS.GPSLongitudeRef, "W"),
    ]
    path = tmp_path / "two_part.jpg"
    Image.new("RGB", (12, 10)).save(path, exif=raw_gps_exif(entries))
    meta = read_image_metadata(path)
    assert meta.lat == pytest.approx(-(1 + 7.5 / 60), abs=1e-12)
    assert meta.lon == pytest.approx(-(7 + 36 / 3600), abs=1e-12)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize(
    "payload",
    [
        b"Exif\x00\x00" + b"\xff" * 50,
        b"Exif\x00\x00II*\x00" + struct.pack("<L", 5000),
        b"Exif\x00\x00II*\x00" + struct.pack("<LHHHLLL", 8, 1, 0x8825, 4, 1, 10_000, 0),
    ],
    ids=["garbage", "ifd0-beyond-end", "gps-ifd-beyond-end"],
)
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_corrupt_exif_block_reads_as_no_tags(tmp_path: Path, payload: bytes, suffix: str) -> None:
    path = tmp_path / f"corrupt{suffix}"
    Image.new("RGB", (12, 10)).save(path, exif=payload)
    meta = read_image_metadata(path)
    assert (meta.width, meta.height, meta.orientation) == (12, 10, 1)
    assert {name: getattr(meta, name) for name in OPTIONAL_FIELDS} == dict.fromkeys(OPTIONAL_FIELDS)


# --- formats and header-only reading ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, pillow_format", [(".png", "PNG"), (".webp", "WEBP"), (".tif", "TIFF")])
def test_other_formats_without_exif(tmp_path: Path, suffix: str, pillow_format: str) -> None:
    path = tmp_path / f"plain{suffix}"
    Image.new("RGB", (33, 17)).save(path)
    meta = read_image_metadata(path)
    assert (meta.format, meta.width, meta.height) == (pillow_format, 33, 17)
    assert not meta.has_position


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_same_exif_in_every_format(tmp_path: Path, suffix: str) -> None:
    gps = {**gps_position(-35.2809, 149.13), GPS.GPSImgDirectionRef: "T", GPS.GPSImgDirection: 77}
    meta = read_image_metadata(write_image(tmp_path / f"gps{suffix}", gps=gps, ifd0={TAG.Orientation: 6}))
    assert meta.lat == pytest.approx(-35.2809, abs=1e-9)
    assert meta.lon == pytest.approx(149.13, abs=1e-9)
    assert (meta.heading_deg, meta.heading_ref) == (77.0, "T")
    assert (meta.width, meta.height) == (30, 40)


def test_reads_header_without_decoding_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [write_image(tmp_path / f"h{suffix}", gps=gps_position(1.5, 2.5)) for suffix in (".jpg", ".png", ".webp")]
    plain_png = tmp_path / "plain.png"  # no eXIf chunk: PngImageFile.getexif() would decode to look further
    Image.new("RGB", (9, 7)).save(plain_png)

    def no_decode(self: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    monkeypatch.setattr(Image.Image, "load", no_decode)
    for path in paths:
        assert read_image_metadata(path).lat == pytest.approx(1.5, abs=1e-9)
    assert (read_image_metadata(plain_png).width, read_image_metadata(plain_png).lat) == (9, None)


# --- unreadable files ---------------------------------------------------------------------------------------


def _assert_read_error(path: Path, phrase: str) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image_metadata(path)
    message = str(info.value)
    assert isinstance(info.value, OSError)
    assert path.name in message and phrase in message
    assert "\n" not in message


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("lat=45.5, lon=-122.6\n")
    _assert_read_error(path, "not an image")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_read_error(path, "empty file")


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "photos.jpg"
    path.mkdir()
    _assert_read_error(path, "directory")


def test_missing_file(tmp_path: Path) -> None:
    _assert_read_error(tmp_path / "missing.jpg", "not found")


@pytest.mark.parametrize("suffix, keep_bytes", [(".jpg", -5), (".png", 20)])
def test_truncated_header(tmp_path: Path, suffix: str, keep_bytes: int) -> None:
    path = write_image(tmp_path / f"cut{suffix}", gps=gps_position(1, 2))
    data = path.read_bytes()
    # JPEG: cut just before the start-of-scan marker, inside the header; PNG: inside the IHDR chunk.
    end = data.index(b"\xff\xda") + keep_bytes if suffix == ".jpg" else keep_bytes
    path.write_bytes(data[:end])
    _assert_read_error(path, "unreadable image header")


def test_pixel_limit_from_header(tmp_path: Path) -> None:
    path = write_image(tmp_path / "twenty.png", size=(20, 20))
    assert read_image_metadata(path, max_pixels=400).width == 20
    with pytest.raises(ImageReadError, match=r"image too large: .*twenty\.png \(20 x 20 pixels > 399\)"):
        read_image_metadata(path, max_pixels=399)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_header_checked_before_decoding(tmp_path: Path) -> None:
    # 12000 x 12000 = 144 M pixels claimed by a 70-byte file: within MAX_IMAGE_PIXELS, so the header reads
    # fine (a decode could not: the pixel data is a single byte), and a lower limit refuses it.
    path = png_with_header_size(tmp_path / "claims.png", 12000, 12000)
    meta = read_image_metadata(path)
    assert (meta.width, meta.height, meta.format) == (12000, 12000, "PNG")
    with pytest.raises(ImageReadError, match=r"too large: .*claims\.png \(12000 x 12000 pixels > 100000000\)"):
        read_image_metadata(path, max_pixels=100_000_000)


def test_decompression_bomb_header(tmp_path: Path) -> None:
    path = png_with_header_size(tmp_path / "bomb.png", 30000, 30000)
    assert MAX_IMAGE_PIXELS < 30000 * 30000
    _assert_read_error(path, "too large")


@pytest.mark.parametrize("max_pixels", [0, -1, 2.5, True])
def test_bad_max_pixels(tmp_path: Path, max_pixels: object) -> None:
    path = write_image(tmp_path / "x.jpg")
    with pytest.raises(ConfigError, match="max_pixels"):
        read_image_metadata(path, max_pixels=max_pixels)  # type: ignore[arg-type]


def test_import_changes_no_pillow_global() -> None:
    code = (
        "import warnings, PIL.Image as I; before = (I.MAX_IMAGE_PIXELS, list(warnings.filters)); "
        "import crossview.imagemeta; print(before == (I.MAX_IMAGE_PIXELS, list(warnings.filters)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


# --- real files (../shared/realdata) ------------------------------------------------------------------------


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("real third-party data absent: ../shared/realdata not found")
    return REALDATA


# From mapillary_tools' tests (tests/integration/test_process.py, EXPECTED_DESCS): MAPLatitude,
# MAPLongitude, MAPAltitude and MAPCompassHeading, read by its own EXIF parser; README: GPSTrack ~270.9/271.3.
@pytest.mark.realdata
@pytest.mark.parametrize(
    "name, lat, lon, alt_m, track_deg, readme_track_deg",
    [
        ("DSC00001.JPG", 45.5169031, -122.572765, 70.3, 270.89, 270.9),
        ("DSC00497.JPG", 45.5107231, -122.5760514, 77.5, 271.27, 271.3),
    ],
)
def test_realdata_portland_action_cam(
    realdata: Path,
    name: str,
    lat: float,
    lon: float,
    alt_m: float,
    track_deg: float,
    readme_track_deg: float,
) -> None:
    meta = read_image_metadata(realdata / "street" / "mapillary_portland" / name)
    assert (meta.width, meta.height, meta.orientation) == (3840, 2160, 1)
    assert meta.format in ("JPEG", "MPO")  # Pillow reports these Sony files as MPO (JPEG + MP index)
    assert meta.lat == pytest.approx(lat, abs=1e-7)
    assert meta.lon == pytest.approx(lon, abs=1e-7)
    assert meta.alt_m == pytest.approx(alt_m)
    assert meta.heading_deg == pytest.approx(track_deg, abs=1e-9)
    assert meta.heading_deg == pytest.approx(readme_track_deg, abs=0.05)
    assert (meta.heading_source, meta.heading_ref) == ("GPSTrack", "T")
    assert (meta.make, meta.model) == ("SONY", "HDR-AS300")
    assert meta.focal_length_35mm is None


@pytest.mark.realdata
def test_realdata_malta_img_direction(realdata: Path) -> None:
    meta = read_image_metadata(realdata / "street" / "mapillary_portland" / "test_exif.jpg")
    # mapillary_tools tests/unit/test_exifread.py: lat (35, 54, 45.06) N, lon (14, 29, 55.7) E, altitude
    # 69, direction 100/100, orientation 2, make HTC, model Legend.
    assert meta.lat == pytest.approx(35 + 54 / 60 + 45.06 / 3600, abs=1e-12)
    assert meta.lon == pytest.approx(14 + 29 / 60 + 55.7 / 3600, abs=1e-12)
    assert meta.alt_m == 69.0
    assert (meta.heading_deg, meta.heading_ref, meta.heading_source) == (1.0, "T", "GPSImgDirection")
    assert (meta.width, meta.height, meta.orientation) == (16, 16, 2)
    assert (meta.make, meta.model) == ("HTC", "Legend")


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["01.jpg", "02.jpg", "03.jpg"])
def test_realdata_berlin_matches_opensfm_gps_positions(realdata: Path, name: str) -> None:
    folder = realdata / "street" / "opensfm_berlin"
    meta = read_image_metadata(folder / "images" / name)
    assert meta.focal_length_35mm == 35
    assert (meta.width, meta.height) == (3264, 2448)
    assert meta.heading_deg is None and meta.heading_source is None  # no GPS heading tags in these files
    assert meta.has_position

    reconstruction = json.loads((folder / "reconstruction_example.json").read_text())[0]
    shot = reconstruction["shots"][name]
    ref = reconstruction["reference_lla"]
    # OpenSfM's gps_position is the local ENU (metres) of the EXIF GPS around reference_lla; PROJ computes
    # the same from our lat/lon/alt: geodetic -> geocentric (cart) -> topocentric ENU at the reference.
    to_enu = pyproj.Transformer.from_pipeline(
        "+proj=pipeline +step +proj=cart +ellps=WGS84 +step +proj=topocentric +ellps=WGS84 "
        f"+lat_0={ref['latitude']} +lon_0={ref['longitude']} +h_0={ref['altitude']}"
    )
    east_m, north_m, up_m = to_enu.transform(meta.lon, meta.lat, meta.alt_m)
    assert math.dist((east_m, north_m, up_m), shot["gps_position"]) < 1e-4  # well inside the 1 cm asked
    assert meta.gps_dop == shot["gps_dop"]
    assert meta.orientation == shot["orientation"]
