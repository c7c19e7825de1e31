"""`zoomin evaluate` on a small hand-made results file gives the metrics computed by hand."""
import json

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from zoomin_core.evaluate import Item, ece, ece_floor, metrics, roc_auc
from zoomin_core.records import Box, ResultRow
from zoomin_core.schema import rows_to_table

import numpy as np


def _row(uri, status="ok", score=None, verdict=None, initial=None, boxes=()):
    return ResultRow(image_id=uri, uri=uri, status=status, error=None if status == "ok" else "bad",
                     width=100, height=100, verdict=verdict, score=score, initial_verdict=initial,
                     initial_score=None, boxes=tuple(Box(*b, 0.5) for b in boxes))


@pytest.fixture
def labelled(tmp_path):
    """Five images. By hand, over the four scored ones (labels 1, 1, 0, 0; verdicts G, G, R, G;
    first verdicts R, G, R, G; scores 0.9, 0.65, 0.2, 0.75):
      accuracy 3/4, first accuracy 2/4, precision 2/3, recall 1, F1 0.8,
      ROC-AUC 3/4 (0.65 < 0.75 is the one misordered pair), flip rate 1/4,
      ECE = (0.1 + 0.35 + 0.2 + 0.75) / 4 = 0.35 (each score alone in its bin),
      boxes of the regional fake: IoUs 1.0 and 0.0 -> mean 0.5; its one region found -> recall 1.
    """
    img = tmp_path / "imgs"
    rows = [
        _row(str(img / "a.jpg"), score=0.9, verdict="generated", initial="real",
             boxes=[(0, 0, 10, 10), (50, 50, 60, 60)]),
        _row(str(img / "b.jpg"), score=0.65, verdict="generated", initial="generated", boxes=[(0, 0, 100, 100)]),
        _row(str(img / "c.jpg"), score=0.2, verdict="real", initial="real"),
        _row(str(img / "d.jpg"), score=0.75, verdict="generated", initial="generated"),
        _row(str(img / "e.jpg"), status="decode_error"),
    ]
    res = tmp_path / "results"
    res.mkdir()
    pq.write_table(rows_to_table(rows), res / "part-0.parquet")
    labels = [
        {"file": "imgs/a.jpg", "label": "generated", "kind": "regional", "source": "fam1", "split": "test",
         "boxes": [[0, 0, 10, 10]]},
        {"file": "imgs/b.jpg", "label": "generated", "kind": "whole", "source": "fam2", "split": "holdout",
         "boxes": [[0, 0, 100, 100]]},
        {"file": "imgs/c.jpg", "label": "real", "kind": "real", "source": "real", "split": "test"},
        {"file": "imgs/d.jpg", "label": "real", "kind": "real", "source": "real", "split": "holdout"},
        {"file": "imgs/e.jpg", "label": "real", "kind": "real", "source": "real"},
        {"file": "imgs/missing.jpg", "label": "real"},
    ]
    lab = tmp_path / "labels.jsonl"
    lab.write_text("".join(json.dumps(r) + "\n" for r in labels))
    return res, lab


