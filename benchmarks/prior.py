"""What `zoomin scan --prior P` changes: verdicts and their precision at other shares of generated images.

    python benchmarks/prior.py RESULTS --labels LABELS [--split holdout] [--priors 0.3,0.1,0.05,0.02]

RESULTS: a `zoomin scan` of labelled images with the compact backend and no --prior. --prior P
moves every score's log-odds by logit(P) - logit(share), where share is the share of generated
images in the split the weights were calibrated on; a verdict at P is therefore the verdict of
the unmoved score against the threshold sigmoid(logit(share) - logit(P)) (tests/test_stages.py
checks that identity on the backend itself). For each P this prints that threshold, how many
real and generated images of the set get which verdict, and the precision those rates give in
an archive where a share P of the images is generated (the set's own mix is not an archive's).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.evaluate import join, read_labels  # noqa: E402
from jobs.sinks import read_results  # noqa: E402
from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel, logit  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a `zoomin scan --out` folder (compact backend, no --prior)")
    ap.add_argument("--labels", required=True, help="labels of the scanned images (as for `zoomin evaluate`)")
    ap.add_argument("--split", default=None, help="only labels of this split")
    ap.add_argument("--model", default=None, help="the weights the scan used (default: the bundled ones)")
    ap.add_argument("--priors", default="0.3,0.1,0.05,0.02", help="shares of generated images to compare")
    a = ap.parse_args()
    run = json.loads((Path(a.results) / "_run.json").read_text())
    if run.get("job", {}).get("prior") is not None:
        print("prior.py: the scan already used --prior; scan again without it", file=sys.stderr)
        return 2
    share = CompactModel.load(a.model or DEFAULT_WEIGHTS).meta["calib_generated_share"]
    labels = [r for r in read_labels(a.labels) if a.split is None or r.get("split") == a.split]
    items, missing = join(read_results(a.results, require=True).to_pylist(), labels)
    items = [it for it in items if it.status == "ok"]
    real = [it.score for it in items if not it.label]
    kinds = sorted({it.kind for it in items if it.label})
    print(f"{len(items)} images ({len(real)} real; {missing} labels without a row); the weights were "
          f"calibrated at a share of {share:.3f} generated")
    head = ["prior", "threshold", "real called real"] + [f"{k} called generated" for k in kinds]
    print(" | ".join(head) + " | precision at that prior")
    for prior in [share] + [float(p) for p in a.priors.split(",")]:
        t = 1 / (1 + math.exp(-(logit(share, 1e-9) - logit(prior, 1e-9))))
        fpr = sum(s >= t for s in real) / len(real)
        gen = [it for it in items if it.label]
        tpr = sum(it.score >= t for it in gen) / len(gen)
        per_kind = [sum(it.score >= t for it in gen if it.kind == k) / sum(it.kind == k for it in gen) for k in kinds]
        # With no real image flagged, the set cannot tell the precision, only that it is high.
        precision = (f"{prior * tpr / (prior * tpr + (1 - prior) * fpr):.3f}" if fpr else
                     f"- (none of {len(real)} real images flagged)")
        print(" | ".join([f"{prior:.3f}", f"{t:.3f}", f"{1 - fpr:.3f}"] + [f"{v:.3f}" for v in per_kind])
              + f" | {precision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
