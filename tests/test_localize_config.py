"""Versioned localisation configs: every YAML version loads, the defaults are the newest version,
the choice lists match the registries, flags override, mistakes are one-line InputErrors."""
from __future__ import annotations

from pathlib import Path

import pytest

from classification.errors import InputError
from classification.losses import LOSSES
from localization import config as C
from localization.model import BOX_HEADS
from localization.train import OPTIMIZERS, SCHEDULERS
from localization.views import AUGMENTATIONS

VERSIONS = Path(__file__).resolve().parents[1] / "configs" / "localize"


def load(path: Path) -> C.LocalizeConfig:
    return C.load_localize_config(path)


def test_every_version_loads_and_names_itself():
    files = sorted(VERSIONS.glob("v*.yaml"))
    assert len(files) >= 3
    for path in files:
        assert load(path).version == path.stem


def test_defaults_are_the_newest_version():
    newest = max(VERSIONS.glob("v*.yaml"), key=lambda p: int(p.stem[1:]))
    assert C.LocalizeConfig().version == newest.stem
    assert load(newest) == C.LocalizeConfig()


def test_choice_lists_match_the_registries():
    assert set(C.BOX_HEADS) == set(BOX_HEADS)
    assert set(C.AUGMENTATIONS) == set(AUGMENTATIONS)
    assert set(C.OPTIMIZERS) == set(OPTIMIZERS) and set(C.SCHEDULERS) == set(SCHEDULERS)
    assert set(C.LOSSES) == set(LOSSES)


def test_flags_override_and_epochs_follow_the_last_stage():
    base = C.LocalizeConfig()
    cfg = base.with_flags(model="tf_efficientnet_lite1", box_weight=1000.0, unfreeze=2, epochs=7, seed=None)
    assert (cfg.model.name, cfg.criterion.box_weight, cfg.training.unfreeze) == ("tf_efficientnet_lite1", 1000.0, 2)
    assert cfg.training.epochs == 7 and cfg.training.head_epochs == base.training.head_epochs
    heads = base.with_flags(unfreeze=0, epochs=5)
    assert heads.training.head_epochs == 5 and heads.training.epochs == base.training.epochs
    assert base.with_flags() == base


@pytest.mark.parametrize("values,message", [
    ({"model": {"box_head": "yolo"}}, "unknown box_head 'yolo'; valid: spatial, pooled, edges"),
    ({"optimizer": {"name": "lion"}}, "unknown optimizer 'lion'; valid: adam, adamw, sgd"),
    ({"training": {"epochs": "many"}}, "epochs must be an integer, got 'many'"),
    ({"criterion": {"box_weight": -1}}, "box_weight must be >= 0, got -1.0"),
    ({"loss": {}}, "unknown section(s) loss; valid: version, model, augmentation"),
    ({"augmentation": {"views": 4, "mix": 1}}, "augmentation: unknown key(s) mix; valid: name, resize, views"),
    ({"training": {"head_epochs": 0, "unfreeze": 0}}, "nothing to train"),
    ([1, 2], "must be a mapping"),
])
def test_mistakes_are_one_line_input_errors(values, message):
    with pytest.raises(InputError) as err:
        C.LocalizeConfig.from_dict(values)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_unreadable_or_exploding_yaml_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: {name: [unclosed\n")
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(6))
    (tmp_path / "laughs.yaml").write_text(laughs)
    for name, message in (("bad.yaml", "cannot read config"), ("laughs.yaml", "expands to more than")):
        with pytest.raises(InputError) as err:
            C.load_localize_config(tmp_path / name)
        assert message in str(err.value) and "\n" not in str(err.value)
    assert C.load_localize_config(None) == C.LocalizeConfig()
