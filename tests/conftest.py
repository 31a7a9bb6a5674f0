"""Shared fixtures: devices (CPU always, CUDA when present), float64 helpers, and the real-data folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA = REPO_ROOT.parent / "shared" / "realdata"

# Test-support modules (the local tile server) are importable from every test folder.
sys.path.insert(0, str(Path(__file__).resolve().parent / "tiles"))

# Numerical tests compare against float64 references: TF32 would make CUDA matmuls inexact.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Run a test on every available device."""
    return torch.device(request.param)


@pytest.fixture
def realdata() -> Path:
    """Path of ../shared/realdata; skips the test when a fresh clone does not have it."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data absent: {REALDATA} not found (only present beside the project's own checkout)")
    return REALDATA
