"""Retrieval: a FAISS index of a map's chip descriptors, searched for the chips that best match ground images.

>>> from crossview.retrieval import ChipIndex, SearchPrior, build_index          # doctest: +SKIP
>>> index = build_index("map.tif", "synth-v1", stride_m=10.0)                     # doctest: +SKIP
>>> index.save("area.idx")                                                        # doctest: +SKIP
>>> index = ChipIndex.load("area.idx", model_sha256=checkpoint.sha256)            # doctest: +SKIP
>>> prior = SearchPrior.at_latlon(lat=52.45, lon=13.3, radius_m=100.0)           # doctest: +SKIP
>>> result = index.search(ground.descriptor.numpy(), 10, prior=prior)            # doctest: +SKIP
>>> sampler = index.chip_sampler(GeoRaster.read("map.tif"))                       # doctest: +SKIP
>>> chips, valid = sampler.crop(result.centers_xy[0])                             # doctest: +SKIP
"""

from __future__ import annotations

from crossview.retrieval.build import build_index, model_weights_sha256
from crossview.retrieval.chip_index import (
    ChipIndex,
    ChipIndexError,
    IndexFileError,
    IndexMismatchError,
    SearchPrior,
    SearchResult,
)
from crossview.retrieval.chips import ChipGeometry, ChipSampler, chip_geometry_for_model, map_fingerprint

__all__ = [
    "ChipGeometry",
    "ChipIndex",
    "ChipIndexError",
    "ChipSampler",
    "IndexFileError",
    "IndexMismatchError",
    "SearchPrior",
    "SearchResult",
    "build_index",
    "chip_geometry_for_model",
    "map_fingerprint",
    "model_weights_sha256",
]
