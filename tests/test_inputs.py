"""Inputs of locate: image discovery, upright decoding, bad files, camera choice and EXIF priors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational
from test_imagemeta import gps_position, png_with_header_size, write_image

from crossview.errors import CameraError, ConfigError, ImageReadError
from crossview.imagemeta import read_image_metadata
from crossview.inputs import (
    DEFAULT_HFOV_DEG,
    MIN_EXIF_RADIUS_M,
    InputError,
    choose_camera,
    discover_images,
    hfov_from_focal_35mm,
    load_image,
    prior_from_metadata,
)

GPS = ExifTags.GPS
TAG = ExifTags.Base


def _touch_image(path: Path, size: tuple[int, int] = (8, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def test_discover_walks_folders_in_order_and_keeps_explicit_files(tmp_path):
    a = _touch_image(tmp_path / "set" / "b.jpg")
    b = _touch_image(tmp_path / "set" / "a.PNG")
    c = _touch_image(tmp_path / "set" / "sub" / "c.webp")
    _touch_image(tmp_path / "set" / ".hidden.jpg")
    _touch_image(tmp_path / "set" / ".cache" / "d.jpg")
    (tmp_path / "set" / "notes.txt").write_text("not an image")
    explicit = tmp_path / "odd.dat"
    explicit.write_bytes(b"\x00")
    found = discover_images([tmp_path / "set", explicit, a])
    assert found == [str(b), str(a), str(c), str(explicit)]  # sorted per folder, then recursive; no duplicate


def test_discover_names_a_missing_input(tmp_path):
    with pytest.raises(InputError, match=r"missing\.jpg: no such file or folder"):
        discover_images([tmp_path / "missing.jpg"])


def test_load_image_applies_exif_orientation(tmp_path):
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:8, :8] = (255, 0, 0)  # stored top-left block
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=_orientation_exif(6), quality=100)  # 6: rotate 90 degrees clockwise
    rgb, metadata = load_image(path)
    assert rgb.shape == (48, 32, 3) and (metadata.width, metadata.height) == (32, 48)
    assert rgb[2, -3, 0] > 200 and rgb[2, 2, 0] < 60  # the stored top-left is now the top-right


def _orientation_exif(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[TAG.Orientation] = value
    return exif


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    good = _touch_image(tmp_path / "good.jpg", (64, 48))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    bomb = png_with_header_size(tmp_path / "bomb.png", 30000, 30000)
    for path in (truncated, empty, text, bomb):
        with pytest.raises(ImageReadError) as info:
            load_image(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ImageReadError, match="too large"):
        load_image(good, max_pixels=100)


def _metadata(tmp_path: Path, size: tuple[int, int], **exif) -> object:
    return read_image_metadata(write_image(tmp_path / "image.jpg", size=size, **exif))


def test_camera_auto_panorama_pinhole_from_exif_cli_and_default(tmp_path):
    panorama = choose_camera(_metadata(tmp_path, (200, 100)), height_m=2.5)
    assert (panorama.model, panorama.hfov_deg, panorama.height_m) == ("panorama", 360.0, 2.5)
    exif_camera = choose_camera(
        _metadata(tmp_path, (160, 120), exif_ifd={TAG.FocalLengthIn35mmFilm: 18}), hfov_deg=50.0, height_m=1.5
    )
    assert exif_camera.model == "pinhole"
    assert exif_camera.hfov_deg == pytest.approx(90.0)  # f35 = 18 mm: half of the 36 mm film width
    plain = _metadata(tmp_path, (160, 120))
    assert choose_camera(plain, hfov_deg=50.0, height_m=1.5).hfov_deg == 50.0
    assert choose_camera(plain, height_m=1.5).hfov_deg == DEFAULT_HFOV_DEG
    assert choose_camera(_metadata(tmp_path, (200, 100)), camera="pinhole", height_m=1.5).model == "pinhole"
    with pytest.raises(CameraError, match="needs a 2:1 image, got 160x120"):
        choose_camera(plain, camera="panorama", height_m=1.5)
    with pytest.raises(ConfigError, match="--hfov 200"):
        choose_camera(plain, hfov_deg=200.0, height_m=1.5)


def test_convention_hfov_from_35mm_equivalent_focal_length():
    # DESIGN: fx = f35 / 36 mm x width, so tan(hfov / 2) = (width / 2) / fx = 18 mm / f35.
    for f35 in (13.0, 24.0, 28.0, 50.0):
        width = 4000.0
        fx = f35 / 36.0 * width
        assert hfov_from_focal_35mm(f35) == pytest.approx(math.degrees(2 * math.atan(width / 2 / fx)))


def test_exif_prior_radius_and_heading(tmp_path):
    gps = {**gps_position(48.85, 2.35), GPS.GPSHPositioningError: IFDRational(12, 1)}
    gps.update({GPS.GPSImgDirectionRef: "T", GPS.GPSImgDirection: IFDRational(271, 2)})
    prior = prior_from_metadata(_metadata(tmp_path, (40, 30), gps=gps), prior_radius_m=100.0)
    assert prior.source == "exif" and prior.radius_m == pytest.approx(36.0)  # 3 x 12 m
    assert prior.lat == pytest.approx(48.85) and prior.lon == pytest.approx(2.35)
    assert prior.heading_deg == pytest.approx(135.5)
    precise = {**gps_position(48.85, 2.35), GPS.GPSHPositioningError: IFDRational(1, 1)}
    assert prior_from_metadata(_metadata(tmp_path, (40, 30), gps=precise), prior_radius_m=100.0).radius_m == (
        MIN_EXIF_RADIUS_M
    )
    plain = prior_from_metadata(_metadata(tmp_path, (40, 30), gps=gps_position(1.0, 2.0)), prior_radius_m=70.0)
    assert plain.radius_m == 70.0 and plain.heading_deg is None
    magnetic = {**gps_position(1.0, 2.0), GPS.GPSImgDirectionRef: "M", GPS.GPSImgDirection: IFDRational(90, 1)}
    assert prior_from_metadata(_metadata(tmp_path, (40, 30), gps=magnetic), prior_radius_m=70.0).heading_deg is None
    none = prior_from_metadata(_metadata(tmp_path, (40, 30)), prior_radius_m=70.0)
    assert none.source == "none" and none.lat is None and none.radius_m is None
    ignored = prior_from_metadata(_metadata(tmp_path, (40, 30), gps=gps), prior_radius_m=70.0, use_gps=False)
    assert ignored.source == "none" and ignored.heading_deg == pytest.approx(135.5)
