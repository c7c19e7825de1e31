"""The chain in one process: one row per input, error isolation, scan-only vs scan+zoom."""
from pathlib import Path

import pytest

from conftest import jpeg_bytes, textured
from zoomin_core import ExamineConfig, ImageInput, load_backend, run_chain
from zoomin_core.backends import available
from zoomin_core.schema import RESULT_SCHEMA, rows_to_table


def _inputs(folder: Path) -> list[ImageInput]:
    return [ImageInput(str(p), p.read_bytes()) for p in sorted(folder.iterdir())]


def test_backend_table():
    assert {"classifier", "compact", "vlm"} == set(available())   # the fake backend is a test double, not offered
    with pytest.raises(ValueError, match="unknown backend 'nope'.*compact"):
        load_backend("nope")


def test_one_row_per_input_with_statuses(bad_inputs):
    folder, expected = bad_inputs
    inputs = _inputs(folder)
    rows = run_chain(load_backend("fake"), inputs)
    assert [r.uri for r in rows] == [i.uri for i in inputs]
    for r in rows:
        assert r.status == expected[Path(r.uri).name], (r.uri, r.error)
        if r.status == "ok":
            assert r.verdict in ("real", "generated") and 0.0 <= r.score <= 1.0
            assert r.boxes and all(0 <= b.x1 < b.x2 <= r.width and 0 <= b.y1 < b.y2 <= r.height for b in r.boxes)
        else:
            assert r.verdict is None and r.error
    table = rows_to_table(rows)
    assert table.schema.equals(RESULT_SCHEMA, check_metadata=True)


def test_model_failure_costs_only_its_own_row():
    bright = jpeg_bytes(textured(64, 64) // 4 + 190)
    dark = jpeg_bytes(textured(64, 64) // 4)
    inputs = [ImageInput("dark1", dark), ImageInput("bright", bright), ImageInput("dark2", dark + b"\0")]
    rows = run_chain(load_backend("fake", fail_on_mean_above=0.6), inputs)
    assert [r.status for r in rows] == ["ok", "model_error", "ok"]
    assert "refusing a bright image" in rows[1].error


def test_scan_only_skips_zoom():
    inputs = [ImageInput("a", jpeg_bytes(textured(300, 200)))]
    scan_only = run_chain(load_backend("fake"), inputs, ExamineConfig(stages="scan"))[0]
    assert scan_only.stages == "scan" and scan_only.zoom_s == 0.0
    assert scan_only.verdict == scan_only.initial_verdict and scan_only.score == scan_only.initial_score


def test_boxes_are_in_original_pixels():
    # 2048 px wide image, 512 px view: the fake's box covers a quarter of the view, so half the
    # original's width once mapped back.
    inputs = [ImageInput("big", jpeg_bytes(textured(2048, 1024)))]
    r = run_chain(load_backend("fake"), inputs)[0]
    (b,) = r.boxes
    assert (b.x2 - b.x1, b.y2 - b.y1) == (1024, 512)


def test_compact_backend_scores_and_explains():
    inputs = [ImageInput("a", jpeg_bytes(textured(400, 300, seed=3)))]
    r = run_chain(load_backend("compact"), inputs)[0]
    assert r.status == "ok" and r.model.startswith("compact/")
    assert 0.0 <= r.score <= 1.0 and r.boxes
    assert r.rationale.startswith(f"{r.verdict.capitalize()}, score {r.score:.2f}") and "Region 1" in r.rationale
    assert r.explanation.startswith("First look")


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        ExamineConfig(stages="zoom")


def test_compact_zoom_batches_crops_without_changing_scores():
    import numpy as np

    from zoomin_core.records import Box, Crop
    backend = load_backend("compact")
    rng = np.random.default_rng(0)
    crops = [Crop(Box(0, 0, w, h), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
             for w, h in ((300, 300), (300, 300), (120, 90), (300, 300), (6, 40), (120, 90))]
    batched = backend.crop_scores(crops)
    one_by_one = [backend.crop_scores([c])[0] for c in crops]
    assert batched[4] is None and one_by_one[4] is None   # a 6 px wide window: no usable evidence
    del batched[4], one_by_one[4]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert all(0 < s < 1 for s in batched)


def test_final_score_follows_the_fitted_rule_from_the_two_looks():
    """final = sigmoid((1 - w) * logit(first look) + w * logit(best region)), w from the weights."""
    import math
    samples = Path(__file__).resolve().parents[1] / "jobs" / "samples"
    backend = load_backend("compact")
    w = backend.zoom_weight
    assert 0 <= w <= 1 and backend.model.meta["zoom_weight"] == w
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    for r in run_chain(backend, [i for i in _inputs(samples) if "broken" not in i.uri][:4]):
        expect = 1 / (1 + math.exp(-((1 - w) * logit(r.initial_score) + w * logit(r.boxes[0].score))))
        assert r.score == pytest.approx(expect, abs=1e-6)


def test_prior_moves_every_score_by_the_odds_of_the_two_shares_and_keeps_their_order():
    """--prior P: P(generated) in an archive with a share P of generated images. Bayes' rule on
    the odds, from the share the weights were calibrated on; first look and final alike."""
    import math
    samples = Path(__file__).resolve().parents[1] / "jobs" / "samples"
    inputs = [i for i in _inputs(samples) if i.uri.endswith(".jpg") and "broken" not in i.uri]
    base = run_chain(load_backend("compact"), inputs)
    share = load_backend("compact").model.meta["calib_generated_share"]
    assert 0.5 < share < 0.7  # v7's calib split: 238 generated of 388
    same = run_chain(load_backend("compact", prior=share), inputs)
    assert [r.score for r in same] == pytest.approx([r.score for r in base], abs=1e-9)
    low = run_chain(load_backend("compact", prior=0.02), inputs)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    shift = logit(0.02) - logit(share)
    for b, r in zip(base, low):
        assert r.status == b.status == "ok"
        assert logit(r.score) - logit(b.score) == pytest.approx(shift, abs=1e-6)
        assert logit(r.initial_score) - logit(b.initial_score) == pytest.approx(shift, abs=1e-6)
        assert r.verdict == ("generated" if r.score >= 0.5 else "real")
        for x, y in zip(r.boxes, b.boxes):   # region scores move by the same shift: the rule still holds
            assert logit(x.score) - logit(y.score) == pytest.approx(shift, abs=1e-6)
    assert sorted(range(len(base)), key=lambda i: base[i].score) == sorted(range(len(low)), key=lambda i: low[i].score)
    assert sum(r.verdict == "generated" for r in low) < sum(r.verdict == "generated" for r in base)


def test_prior_needs_weights_that_record_their_calibration_share():
    from zoomin_core.backends.compact import CompactBackend
    from zoomin_core.compact_model import CompactModel
    with pytest.raises(ValueError, match="share of generated images they were calibrated on"):
        CompactBackend(CompactModel.new({"version": "old"}), prior=0.1)
    with pytest.raises(ValueError, match="all of one label"):
        CompactBackend(CompactModel.new({"version": "reals", "calib_generated_share": 0.0}), prior=0.1)
    assert CompactBackend(CompactModel.new({"version": "old"})).shift == 0.0
