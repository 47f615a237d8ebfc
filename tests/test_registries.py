"""Each registry owns its keys: the config checks a name against the very dict that builds it, an
unknown name is one InputError listing the keys, and checking a config loads no torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from classification.config import TrainConfig
from classification.errors import InputError
from classification.heads import HEADS
from classification.losses import LOSSES, create_loss
from classification.runtime import RUNTIMES, resolve_runtime
from classification.train.modes import MODES
from classification.train.optimizers import OPTIMIZERS, create_optimizer
from embeddings.config import IndexConfig
from embeddings.types import INDEX_TYPES, create_type
from tests.conftest import REPO


@pytest.mark.parametrize("field,registry,extra", [
    ("loss", LOSSES, ()), ("head", HEADS, ()), ("optimizer", OPTIMIZERS, ("auto",)),
    ("mode", MODES, ("auto",)), ("runtime", RUNTIMES, ("auto",)),
])
def test_the_config_takes_exactly_its_registrys_keys(field, registry, extra, monkeypatch):
    for name in (*extra, *registry):
        assert getattr(TrainConfig(**{field: name}), field) == name
    valid = ", ".join((*extra, *registry))
    with pytest.raises(InputError, match=f"unknown {field} 'nope'; valid: {valid}$"):
        TrainConfig(**{field: "nope"})
    monkeypatch.setitem(registry, "added", registry[next(iter(registry))])
    assert getattr(TrainConfig(**{field: "added"}), field) == "added"  # one line registers a name


def test_index_config_takes_exactly_the_index_types(monkeypatch):
    assert [IndexConfig(type=name).type for name in INDEX_TYPES] == list(INDEX_TYPES)
    monkeypatch.setitem(INDEX_TYPES, "added", INDEX_TYPES["flat"])
    assert IndexConfig(type="added").type == "added"


@pytest.mark.parametrize("make,message", [
    (lambda: create_loss("hinge"), "unknown loss 'hinge'; valid: ce, bce, focal"),
    (lambda: create_optimizer("adam", [], 0.0), "unknown optimizer 'adam'; valid: adamw, sgd, lbfgs"),
    (lambda: resolve_runtime("tensorrt", "cpu"), "unknown runtime 'tensorrt'; valid: auto, onnx, torch"),
    (lambda: create_type("lsh"), "unknown index type 'lsh'; valid: flat, ivf, hnsw, ivfpq"),
])
def test_factories_refuse_unknown_names_with_the_valid_ones(make, message):
    with pytest.raises(InputError) as info:
        make()
    assert str(info.value) == message


def test_checking_a_config_loads_no_torch():
    code = ("import sys; from classification.config import TrainConfig; "
            "TrainConfig(mode='head', head='mlp', loss='focal', optimizer='sgd', runtime='onnx'); "
            "print(sorted(m for m in ('torch', 'timm', 'onnxruntime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
