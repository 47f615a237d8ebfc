"""Whatever text a user hands us as a CSV or a YAML config, the readers either succeed or raise
`InputError` with a one-line message: never another exception, which the CLI would show as a
traceback instead of `autolabel: error: ...`."""
from __future__ import annotations

import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autolabel.audit import load_truth
from autolabel.config import LoopConfig
from autolabel.settings import resolve_configs
from classification.config import TrainConfig
from classification.data import ImageSet, load_labeled, load_unlabeled
from classification.errors import InputError
from tests.conftest import make_image

# database=None: examples are not saved under .hypothesis/ in the working tree
SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Cells that reach the interesting branches: real column names and their synonyms, paths that
# exist, escape the root, are absolute or empty, and text with the characters CSV quoting is for.
HEADERS = ["path", "label", "file", "filepath", "class", "tag", "PATH", " Label ", "x", ""]
CELLS = st.one_of(
    st.sampled_from(["a.png", "sub/b.png", "missing.jpg", "../../etc/passwd", "/etc/hostname", "..",
                     ".", "", " ", "cat", "dog", "a.png ", "/", "~", "sub", "a.png/x", "\x00.png"]),
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from(',"\n\r\t ;\\/.é✓\x00'), max_size=8),
)


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\n\r') else cell


@st.composite
def csv_text(draw) -> str:
    """CSV-shaped text: a header from known and unknown names, rows of ragged length, mixed quoting."""
    header = draw(st.lists(st.sampled_from(HEADERS) | st.text(max_size=6), min_size=1, max_size=4))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=len(header) + 1), max_size=6))
    quote = draw(st.booleans())
    line = (lambda cells: ",".join(map(_quote, cells))) if quote else ",".join
    ending = draw(st.sampled_from(["\n", "\r\n", ""]))
    return "\n".join([line(header)] + [line(r) for r in rows]) + ending


ANY_TEXT = st.one_of(st.text(max_size=200), csv_text())


def _files(root: Path) -> None:
    """A data folder for the CSV rows that name real files: two real images, and a folder."""
    make_image(root / "a.png", size=(8, 8), fmt="PNG")
    make_image(root / "sub" / "b.png", size=(8, 8), fmt="PNG", color=(1, 2, 3))
    (root / "missing.jpg").unlink(missing_ok=True)


def _expect_input_error_or_success(call) -> None:
    try:
        call()
    except InputError as e:
        assert "\n" not in str(e) and "\r" not in str(e), repr(str(e))


def _with_csv(write, call) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _files(root)
        csv = root / "input.csv"
        write(csv)
        _expect_input_error_or_success(lambda: call(csv))


@SETTINGS
@given(text=ANY_TEXT)
def test_any_text_as_a_labelled_csv(text):
    _with_csv(lambda p: p.write_text(text, encoding="utf-8"), load_labeled)


@SETTINGS
@given(text=ANY_TEXT)
def test_any_text_as_an_unlabelled_csv(text):
    _with_csv(lambda p: p.write_text(text, encoding="utf-8"), load_unlabeled)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_csv(data):
    """Not UTF-8, NUL bytes, a stray image header: still a reason, not a traceback."""
    _with_csv(lambda p: p.write_bytes(data), load_labeled)
    _with_csv(lambda p: p.write_bytes(data), load_unlabeled)


@SETTINGS
@given(text=ANY_TEXT, absolute=st.booleans())
def test_labelled_csv_with_absolute_paths_refused(text, absolute):
    _with_csv(lambda p: p.write_text(text, encoding="utf-8"),
              lambda csv: load_labeled(csv, allow_absolute=absolute))


def _pool() -> ImageSet:
    paths = ["/data/unlabeled/u1.jpg", "/data/unlabeled/sub/u2.jpg", "/data/other/u1.jpg"]
    return ImageSet(paths, ["h1", "h2", "h3"], np.full(3, -1, np.int64), [])


