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


@pytest.fixture
def single_torch_thread():
    """One torch thread for the test, restored afterwards; modules opt in with
    ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``.

    The suite runs two test processes on two cores: with two OpenMP threads each, the cores are oversubscribed and
    every parallel region stalls (a ``tril`` of 32 3x3 matrices took 16 ms with 2 threads under load, 3 us with 1;
    the refiner tests 88 s instead of 13 s). Small tensors gain nothing from a second thread, and no result depends
    on the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
