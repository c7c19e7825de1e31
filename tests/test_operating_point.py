"""Operating points: the threshold at a target false-positive rate and the escalation band
(hand-computed), `zoomin evaluate --target-fpr`, and which threshold a scan applies: --threshold,
even odds at --prior, the weights' archive point, in that order - recorded in every row."""
import json

import numpy as np
import pytest

from jobs.cli import main
from tests.test_evaluate import labelled  # noqa: F401  (fixture)
from zoomin_core import ImageInput, load_backend, run_chain
from zoomin_core.backends.compact import CompactBackend
from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel
from zoomin_core.evaluate import escalation_band, threshold_at_fpr
from tests.conftest import jpeg_bytes, textured

REALS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.95]
GENS = [0.15, 0.35, 0.55, 0.75, 0.85, 0.9, 0.92, 0.97, 0.98, 0.99]
Y = np.array([0] * 10 + [1] * 10)
S = np.array(REALS + GENS)


def test_threshold_at_a_false_positive_rate_by_hand():
    op = threshold_at_fpr(Y, S, 0.1)          # one real of ten may pass: 0.95; 0.8 must not
    assert 0.8 < op["threshold"] <= 0.8 + 1e-12
    assert op["fpr"] == pytest.approx(0.1) and op["recall"] == pytest.approx(0.6)   # 0.85 ... 0.99
    assert not op["reliable"]                 # 10 real images cannot measure a 10% rate well
    assert threshold_at_fpr(Y, S, 0.05)["threshold"] > 0.95   # none may pass
    assert threshold_at_fpr(np.ones(3), np.ones(3), 0.1)["threshold"] is None


def test_escalation_band_by_hand():
    b = escalation_band(Y, S, 0.1, 0.8)       # two of ten generated may be lost below `low`: 0.15, 0.35
    assert b["low"] == pytest.approx(0.55) and 0.8 < b["high"] <= 0.8 + 1e-12
    assert b["escalated"] == pytest.approx(5 / 20)    # 0.6, 0.7, 0.8 (real) and 0.55, 0.75
    assert b["recall_ceiling"] == pytest.approx(0.8)
    assert escalation_band(Y, S, 0.1, 0.5)["low"] <= escalation_band(Y, S, 0.1, 0.5)["high"]


def test_evaluate_prints_the_threshold_and_the_band(labelled, tmp_path, capsys):  # noqa: F811
    res, lab = labelled     # scored: generated 0.9, 0.65; real 0.2, 0.75
    out = tmp_path / "rep.json"
    assert main(["evaluate", str(res), "--labels", str(lab), "--target-fpr", "0.5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    op = json.loads(out.read_text())["operating_point"]
    assert 0.2 < op["threshold"] < 0.21 and op["fpr"] == 0.5 and op["recall"] == 1.0
    assert f"zoomin scan --threshold {op['threshold']:.4f}" in printed
    assert "label at least 10" in printed             # 2 real images cannot measure a rate of 0.5
    assert main(["evaluate", str(res), "--labels", str(lab), "--target-fpr", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def _inputs():
    return [ImageInput(f"t{i}.jpg", jpeg_bytes(textured(160, 120, seed=i))) for i in range(6)]


def test_the_scan_applies_the_operating_point_and_records_it():
    model = CompactModel.load(DEFAULT_WEIGHTS)
    model.meta["archive_threshold"] = 0.3
    base = run_chain(CompactBackend(model), _inputs())
    assert all(r.threshold == pytest.approx(0.3) for r in base)
    assert all(r.verdict == ("generated" if r.score >= 0.3 else "real") for r in base)
    assert all(r.initial_verdict == ("generated" if r.initial_score >= 0.3 else "real") for r in base)
    assert "the archive operating point" in base[0].rationale
    mid = sorted(r.score for r in base)[3]
    chosen = run_chain(CompactBackend(model, threshold=mid), _inputs())     # --threshold wins
    assert [r.score for r in chosen] == pytest.approx([r.score for r in base])
    assert [r.verdict for r in chosen] == ["generated" if r.score >= mid else "real" for r in chosen]
    assert all(r.threshold == pytest.approx(mid) for r in chosen) and "--threshold" in chosen[0].rationale
    at_prior = run_chain(CompactBackend(model, prior=0.1), _inputs())       # --prior alone: even odds
    assert all(r.threshold == 0.5 and r.verdict == ("generated" if r.score >= 0.5 else "real") for r in at_prior)
    fake = run_chain(load_backend("fake", threshold=0.9), _inputs())
    assert all(r.threshold == 0.9 and r.verdict == ("generated" if r.score >= 0.9 else "real") for r in fake)
