"""The autolabel pipeline: the pseudo-labelling loop, threshold policies, guards, tracking and CLI."""
__all__ = ["supervised"]
