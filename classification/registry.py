"""Registries are plain dicts from a name to what it builds; this is their one unknown-key error.

Each registry lives next to what it registers (`losses.LOSSES`, `heads.HEADS`,
`train.optimizers.OPTIMIZERS`, `train.modes.MODES`, `runtime.RUNTIMES`, `embeddings.types.INDEX_TYPES`)
and the config dataclasses check their names against those very dicts. So that checking a config
stays cheap, the registries of `classification` load without torch: their entries import it when
they run.
"""
from __future__ import annotations

from typing import Iterable, Mapping, TypeVar

from classification.errors import InputError

T = TypeVar("T")


def check_name(what: str, name: object, valid: Iterable[str]) -> None:
    """Refuse a name that is not in `valid`, listing the valid ones."""
    valid = list(valid)
    if name not in valid:
        raise InputError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")


def lookup(what: str, registry: Mapping[str, T], name: object) -> T:
    """`registry[name]`, or an `InputError` that lists the registry's keys."""
    check_name(what, name, registry)
    return registry[name]
