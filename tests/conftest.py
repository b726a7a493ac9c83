"""Shared fixtures: the real data beside the project, the built-in weights, small images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def data_path(*parts: str) -> Path:
    """A file of ../shared/data; skips the test with a clear message when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="session")
def vgg16():
    """The built-in ImageNet VGG16 weights (converted on first use)."""
    from stylejax import weights

    return weights.load("vgg16", progress=None)


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    """An empty weight cache for tests that import sets."""
    monkeypatch.setenv("STYLEJAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import jax

    # As equinox's tests do: no implicit dtype promotion between array types, no implicit rank
    # broadcasting; the library must say what it means.
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")
