import numpy as np
import pytest

from zoomin_core import geometry as g
from zoomin_core.records import Box


def test_normalise_fixes_inverted_corners():
    assert g.normalise(Box(10, 20, 5, 2)) == Box(5, 2, 10, 20)


def test_clamp_keeps_boxes_inside():
    b = g.clamp(Box(-5, -5, 120, 90), 100, 80)
    assert (b.x1, b.y1, b.x2, b.y2) == (0, 0, 100, 80)


def test_map_view_to_original_and_back():
    b = Box(10, 20, 30, 40, 0.7)
    o = g.to_original(b, 4.0, 2.0)
    assert (o.x1, o.y1, o.x2, o.y2, o.score) == (40, 40, 120, 80, 0.7)
    assert g.to_view(o, 4.0, 2.0) == b


def test_pad_grows_by_fraction_of_size():
    b = g.pad(Box(100, 100, 200, 150), 0.1)
    assert (b.x1, b.y1, b.x2, b.y2) == (90, 95, 210, 155)


def test_min_side_grows_about_centre_and_stays_inside():
    b = g.ensure_min_side(Box(50, 50, 54, 54), 64, 1000, 1000)
    assert b.width == 64 and b.height == 64
    assert (b.x1 + b.x2) / 2 == pytest.approx(52)
    edge = g.ensure_min_side(Box(0, 0, 4, 4), 64, 1000, 1000)
    assert edge.x1 == 0 and edge.x2 == 64
    small_image = g.ensure_min_side(Box(0, 0, 4, 4), 64, 30, 1000)
    assert small_image.x1 == 0 and small_image.x2 == 30


def test_merge_overlapping_unions_and_keeps_best_score():
    boxes = [Box(0, 0, 10, 10, 0.2), Box(2, 2, 12, 12, 0.9), Box(50, 50, 60, 60, 0.5)]
    merged = g.merge_overlapping(boxes, 0.3)
    assert merged == [Box(0, 0, 12, 12, 0.9), Box(50, 50, 60, 60, 0.5)]


def test_merge_contained_box():
    merged = g.merge_overlapping([Box(0, 0, 100, 100, 0.3), Box(10, 10, 20, 20, 0.8)], 0.5)
    assert merged == [Box(0, 0, 100, 100, 0.8)]


def test_iou():
    assert g.iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert g.iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert g.iou(Box(0, 0, 10, 10), Box(20, 20, 30, 30)) == 0.0
    assert g.iou(Box(0, 0, 0, 0), Box(0, 0, 0, 0)) == 0.0


def test_region_box_and_crop_cut_full_resolution_pixels():
    img = np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    r = g.region_box(Box(100.4, 50.2, 120.6, 60.9), 300, 200, margin=0.0, min_side=8)
    assert (r.x1, r.y1, r.x2, r.y2) == (100, 50, 121, 61)
    c = g.crop(img, r)
    assert c.pixels.shape == (11, 21, 3)
    assert np.array_equal(c.pixels, img[50:61, 100:121])
