"""Images with one box each -> a class head and a box head on a timm backbone (seed 003).

Boxes live in three coordinate systems: original pixels (what users read and write), model
pixels (the letterboxed or stretched input of side `size`) and normalised model coordinates
([0, 1], what the box head predicts). `boxes.py` maps between them exactly.
"""
