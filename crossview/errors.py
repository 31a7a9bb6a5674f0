"""Error hierarchy: one root, subclasses that also inherit the matching builtin.

Code that does not know crossview can still catch ``ValueError`` or ``OSError``; the command line catches
``CrossviewError`` and prints its message on one line with a non-zero exit.
"""

from __future__ import annotations


class CrossviewError(Exception):
    """Root of every error crossview raises on purpose."""


class CoordinateError(CrossviewError, ValueError):
    """A latitude, longitude, CRS or other coordinate input is out of range or malformed."""


class CameraError(CrossviewError, ValueError):
    """Camera parameters are inconsistent (non-positive focal length, bad image size, ...)."""


class ImageReadError(CrossviewError, OSError):
    """A file could not be read as an image (missing, not an image, truncated, too large)."""


class ConfigError(CrossviewError, ValueError):
    """A command-line option or configuration value is invalid."""
