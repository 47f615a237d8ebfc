"""Images + masks -> a UNet on a timm encoder (seed 002): data, training, prediction, confidence.

Knows nothing of pseudo-labelling loops, MLflow or typer; imports `classification` only.
"""
