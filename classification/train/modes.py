"""Training modes by name: `MODES`, what `engine.fit()` runs for `TrainConfig.mode`.

Every mode is called as `mode(ctx, train, val, strong, sample_weight)` and returns (history, the
best epoch's record, skipped files). An entry imports its module when it runs: this dict is also
what `TrainConfig` checks `mode` against, and checking a config must not load torch.
"""
from __future__ import annotations


def head(ctx, train, val, strong, sample_weight):
    """Frozen backbone, cached features; the head (and optionally the last blocks) trains."""
    from classification.train.head import fit_head

    return fit_head(ctx, train, val, strong, sample_weight)


def finetune(ctx, train, val, strong, sample_weight):
    """Staged unfreezing on decoded images: head first, then the backbone at a lower LR."""
    from classification.train.finetune import fit_finetune

    return fit_finetune(ctx, train, val, strong, sample_weight)


MODES = {"head": head, "finetune": finetune}
