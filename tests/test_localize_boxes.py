"""Box geometry: letterbox -> model -> original round trips, views drawn where their geometry
says, albumentations and the geometry rows moving boxes identically, IoU and the decision rule."""
from __future__ import annotations

import numpy as np
import pytest

from classification.transforms import DataConfig
from localization.boxes import box_iou, box_problem, resize_geometry, to_model, to_original
from localization.decision import BoxRule, box_agreement, decide, merge_views
from localization.views import EVAL, FLIP, ViewMaker

CFG = DataConfig(size=96, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")


def white_box_image(w: int, h: int, box) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    return img


def white_extent(view_image, threshold: float = 0.5) -> np.ndarray:
    """Edges of the pixels brighter than mid-grey in a normalised view (black = -1, white = +1)."""
    ys, xs = np.nonzero(view_image[0].numpy() > threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


@pytest.mark.parametrize("w,h,box", [(320, 200, (40, 30, 250, 180)),    # wide
                                     (150, 300, (10, 100, 140, 290)),    # tall
                                     (97, 97, (0, 0, 97, 97))])          # square, whole image
@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_letterbox_to_model_to_original_round_trips(w, h, box, resize):
    geo = resize_geometry(w, h, CFG.size, resize)
    norm = to_model(np.array(box, float), geo, CFG.size)
    assert np.all((0 <= norm) & (norm <= 1))
    assert np.allclose(to_original(norm, geo, CFG.size)[0], box, atol=1e-9)
    if resize == "letterbox":  # one scale for both axes, the longest side fills the input
        assert geo[0] == pytest.approx(geo[2], rel=0.02) and max(w * geo[0], h * geo[2]) == pytest.approx(CFG.size)


@pytest.mark.parametrize("w,h", [(320, 200), (150, 300)])
@pytest.mark.parametrize("spec", [EVAL, FLIP])
def test_views_draw_the_box_where_the_geometry_says(w, h, spec):
    box = (w // 5, h // 4, w // 2, 3 * h // 4)
    view = ViewMaker(CFG, "letterbox").make(white_box_image(w, h, box), spec)
    expected = to_model(np.array(box, float), view.geo, CFG.size)[0] * CFG.size
    assert np.abs(white_extent(view.image) - expected).max() <= 1.0
    # and back: the box found in the view maps onto the box drawn in the original (flip undone)
    back = to_original(white_extent(view.image) / CFG.size, view.geo, CFG.size)[0]
    assert np.abs(back - box).max() <= 1.0 / view.geo[2] + 1e-6


def test_letterbox_pads_the_short_side_with_the_mean():
    view = ViewMaker(CFG, "letterbox").make(np.full((50, 100, 3), 255, np.uint8))
    img = view.image.numpy()
    assert np.allclose(img[:, :20], 0.0, atol=0.01) and np.allclose(img[:, -20:], 0.0, atol=0.01)
    assert np.allclose(img[:, 30:60], 1.0)


@pytest.mark.parametrize("augmentation", ["light", "strong"])
def test_augmented_views_move_boxes_as_albumentations_does(augmentation):
    rng = np.random.default_rng(0)
    maker = ViewMaker(CFG, "letterbox", augmentation)
    for seed in range(12):
        w, h = rng.integers(60, 200, size=2)
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        box = np.array([x0, y0, rng.integers(x0 + 5, w + 1), rng.integers(y0 + 5, h + 1)], float)
        view = maker.make(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), seed, box=box)
        assert np.abs(to_model(box, view.geo, CFG.size)[0] - view.box).max() * CFG.size < 1e-3


def test_box_iou_and_problems():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert np.allclose(box_iou(a, b), [1.0, 1 / 3, 0.0])
    assert box_problem(np.array([5, 5, 5, 9.0]), 20, 20).startswith("empty box")
    assert "outside the 20x20 image" in box_problem(np.array([0, 0, 21, 9.0]), 20, 20)
    assert box_problem(np.array([0, 0, 20, 20.0]), 20, 20) is None


def test_flip_agreement_and_decision():
    boxes = np.array([[[10, 10, 50, 50], [0, 0, 10, 10]],       # view 0
                      [[10, 10, 50, 50], [5, 0, 15, 10]]], float)  # view 1 (unflipped)
    agreement = box_agreement(boxes)
    assert np.allclose(agreement, [1.0, 1 / 3])
    probs = np.array([[[0.95, 0.05], [0.99, 0.01]], [[0.91, 0.09], [0.99, 0.01]]])
    mean_probs, mean_boxes = merge_views(probs, boxes)
    assert np.allclose(mean_boxes[1], [2.5, 0, 12.5, 10]) and np.allclose(mean_probs[0], [0.93, 0.07])
    accepted = decide(mean_probs.max(1), agreement, BoxRule(min_confidence=0.9, min_agreement=0.8))
    assert accepted.tolist() == [True, False]  # the second is sure of its class, not of its box
    assert decide(mean_probs.max(1), agreement, BoxRule(0.95, 0.0)).tolist() == [False, True]
