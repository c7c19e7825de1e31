"""Do several training runs do better together? Average their scores over the same images.

    python benchmarks/ensemble.py RESULTS RESULTS [RESULTS ...] --labels LABELS [--split S]

Each RESULTS is a `zoomin scan` output over the same images (or a `scan_zoom` folder written by
quality.py), made with weights from training runs that differ only in their seed. Prints, for
each run alone and for the mean of their scores (verdict: generated when the mean is >= 0.5),
what `zoomin evaluate` reports of scores and verdicts: ROC-AUC, accuracy, ECE, and accuracy per
kind (real / whole / regional). Boxes are not combined, so there are no box metrics here.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from jobs.evaluate import join, read_labels  # noqa: E402
from jobs.sinks import read_results  # noqa: E402
from zoomin_core.evaluate import report  # noqa: E402
from zoomin_core.records import GENERATED, REAL  # noqa: E402


def mean_items(runs: list[list]) -> list:
    """One item per image: the first run's, with the mean score of all runs and its verdict.
    Images some run could not score (an error row) are left unscored, as evaluate does."""
    out = []
    for group in zip(*runs):
        if any(it.status != "ok" or it.score is None for it in group):
            out.append(replace(group[0], status="error", score=None, verdict=None))
            continue
        s = float(np.mean([it.score for it in group]))
        out.append(replace(group[0], score=s, verdict=GENERATED if s >= 0.5 else REAL, boxes=()))
    return out


def line(name: str, rep: dict) -> str:
    m, kinds = rep["overall"], rep.get("kind", {})
    per_kind = "  ".join(f"{k} {kinds[k]['accuracy']:.3f}" for k in ("real", "whole", "regional") if k in kinds)
    return (f"  {name:40s} ROC-AUC {m['roc_auc']:.3f}  accuracy {m['accuracy']:.3f}  ECE {m['ece']:.3f}  "
            f"({per_kind})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="result folders of the same images")
    ap.add_argument("--labels", required=True, help="labels.jsonl (as for zoomin evaluate)")
    ap.add_argument("--split", default=None, help="only the labels of this split")
    a = ap.parse_args()
    if len(a.results) < 2:
        ap.error("give at least two result folders")
    labels = read_labels(a.labels)
    if a.split:
        labels = [r for r in labels if r.get("split") == a.split]
    runs = []
    for path in a.results:
        items, missing = join(read_results(path).to_pylist(), labels)
        if missing:
            sys.exit(f"{path}: {missing} label(s) have no result row; the runs must cover the same images")
        runs.append(items)
    print(f"{len(labels)} labelled images, {len(runs)} runs:")
    for path, items in zip(a.results, runs):
        print(line(path, report(items)))
    print(line(f"mean score of the {len(runs)} runs", report(mean_items(runs))))


if __name__ == "__main__":
    main()
