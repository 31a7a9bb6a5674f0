"""XYZ tile sources: provider names and URL templates resolve without network; placeholders expand correctly."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import mercantile
import pytest
import xyzservices.providers as xyz
from hypothesis import given, settings
from hypothesis import strategies as st

from crossview.errors import ConfigError, CoordinateError
from crossview.tiles.sources import XYZSource, resolve_source

TEMPLATE = "https://{s}.tiles.test/{z}/{x}/{y}.png"


@st.composite
def tiles(draw, max_zoom: int = 22) -> tuple[int, int, int]:
    z = draw(st.integers(0, max_zoom))
    return draw(st.integers(0, 2**z - 1)), draw(st.integers(0, 2**z - 1)), z


def bing_quadkey(x: int, y: int, z: int) -> str:
    """Quadkey per Microsoft's "Bing Maps Tile System": digit i = bit i of x + 2 * bit i of y, high bits first."""
    digits = []
    for level in range(z, 0, -1):
        mask = 1 << (level - 1)
        digits.append(str((1 if x & mask else 0) + (2 if y & mask else 0)))
    return "".join(digits)


# ---- providers ---------------------------------------------------------------------------------------------


def test_esri_world_imagery_resolves_without_network() -> None:
    source = resolve_source("Esri.WorldImagery")
    assert "{z}/{y}/{x}" in source.url_template  # ArcGIS REST tiles are tile/{level}/{row}/{col}
    assert source.attribution.strip()
    assert source.slug == "esri-worldimagery"
    assert source.name == "Esri.WorldImagery"
    assert source.extension is None  # the URL does not say; the cache sniffs the bytes
    assert (
        source.url(3, 5, 4) == "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/4/5/3"
    )


def test_openstreetmap_mapnik_takes_the_providers_zoom_and_attribution() -> None:
    source = resolve_source("OpenStreetMap.Mapnik")
    assert source.max_zoom == xyz.OpenStreetMap.Mapnik["max_zoom"]
    assert source.attribution == xyz.OpenStreetMap.Mapnik["attribution"]
    assert "OpenStreetMap" in source.attribution
    assert source.url(1, 2, 3) == "https://tile.openstreetmap.org/3/1/2.png"
    assert source.extension == "png" and source.tile_size == 256


def test_provider_names_ignore_case_and_separators() -> None:
    assert resolve_source("esri worldimagery") == resolve_source("Esri.WorldImagery")


def test_provider_tile_size_and_keys() -> None:
    source = resolve_source("MapTiler.Streets", provider_options={"key": "SECRET"})
    assert source.tile_size == 512  # the provider's tileSize
    assert "key=SECRET" in source.url(0, 0, 0)
    assert resolve_source("MapTiler.Streets", provider_options={"key": "k"}, tile_size=256).tile_size == 256


def test_provider_needing_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="API key"):
        resolve_source("MapTiler.Streets")


def test_provider_in_another_crs_is_refused() -> None:
    with pytest.raises(ConfigError, match="EPSG:3031"):
        resolve_source("Esri.AntarcticImagery")


def test_provider_subdomains_rotate() -> None:
    source = resolve_source("FreeMapSK")
    assert source.subdomains == tuple(xyz.FreeMapSK["subdomains"])
    hosts = {urlsplit(source.url(x, 0, 3)).hostname for x in range(4)}
    assert hosts == {f"{s}.freemap.sk" for s in "abcd"}
    assert source.extension == "jpg"  # .jpeg


def test_provider_retina() -> None:
    plain = resolve_source("Stadia.AlidadeSmooth")
    retina = resolve_source("Stadia.AlidadeSmooth", retina=True)
    assert plain.url(1, 2, 3).endswith("/3/1/2.png")
    assert retina.url(1, 2, 3).endswith("/3/1/2@2x.png")
    assert retina.tile_size == 512 and plain.tile_size == 256
    assert retina.slug != plain.slug  # different pixels: different cache folders


def test_tms_provider_flips_rows() -> None:
    source = resolve_source("OpenAIP")
    assert "{-y}" in source.url_template
    assert source.url(1, 2, 3).split("/")[-3:] == ["3", "1", f"{2**3 - 1 - 2}.png"]


def test_unknown_provider_lists_close_matches_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_source("Esri.WorldImagry")
    message = str(info.value)
    assert "Esri.WorldImagery" in message and "Esri.WorldImagry" in message
    assert "\n" not in message


def test_family_name_suggests_its_members() -> None:
    with pytest.raises(ConfigError, match=r"Esri\."):
        resolve_source("esri")


@pytest.mark.parametrize("text", ["not a source", "", "   "])
def test_neither_provider_nor_template_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        resolve_source(text)


# ---- URL templates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("https://example.com/map.png", "placeholders"),
        ("https://example.com/{z}/{x}.png", "placeholders"),
        ("https://example.com/{z}/{x}/{y}/{foo}.png", "unknown placeholders"),
        ("tiles/{z}/{x}/{y}.png", "http"),
        ("ftp://example.com/{z}/{x}/{y}.png", "http"),
    ],
)
def test_bad_templates_are_config_errors(text: str, what: str) -> None:
    with pytest.raises(ConfigError, match=what):
        resolve_source(text)


