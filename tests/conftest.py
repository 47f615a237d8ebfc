"""Shared fixtures: the bundled sample in data/, and one feature cache for the whole session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classification.cache import FeatureCache

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample() -> Path:
    return SAMPLE


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path_factory, monkeypatch):
    """Runs started by a test track into a per-session sqlite store, never into the repository."""
    root = tmp_path_factory.getbasetemp() / "mlflow-store"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="session")
def cache(cache_dir) -> FeatureCache:
    return FeatureCache(cache_dir)


def make_image(path: Path, size=(40, 32), mode="RGB", color=(200, 30, 30), fmt=None, **save) -> Path:
    """Write a small real image file (a coloured rectangle with a darker square)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = color
    arr[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = (20, 20, 20)
    img = Image.fromarray(arr).convert(mode) if mode != "RGB" else Image.fromarray(arr)
    img.save(path, format=fmt, **save)
    return path
