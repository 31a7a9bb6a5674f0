"""TileCache: layout on disk, atomic writes, corrupt tiles dropped on read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tileserver import generated_tile

from crossview.errors import CrossviewError
from crossview.tiles.cache import TileCache, TileCacheError

PNG = generated_tile(3, 5, 4, ext="png")
JPEG = generated_tile(3, 5, 4, ext="jpg")
WEBP = generated_tile(3, 5, 4, ext="webp")


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_convention_cache_layout_is_root_slug_z_x_y_ext(tmp_path: Path) -> None:
    cache = TileCache(tmp_path, "esri-worldimagery")
    path = cache.put(3, 5, 4, PNG)
    assert path == tmp_path / "esri-worldimagery" / "4" / "3" / "5.png"
    assert files_under(tmp_path) == ["esri-worldimagery/4/3/5.png"]
    assert path.read_bytes() == PNG


@pytest.mark.parametrize(("data", "ext"), [(PNG, "png"), (JPEG, "jpg"), (WEBP, "webp")])
def test_extension_follows_the_image_bytes(tmp_path: Path, data: bytes, ext: str) -> None:
    cache = TileCache(tmp_path, "s")
    assert cache.put(3, 5, 4, data).name == f"5.{ext}"
    assert cache.get(3, 5, 4) == data


def test_get_of_an_uncached_tile_is_none(tmp_path: Path) -> None:
    cache = TileCache(tmp_path / "not-yet-created", "s")
    assert cache.get(0, 0, 0) is None
    assert cache.find(0, 0, 0) is None


def test_put_replaces_and_keeps_one_file_per_tile(tmp_path: Path) -> None:
    cache = TileCache(tmp_path, "s")
    cache.put(3, 5, 4, PNG)
    cache.put(3, 5, 4, JPEG)  # the source switched format
    assert files_under(tmp_path) == ["s/4/3/5.jpg"]
    assert cache.get(3, 5, 4) == JPEG


def test_corrupt_cached_tile_is_deleted_and_reported_missing(tmp_path: Path) -> None:
    cache = TileCache(tmp_path, "s")
    path = cache.put(3, 5, 4, PNG)
    path.write_bytes(PNG[: len(PNG) // 2])  # e.g. a crash of another program mid-write
    assert cache.get(3, 5, 4) is None
    assert not path.exists()


def test_put_refuses_non_images(tmp_path: Path) -> None:
    cache = TileCache(tmp_path, "s")
    with pytest.raises(TileCacheError, match="4/3/5"):
        cache.put(3, 5, 4, b"<html>error</html>")
    assert files_under(tmp_path) == []


def test_failed_write_leaves_the_old_tile_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = TileCache(tmp_path, "s")
    path = cache.put(3, 5, 4, PNG)

    def failing_replace(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(TileCacheError) as info:
        cache.put(3, 5, 4, generated_tile(0, 0, 0))
    assert isinstance(info.value, OSError) and isinstance(info.value, CrossviewError)
    assert str(path) in str(info.value)
    assert path.read_bytes() == PNG
    assert files_under(tmp_path) == ["s/4/3/5.png"]


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    cache = TileCache(tmp_path, "s")
    for x in range(4):
        cache.put(x, 1, 2, generated_tile(x, 1, 2))
    assert files_under(tmp_path) == [f"s/2/{x}/1.png" for x in range(4)]


@pytest.mark.parametrize("slug", ["../escape", "a/b", "", ".hidden", "a..b"])
def test_unsafe_slugs_are_refused(tmp_path: Path, slug: str) -> None:
    with pytest.raises(TileCacheError):
        TileCache(tmp_path, slug)


def test_default_root_is_tiles_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = TileCache(slug="s")
    cache.put(0, 0, 0, PNG)
    assert (tmp_path / "tiles" / "s" / "0" / "0" / "0.png").is_file()