def test_template_defaults() -> None:
    source = resolve_source(TEMPLATE)
    assert source.name == TEMPLATE and source.url_template == TEMPLATE
    assert source.tile_size == 256 and source.subdomains == ("a", "b", "c") and not source.retina
    assert source.extension == "png" and source.attribution == ""


def test_convention_subdomain_rotation_is_x_plus_y_mod_n() -> None:
    source = resolve_source(TEMPLATE)
    for x, y in [(0, 0), (1, 0), (0, 2), (5, 7), (6, 6)]:
        host = urlsplit(source.url(x, y, 4)).hostname
        assert host == f"{'abc'[(x + y) % 3]}.tiles.test"
        assert source.url(x, y, 4) == source.url(x, y, 4)  # the same tile always goes to the same host


def test_quadkey_placeholder_matches_bings_documented_example() -> None:
    source = resolve_source("https://tiles.test/q/{q}.jpeg")
    assert source.url(3, 5, 3) == "https://tiles.test/q/213.jpeg"  # Bing Maps Tile System's worked example
    assert source.url(0, 0, 0) == "https://tiles.test/q/.jpeg"
    assert source.extension == "jpg"


@given(tile=tiles())
@settings(max_examples=100, deadline=None)
def test_quadkey_placeholder_round_trips(tile: tuple[int, int, int]) -> None:
    key = resolve_source("https://tiles.test/{q}").url(*tile).rsplit("/", 1)[1]
    assert key == bing_quadkey(*tile)
    if tile[2] > 0:
        assert tuple(mercantile.quadkey_to_tile(key)) == tile
    else:
        assert key == ""


@given(tile=tiles())
@settings(max_examples=100, deadline=None)
def test_xyz_and_tms_placeholders_round_trip(tile: tuple[int, int, int]) -> None:
    x, y, z = tile
    url = resolve_source("https://t.test/{z}/{x}/{y}/{-y}.png").url(x, y, z)
    z_text, x_text, y_text, tms_text = re.fullmatch(r"https://t\.test/(\d+)/(\d+)/(\d+)/(\d+)\.png", url).groups()
    assert (int(x_text), int(y_text), int(z_text)) == (x, y, z)
    assert int(tms_text) == 2**z - 1 - y


def test_convention_tile_rows_grow_south_and_tms_rows_grow_north() -> None:
    source = resolve_source("https://t.test/{z}/{x}/{y}/{-y}")
    # mercantile: tile (0, 0, 1) is the north-west quarter of the world.
    assert mercantile.bounds(0, 0, 1).south >= 0 >= mercantile.bounds(0, 1, 1).north
    assert source.url(0, 0, 1).endswith("/1/0/0/1")  # XYZ row 0 = north; TMS row 1 = north
    assert source.url(0, 1, 1).endswith("/1/0/1/0")


def test_retina_placeholder() -> None:
    template = "https://t.test/{z}/{x}/{y}{r}.png"
    assert resolve_source(template).url(1, 1, 2) == "https://t.test/2/1/1.png"
    retina = resolve_source(template, retina=True)
    assert retina.url(1, 1, 2) == "https://t.test/2/1/1@2x.png"
    assert retina.tile_size == 512
    with pytest.raises(ConfigError, match=r"\{r\}"):
        resolve_source("https://t.test/{z}/{x}/{y}.png", retina=True)


def test_template_slug_is_filesystem_safe_and_distinct() -> None:
    source = resolve_source("https://user:secret@Tiles.Example.com:8443/{z}/{x}/{y}.png?key=abc")
    assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", source.slug)
    assert source.slug.startswith("tiles-example-com-8443-")
    assert "secret" not in source.slug and "user" not in source.slug
    other = resolve_source("https://Tiles.Example.com:8443/{z}/{x}/{y}.png?key=abd")
    assert other.slug != source.slug
    assert resolve_source("https://Tiles.Example.com:8443/{z}/{x}/{y}.png?key=abd").slug == other.slug


def test_tile_size_override_is_checked() -> None:
    assert resolve_source(TEMPLATE, tile_size=512).tile_size == 512
    with pytest.raises(ConfigError, match="256 or 512"):
        resolve_source(TEMPLATE, tile_size=300)


def test_url_rejects_tiles_outside_the_grid() -> None:
    source = resolve_source(TEMPLATE)
    with pytest.raises(CoordinateError):
        source.url(4, 0, 2)
    with pytest.raises(CoordinateError):
        source.url(0, -1, 2)


def test_check_zoom_names_the_sources_range() -> None:
    source = resolve_source("OpenStreetMap.Mapnik")
    assert source.check_zoom(19) == 19
    with pytest.raises(ConfigError, match=r"0\.\.19"):
        source.check_zoom(20)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="slug"):
        XYZSource(name="x", url_template=TEMPLATE, slug="../evil")
    with pytest.raises(ConfigError, match="placeholders"):
        XYZSource(name="x", url_template="https://t.test/a.png", slug="x")
