"""From suspicion map to boxes: smoothing and growth, and the setting `zoomin train` fits."""
import numpy as np

from zoomin_core.calibrate import fit_boxes
from zoomin_core.compact_model import DEFAULT_BOXES, SCAN_STRIDE, proposals
from zoomin_core.geometry import iou
from zoomin_core.records import Box
from zoomin_core.train import Sample


def patchy_map(rng, h=40, w=60, box=(20, 10, 32, 22)):
    """A region whose cells read high and low by turns (as a real scan map does), on quiet ground."""
    prob = rng.uniform(0.0, 0.15, (h, w))
    x1, y1, x2, y2 = box
    yy, xx = np.mgrid[y1:y2, x1:x2]
    prob[y1:y2, x1:x2] = np.where((yy + xx) % 2 == 0, 0.9, 0.3)
    return prob


def test_smoothing_turns_a_patchy_region_into_one_box():
    prob = patchy_map(np.random.default_rng(0))
    truth = Box(20, 10, 32, 22)
    raw = proposals(prob, 4, DEFAULT_BOXES)
    smooth = proposals(prob, 4, {**DEFAULT_BOXES, "smooth": 3})
    assert max(iou(Box(*b[:4]), truth) for b in raw) < 0.1  # single cells
    assert max(iou(Box(*b[:4]), truth) for b in smooth) >= 0.7
    grown = proposals(prob, 1, {**DEFAULT_BOXES, "smooth": 3, "grow": 1})[0]
    first = smooth[0]
    assert (grown[0], grown[1], grown[2], grown[3]) == (first[0] - 1, first[1] - 1, first[2] + 1, first[3] + 1)


def test_grown_boxes_stay_inside_the_map():
    prob = np.zeros((10, 10))
    prob[0:3, 0:3] = 0.9
    x1, y1, x2, y2, _ = proposals(prob, 1, {**DEFAULT_BOXES, "grow": 2})[0]
    assert (x1, y1) == (0, 0) and x2 <= 10 and y2 <= 10


class MapBackend:
    """Stands in for CompactBackend: returns prepared maps (what fit_boxes reads of it)."""
    max_boxes = 4

    def __init__(self, maps):
        self.maps = maps

    def suspicion_maps(self, views):
        return self.maps[:len(views)]


def test_fit_boxes_picks_the_setting_that_recovers_the_regions():
    rng = np.random.default_rng(1)
    samples, maps = [], []
    for i in range(6):
        x1, y1 = int(rng.integers(0, 40)), int(rng.integers(0, 20))
        cells = (x1, y1, x1 + 12, y1 + 12)
        maps.append(patchy_map(rng, box=cells))
        view = np.zeros((40 * SCAN_STRIDE, 60 * SCAN_STRIDE, 3), np.uint8)
        scale = 2  # original image twice the view
        ref = [c * SCAN_STRIDE * scale for c in cells]
        samples.append(Sample(f"f{i}", 1, "regional", "x", "calib", [ref], b"", view,
                              view.shape[1] * scale, view.shape[0] * scale))
    samples.append(Sample("r", 0, "real", "real", "calib", [], b"", np.zeros((8, 8, 3), np.uint8), 8, 8))
    params = fit_boxes(MapBackend(maps), samples)

    def best_iou(s, prob, p):
        f = s.width / s.view.shape[1] * SCAN_STRIDE
        return max(iou(Box(b[0] * f, b[1] * f, b[2] * f, b[3] * f), Box(*s.boxes[0])) for b in proposals(prob, 4, p))
    assert all(best_iou(s, m, DEFAULT_BOXES) < 0.5 for s, m in zip(samples, maps))  # what it starts from
    assert all(best_iou(s, m, params) >= 0.5 for s, m in zip(samples, maps))


def test_backend_warns_once_when_the_view_is_not_the_one_the_scan_learned(caplog):
    import logging

    from zoomin_core.backends.compact import CompactBackend
    from zoomin_core.compact_model import CompactModel
    from zoomin_core.records import View

    backend = CompactBackend(CompactModel.new({"version": "t", "view_size": 1536}))
    full = View(np.zeros((96, 128, 3), np.uint8), 1.0, 1.0)       # a 128 px image at full scale
    with caplog.at_level(logging.WARNING, logger="zoomin_core.backends.compact"):
        backend.scan([full])
        assert not caplog.records
        half = View(np.zeros((768, 1024, 3), np.uint8), 2.0, 2.0)  # a 2048 px image at half scale
        backend.scan([half, half])
    assert len(caplog.records) == 1 and "--view-size 1536" in caplog.text
    legacy = CompactBackend(CompactModel.new({"version": "old"}))  # weights without a view size: 768
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoomin_core.backends.compact"):
        legacy.scan([View(np.zeros((576, 768, 3), np.uint8), 2.0, 2.0)])  # 1536 px at half scale
        assert not caplog.records
        legacy.scan([half])
    assert len(caplog.records) == 1 and "--view-size 768" in caplog.text
