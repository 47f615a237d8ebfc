"""How `classification.engine.fit()` trains, one file per part:

    modes.py       MODES: the training modes by name (head, finetune), what `fit()` runs
    head.py        head mode: a head (or the tail blocks, tail.py) on cached backbone features
    tail.py        head mode with `tail_blocks`: the last blocks and the head on cached feature maps
    finetune.py    finetune mode: staged unfreezing on decoded images (the CUDA default)
    views.py       head mode's training views: extracted once, kept in a float16 temporary file
    steps.py       epochs over cached features (full-batch L-BFGS, minibatches) and their evaluation
    rotation.py    aux_rotation: the rotation head beside the class head (finetune and tail)
    stage.py       one training stage: the epoch loop, plateau LR, early stopping, best weights
    optimizers.py  OPTIMIZERS by name

Nothing is imported here, so `classification.config` can check a mode against `modes.MODES`
without loading torch.
"""
