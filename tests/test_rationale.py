import numpy as np

from zoomin_core import rationale
from zoomin_core.records import Box


def test_measure_detects_smoothing_and_checkerboard():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert rationale.measure(noisy).detail > 100 * (rationale.measure(flat).detail + 1e-3)
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 60 + 100
    checker = np.repeat(checker[..., None], 3, axis=2).astype(np.uint8)
    assert rationale.measure(checker).periodicity > 3 * rationale.measure(noisy).periodicity


def test_zoom_rationale_states_measured_numbers_and_flip():
    c = rationale.Cues(detail=10.0, periodicity=0.5)
    text = rationale.zoom_rationale([(Box(10, 20, 110, 70), 0.91, c)], "generated", 0.91, "real", 0.31,
                                    {"detail": 40.0, "periodicity": 0.1})
    assert "Final: generated (0.91)" in text
    assert "(10,20)-(110,70)" in text and "100x50 px" in text
    assert "0.25x" in text and "5.00x" in text  # ratios to the real-photo reference
    assert "overturned" in text and "real (0.31)" in text


def test_no_reference_still_reports_raw_numbers():
    text = rationale.describe_cue(rationale.Cues(12.5, 0.04), {})
    assert "12.5" in text and "0.040" in text


def test_scan_explanation_counts_regions():
    t = rationale.scan_explanation([Box(0, 0, 5, 5, 0.8), Box(9, 9, 20, 20, 0.4)], 0.8, "generated")
    assert "2 region(s)" in t and "0.80" in t
