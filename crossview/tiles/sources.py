"""XYZ tile sources: xyzservices provider names and URL templates, resolved to one ``XYZSource``.

Convention:
    Tiles are addressed by the XYZ ("slippy map") scheme of :mod:`crossview.geometry.webmercator`: zoom ``z``,
    column ``x`` growing east and row ``y`` growing south, tile (0, 0) at the world's north-west corner. A
    source's tiles always cover that grid, whatever their pixel size: a 512-pixel ("retina" or ``tileSize: 512``)
    tile at zoom z covers the same ground as a 256-pixel tile at zoom z, with half the metres per pixel.

URL template placeholders (all may repeat):

- ``{z}``, ``{x}``, ``{y}``: the XYZ tile; ``{-y}`` is the TMS row ``2**z - 1 - y`` (rows growing north);
- ``{q}``: the Bing quadkey of the tile (:func:`crossview.geometry.webmercator.quadkey`);
- ``{s}``: a subdomain, rotated per tile as ``subdomains[(x + y) % n]`` (default subdomains ``abc``), so that
  the same tile always goes to the same host (cache friendly) and neighbours are spread over the hosts;
- ``{r}``: ``@2x`` for a retina source, else the empty string.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from crossview.errors import ConfigError, CoordinateError
from crossview.geometry.webmercator import MAX_TILE_ZOOM, quadkey

DEFAULT_SUBDOMAINS = "abc"
"""Subdomains used for ``{s}`` when a template or provider does not name its own (Leaflet's default)."""

DEFAULT_MAX_ZOOM = 22
"""Largest zoom assumed for a URL template or a provider that does not state one."""

TILE_SIZES = (256, 512)
"""Tile widths (pixels) a source may declare."""

RETINA_SUFFIX = "@2x"
"""What ``{r}`` becomes for a retina source."""

_PLACEHOLDER = re.compile(r"\{(-?[a-z]+)\}")
_KNOWN_PLACEHOLDERS = frozenset({"z", "x", "y", "-y", "q", "s", "r"})
_EXTENSIONS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_TEMPLATE_HASH_CHARS = 10
_CLOSE_MATCHES = 5


@dataclass(frozen=True)
class XYZSource:
    """A resolved XYZ tile source.

    Attributes:
        name: what the user asked for: the xyzservices provider name (``Esri.WorldImagery``) or the URL template.
        url_template: URL with placeholders (see the module docstring); provider variants, extensions and keys
            are already filled in.
        slug: filesystem-safe name of the source, the tile cache's folder name (``esri-worldimagery``).
        tile_size: expected tile width and height in pixels (256 or 512).
        subdomains: values of ``{s}``, rotated per tile.
        max_zoom: largest zoom the source serves.
        min_zoom: smallest zoom the source serves.
        attribution: plain-text attribution that must accompany the imagery.
        extension: image type guessed from the URL (``png``, ``jpg``, ``webp``) or None when the URL does not say.
        retina: whether ``{r}`` asks for double-resolution (``@2x``) tiles.
    """

    name: str
    url_template: str
    slug: str
    tile_size: int = 256
    subdomains: tuple[str, ...] = tuple(DEFAULT_SUBDOMAINS)
    max_zoom: int = DEFAULT_MAX_ZOOM
    min_zoom: int = 0
    attribution: str = ""
    extension: str | None = None
    retina: bool = False

    def __post_init__(self) -> None:
        _check_template(self.url_template)
        if self.tile_size not in TILE_SIZES:
            raise ConfigError(f"tile size {self.tile_size!r} of source {self.name!r} must be 256 or 512 pixels")
        if not 0 <= self.min_zoom <= self.max_zoom <= MAX_TILE_ZOOM:
            raise ConfigError(
                f"source {self.name!r}: zoom range [{self.min_zoom}, {self.max_zoom}] must lie in [0, {MAX_TILE_ZOOM}]"
            )
        if "{s}" in self.url_template and not self.subdomains:
            raise ConfigError(f"source {self.name!r} has an {{s}} placeholder but no subdomains")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", self.slug) or ".." in self.slug:
            raise ConfigError(f"source slug {self.slug!r} is not a safe folder name ([a-z0-9._-], no '..')")

    def url(self, x: int, y: int, z: int) -> str:
        """The URL of tile (x, y, z).

        Raises:
            CoordinateError: (x, y, z) is not a tile of the XYZ grid.
        """
        q = quadkey(x, y, z)  # also validates the tile
        values = {
            "z": str(z),
            "x": str(x),
            "y": str(y),
            "-y": str(2**z - 1 - y),
            "q": q,
            "s": self.subdomains[(x + y) % len(self.subdomains)] if self.subdomains else "",
            "r": RETINA_SUFFIX if self.retina else "",
        }
        return _PLACEHOLDER.sub(lambda match: values[match.group(1)], self.url_template)

    def check_zoom(self, zoom: int) -> int:
        """``zoom`` when the source serves it, else a ConfigError naming the source's zoom range."""
        if isinstance(zoom, bool) or not isinstance(zoom, int):
            raise CoordinateError(f"zoom={zoom!r} must be an integer tile zoom level")
        if not self.min_zoom <= zoom <= self.max_zoom:
            raise ConfigError(
                f"zoom {zoom} is outside the zooms {self.min_zoom}..{self.max_zoom} served by {self.name!r}"
            )
        return zoom


def resolve_source(
    text: str,
    *,
    tile_size: int | None = None,
    retina: bool = False,
    provider_options: Mapping[str, str] | None = None,
) -> XYZSource:
    """Resolve the command line's ``--source`` text to an XYZ tile source (no network access).

    Args:
        text: an xyzservices provider name (``Esri.WorldImagery``, ``OpenStreetMap.Mapnik``; case, dots and
            dashes do not matter) or an http(s) URL template with ``{z}``, ``{x}`` and ``{y}`` (or ``{-y}``)
            placeholders, or ``{q}``.
        tile_size: tile width in pixels (256 or 512) when the source's own value (provider ``tileSize``, else
            256, or 512 for retina) is wrong.
        retina: request ``@2x`` tiles through the ``{r}`` placeholder (implies 512-pixel tiles).
        provider_options: values for a provider's own placeholders, e.g. ``{"apikey": "..."}`` for providers
            that need a key.

    Raises:
        ConfigError: an unknown provider (with close matches), a provider that needs a missing key or is not in
            Web Mercator, a URL without tile placeholders, or a retina request the source cannot honour.
    """
    text = str(text).strip()
    if not text:
        raise ConfigError("--source is empty: give an xyzservices provider name or a URL template with {z}/{x}/{y}")
    if "://" in text or "{" in text:
        source = _from_template(text, tile_size=tile_size, retina=retina)
    else:
        source = _from_provider(text, tile_size=tile_size, retina=retina, options=provider_options or {})
    return source


# ---- URL templates -----------------------------------------------------------------------------------------


def _check_template(template: str) -> None:
    placeholders = set(_PLACEHOLDER.findall(template))
    unknown = sorted(placeholders - _KNOWN_PLACEHOLDERS)
    if unknown:
        names = ", ".join("{" + name + "}" for name in unknown)
        raise ConfigError(
            f"tile URL {template!r} has unknown placeholders {names} "
            "(known: {z} {x} {y} {-y} {q} {s} {r})"
        )
    has_xyz = {"z", "x"} <= placeholders and bool({"y", "-y"} & placeholders)
    if not (has_xyz or "q" in placeholders):
        raise ConfigError(
            f"--source {template!r} is not a tile URL template: it needs {{z}}/{{x}}/{{y}} (or {{q}}) placeholders"
        )
    if urlsplit(template).scheme not in ("http", "https"):
        raise ConfigError(f"tile URL {template!r} must start with http:// or https://")


def _extension(template: str) -> str | None:
    path = urlsplit(template).path.lower()
    match = re.search(r"\.([a-z]+)$", path)
    return _EXTENSIONS.get(match.group(1)) if match else None


def _checked_tile_size(tile_size: int | None, default: int, where: str) -> int:
    size = default if tile_size is None else tile_size
    if isinstance(size, bool) or size not in TILE_SIZES:
        raise ConfigError(f"tile size {size!r} for {where!r} must be 256 or 512 pixels")
    return int(size)


def _check_retina(template: str, retina: bool, where: str) -> None:
    if retina and "{r}" not in template:
        raise ConfigError(f"retina tiles requested but {where!r} has no {{r}} placeholder to ask for them")


def _template_slug(template: str, retina: bool) -> str:
    host = urlsplit(template).netloc.lower().rsplit("@", 1)[-1]  # never put credentials in a folder name
    host = _SLUG_UNSAFE.sub("-", host).strip("-") or "tiles"
    digest = hashlib.sha256(f"{template}|retina={retina}".encode()).hexdigest()[:_TEMPLATE_HASH_CHARS]
    return f"{host}-{digest}"


def _from_template(template: str, *, tile_size: int | None, retina: bool) -> XYZSource:
    _check_template(template)
    _check_retina(template, retina, template)
    size = _checked_tile_size(tile_size, 512 if retina else 256, template)
    return XYZSource(
        name=template,
        url_template=template,
        slug=_template_slug(template, retina),
        tile_size=size,
        extension=_extension(template),
        retina=retina,
    )


# ---- xyzservices providers ---------------------------------------------------------------------------------


def provider_names() -> list[str]:
    """Names of every xyzservices provider (``Esri.WorldImagery``, ...)."""
    import xyzservices.providers as xyz

    return sorted(xyz.flatten())


def _unknown_provider(text: str) -> ConfigError:
    names = provider_names()
    by_lower = {name.lower(): name for name in names}
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=_CLOSE_MATCHES, cutoff=0.6)
    if not close:  # a bare family name ("esri") is far from every full name but a prefix of several
        close = [name for name in by_lower if name.startswith(text.lower())][:_CLOSE_MATCHES]
    hint = f"; did you mean {', '.join(by_lower[name] for name in close)}?" if close else ""
    return ConfigError(
        f"unknown tile source {text!r}: not an xyzservices provider name nor a URL template with {{z}}/{{x}}/{{y}}"
        f"{hint}"
    )


