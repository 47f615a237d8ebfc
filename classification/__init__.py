"""Images to a trained classifier: data, transforms, models, training and fast inference.

Knows nothing of pseudo-labels, MLflow or the command line.
"""
__all__ = ["cache", "data", "engine", "features", "images", "inference", "models", "transforms"]