def test_evaluate_cli_matches_hand_computed(labelled, tmp_path, capsys):
    res, lab = labelled
    out = tmp_path / "rep.json"
    assert main(["evaluate", str(res), "--labels", str(lab), "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    m = rep["overall"]
    assert m["images"] == 5 and m["errors"] == 1
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["first_accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(0.8)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["ece"] == pytest.approx(0.35)
    assert m["flip_rate"] == pytest.approx(0.25)
    assert m["mean_iou"] == pytest.approx(0.5) and m["region_recall"] == pytest.approx(1.0)
    assert m["regional_images"] == 1
    assert rep["unmatched_labels"] == 1
    assert rep["kind"]["real"]["accuracy"] == pytest.approx(0.5)
    assert rep["source"]["fam1"]["accuracy"] == pytest.approx(1.0)
    # per split: test holds a (0.9, generated) and c (0.2, real); holdout b (0.65) and d (0.75, a real)
    assert rep["split"]["test"]["accuracy"] == pytest.approx(1.0) and rep["split"]["test"]["roc_auc"] == 1.0
    assert rep["split"]["holdout"]["accuracy"] == pytest.approx(0.5) and rep["split"]["holdout"]["roc_auc"] == 0.0
    assert set(rep["split"]) == {"test", "holdout"}  # e.g. the label without a split is in no group
    printed = capsys.readouterr().out
    assert "overall" in printed and "kind=regional" in printed and "split=holdout" in printed
    assert "1 label(s) had no result row" in printed


def _overall(res, labels, text: str) -> dict:
    """Labels written to `labels`, evaluated against `res`: the report's overall figures."""
    labels.write_text(text)
    out = labels.with_suffix(".report.json")
    assert main(["evaluate", str(res), "--labels", str(labels), "--json", str(out)]) == 0
    return json.loads(out.read_text())["overall"]


def test_csv_labels_and_bad_labels(labelled, tmp_path, capsys):
    res, _ = labelled
    m = _overall(res, tmp_path / "l.csv",
                 'file,label,kind,boxes\nimgs/a.jpg,generated,regional,"[[0, 0, 10, 10]]"\nimgs/c.jpg,real,real,\n')
    assert m["accuracy"] == 1.0 and m["region_recall"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "imgs/a.jpg", "label": "maybe"}\n')
    assert main(["evaluate", str(res), "--labels", str(bad)]) == 2
    assert "label must be" in capsys.readouterr().err


def test_labels_as_teams_write_them(labelled, tmp_path, capsys):
    """A spreadsheet export (BOM, tabs, 0/1 or fake/REAL labels) reads like the JSONL; a broken
    file is an error naming its line, never a traceback."""
    res, _ = labelled
    m = _overall(res, tmp_path / "l.tsv",
                 "\ufefffile\tlabel\nimgs/a.jpg\t1\nimgs/b.jpg\tFake\nimgs/c.jpg\tREAL\nimgs/d.jpg\t0\n")
    assert m["images"] == 4 and m["accuracy"] == pytest.approx(0.75) and m["roc_auc"] == pytest.approx(0.75)
    cases = {
        "broken.jsonl": ('{"file": "imgs/a.jpg", "label": "real"}\n{"file": "imgs/b.jpg", label\n', "line 2: not JSON"),
        "list.jsonl": ('["imgs/a.jpg", "real"]\n', "line 1: expected a JSON object"),
        "boxes.jsonl": ('{"file": "imgs/a.jpg", "label": "generated", "boxes": [1, 2, 3, 4]}\n', "line 1: 'boxes' must be"),
        "nofile.csv": ("name,label\na.jpg,real\n", "row 2: every label needs 'file' or 'uri'"),
        "empty.jsonl": ("\n", "no labels in it"),
    }
    for name, (text, said) in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["evaluate", str(res), "--labels", str(tmp_path / name)]) == 2, name
        assert said in capsys.readouterr().err, name
    (tmp_path / "photo.jsonl").write_bytes(b"\xff\xd8\xff\xe0 not text")
    assert main(["evaluate", str(res), "--labels", str(tmp_path / "photo.jsonl")]) == 2
    assert "not a UTF-8 text file" in capsys.readouterr().err


def test_auc_and_ece_edge_cases():
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5
    assert ece(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0
    assert metrics([Item(label=1, status="decode_error")]) == {"images": 1, "errors": 1}


def test_ece_floor_is_what_a_calibrated_model_scores_at_that_size():
    rng = np.random.default_rng(1)
    small, large = rng.random(150), rng.random(15000)
    f_small, f_large = ece_floor(small), ece_floor(large)
    # Binned ECE of labels drawn from the scores themselves: biased upwards on a small set,
    # shrinking about as 1/sqrt(n).
    assert 0.03 < f_small < 0.12 and f_large < f_small / 5
    # A calibrated model's own ECE on a fresh draw lands near its floor; a shifted one does not.
    y = (rng.random(150) < small).astype(float)
    assert abs(ece(y, small) - f_small) < 0.06
    assert ece(y, np.clip(small + 0.3, 0, 1)) > 2 * f_small
    assert ece_floor(np.array([0.0, 1.0, 1.0])) == 0.0      # certain scores: no sampling error
    assert ece_floor(np.array([])) is None
    assert metrics([Item(label=1, status="ok", score=0.7, verdict="generated", initial_verdict="generated")])["ece_floor"] > 0
