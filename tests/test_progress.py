"""Progress without a terminal: one log line per stage (also one that stops early), no carriage
returns, and percentages only for a long stage."""
from __future__ import annotations

import logging

import classification.progress as progress
from classification.progress import track


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "classification.progress"]


def test_a_stage_is_one_line_when_stderr_is_not_a_terminal(caplog):
    caplog.set_level(logging.INFO)
    assert list(track(range(8), True, "features (eval)", "batch")) == list(range(8))
    (line,) = _messages(caplog)
    assert line.startswith("features (eval): 8 batches in ") and "\r" not in line


def test_a_stage_that_stops_early_says_how_far_it_got(caplog):
    caplog.set_level(logging.INFO)
    for epoch in track(range(60), True, "train (head)", "epoch"):
        if epoch == 5:  # early stopping: the loop breaks after running epoch 5
            break
    assert [m.rsplit(" in ", 1)[0] for m in _messages(caplog)] == ["train (head): 6 of 60 epochs"]


def test_a_long_stage_also_logs_a_few_percentages(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(progress, "LONG_S", 0.0)
    list(track(range(100), True, "features (strong)", "batch"))
    assert [m.rsplit(" in ", 1)[0] for m in _messages(caplog)] == [
        "features (strong): 25% (25 of 100 batches)", "features (strong): 50% (50 of 100 batches)",
        "features (strong): 75% (75 of 100 batches)", "features (strong): 100 batches"]


def test_disabled_progress_is_the_iterable_itself(caplog):
    items = [1, 2, 3]
    assert track(items, False, "x", "batch") is items
    assert not _messages(caplog)