@SETTINGS
@given(text=ANY_TEXT)
def test_any_text_as_a_truth_csv(text):
    def call(csv):
        truth = load_truth(csv, _pool(), ["cat", "dog"])
        assert truth.shape == (3,) and truth.dtype == np.int64 and set(truth.tolist()) <= {-1, 0, 1}

    _with_csv(lambda p: p.write_text(text, encoding="utf-8"), call)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_truth_csv(data):
    _with_csv(lambda p: p.write_bytes(data), lambda csv: load_truth(csv, _pool(), ["cat", "dog"]))


# YAML: values of every type YAML can produce, under keys that are mostly real field names (so the
# values reach the dataclasses' checks) and sometimes not strings at all.
TRAIN_KEYS = [f.name for f in fields(TrainConfig)]
LOOP_KEYS = [f.name for f in fields(LoopConfig)]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 300),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 2), st.text(max_size=10),
                    st.sampled_from(["flexmatch", "fixed", "head", "finetune", "auto", "cpu", "cuda:0", "onnx",
                                     "mlp", "lbfgs", "focal", "efficientnet_lite0", "1e-3", "yes"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def _section(keys: list[str]):
    key = st.sampled_from(keys) | st.text(max_size=8) | st.integers() | st.booleans() | st.none()
    return st.dictionaries(key, VALUES, max_size=5)


CONFIGS = st.one_of(
    st.fixed_dictionaries({}, optional={"train": _section(TRAIN_KEYS) | VALUES, "loop": _section(LOOP_KEYS) | VALUES}),
    st.dictionaries(st.sampled_from(["train", "loop", "Train", "seed"]) | st.text(max_size=5), VALUES, max_size=3),
    VALUES,
)


def _load(text: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        # exactly what the root command does with --config: read, merge the (absent) flags, build
        _expect_input_error_or_success(lambda: resolve_configs(path, {}, {}))


@SETTINGS
@given(config=CONFIGS)
def test_any_yaml_mapping_as_a_config(config):
    _load(yaml.safe_dump(config, allow_unicode=True))


@SETTINGS
@given(text=st.text(max_size=200) | st.text(alphabet=st.sampled_from("[]{}:-,'\"!&*?|>%@` \n\t#abc12"), max_size=60))
def test_any_text_as_a_config(text):
    _load(text)


@pytest.mark.parametrize("text,message", [
    pytest.param("loop:\n  balance: high\n", "balance must be a finite number, got 'high'", id="str-for-float"),
    pytest.param("loop:\n  n_trials: 1.5\n", "n_trials must be an integer, got 1.5", id="float-for-int"),
    pytest.param("loop:\n  policy: [fixed]\n", "policy must be a string, got ['fixed']", id="list-for-str"),
    pytest.param("train:\n  lr: .nan\n", "lr must be a finite number, got nan", id="nan"),
    pytest.param("train:\n  epochs: true\n", "epochs must be an integer, got True", id="bool-for-int"),
    pytest.param("train:\n  1: 2\n", "unknown train key(s) 1; valid:", id="int-key"),
    # a date YAML resolves but cannot build
    pytest.param("train:\n  seed: 2001-02-30\n", "cannot read config", id="impossible-date"),
    pytest.param("[" * 2000, "cannot read config", id="deeper-than-the-parser-recursion"),
    pytest.param('loop:\n  "a\\nb": 1\n', "unknown loop key(s) a\\nb; valid:", id="newline-in-key-escaped"),
])
def test_config_type_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        resolve_configs(path, {}, {})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_whole_numbers_are_stored_as_their_field_type(tmp_path):
    """`epochs: 10.0` means 10 and `threshold: 1` means 1.0: what is saved is what was meant."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 10.0\nloop:\n  threshold: 1\n")
    train, loop = resolve_configs(path, {}, {})
    assert type(train.epochs) is int and train.epochs == 10
    assert type(loop.threshold) is float and loop.threshold == 1.0