def _provider_template(provider, options: Mapping[str, str]) -> str:
    """The provider's URL with its own placeholders filled and ours ({x} {y} {z} {s} {r}) kept."""
    try:
        with warnings.catch_warnings():
            # CartoDB "now requires an API key" warnings: the tiles still answer; not ours to print.
            warnings.simplefilter("ignore", UserWarning)
            url = provider.build_url(scale_factor="{r}", fill_subdomain=False, **options)
    except ValueError:
        raise ConfigError(
            f"tile provider {provider.name!r} needs an API key: pass it in provider_options or give a URL "
            f"template with the key, e.g. {provider.url!r}"
        ) from None
    except KeyError as error:
        raise ConfigError(f"tile provider {provider.name!r}: no value for placeholder {error}") from None
    if provider.get("tms"):
        url = url.replace("{y}", "{-y}")
    return url


def _provider_zoom(provider, key: str, default: int) -> int:
    value = provider.get(key)
    return int(value) if isinstance(value, (int, float)) else default


def _from_provider(text: str, *, tile_size: int | None, retina: bool, options: Mapping[str, str]) -> XYZSource:
    import xyzservices.providers as xyz

    try:
        provider = xyz.query_name(text)
    except ValueError:
        raise _unknown_provider(text) from None
    crs = str(provider.get("crs", "EPSG:3857")).upper()
    if crs not in ("EPSG:3857", "EPSG:900913"):
        raise ConfigError(
            f"tile provider {provider.name!r} serves {crs} tiles; only Web Mercator (EPSG:3857) is supported"
        )
    template = _provider_template(provider, options)
    _check_template(template)
    _check_retina(template, retina, provider.name)
    size = _checked_tile_size(tile_size, int(provider.get("tileSize", 512 if retina else 256)), provider.name)
    slug = _SLUG_UNSAFE.sub("-", provider.name.lower()).strip("-") + ("-2x" if retina else "")
    return XYZSource(
        name=provider.name,
        url_template=template,
        slug=slug,
        tile_size=size,
        subdomains=tuple(provider.get("subdomains", DEFAULT_SUBDOMAINS)),
        max_zoom=_provider_zoom(provider, "max_zoom", DEFAULT_MAX_ZOOM),
        min_zoom=_provider_zoom(provider, "min_zoom", 0),
        attribution=str(provider.get("attribution", "")),
        extension=_extension(template),
        retina=retina,
    )
