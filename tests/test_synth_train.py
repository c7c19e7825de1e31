"""The synthetic set's ground truth, and `zoomin synth` + `zoomin train` end to end (tiny)."""
import json

import numpy as np
import pytest

from jobs.cli import main
from zoomin_core import ImageInput, load_backend, run_chain
from zoomin_core.synth import RegenAE, SynthConfig, _random_view, make_sample, package_photos


@pytest.fixture(scope="module")
def photo():
    return package_photos()["astronaut"]


@pytest.fixture(scope="module")
def generator():
    import torch
    torch.manual_seed(0)
    return RegenAE().eval()  # untrained is fine: it changes pixels, which is what is checked


def test_package_photos_are_available_offline():
    photos = package_photos()
    assert {"astronaut", "coffee", "china"} <= set(photos)
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in photos.values())


def test_regional_fake_changes_only_inside_its_boxes(photo, generator):
    cfg = SynthConfig()
    base = _random_view(photo, np.random.default_rng(5), cfg.min_side)
    out, boxes = make_sample(photo, "regional", generator, np.random.default_rng(5), cfg)
    assert out.shape == base.shape and 1 <= len(boxes) <= 3
    inside = np.zeros(base.shape[:2], bool)
    h, w = base.shape[:2]
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        area = (x2 - x1) * (y2 - y1) / (h * w)
        assert cfg.region_area[0] * 0.5 <= area <= cfg.region_area[1] * 1.5
        inside[y1:y2, x1:x2] = True
        assert np.abs(out[y1:y2, x1:x2].astype(int) - base[y1:y2, x1:x2]).mean() > 1.0
    assert np.array_equal(out[~inside], base[~inside])


def test_real_sample_is_untouched_and_whole_fake_covers_everything(photo, generator):
    cfg = SynthConfig()
    base = _random_view(photo, np.random.default_rng(9), cfg.min_side)
    real, no_boxes = make_sample(photo, "real", generator, np.random.default_rng(9), cfg)
    assert np.array_equal(real, base) and no_boxes == []
    whole, boxes = make_sample(photo, "whole", generator, np.random.default_rng(9), cfg)
    assert boxes == [[0, 0, base.shape[1], base.shape[0]]]
    assert not np.array_equal(whole, base)


@pytest.mark.slow
def test_synth_then_train_then_scan(tmp_path):
    data = tmp_path / "synth"
    assert main(["synth", "--out", str(data), "--count", "24", "--generator-steps", "30"]) == 0
    records = [json.loads(line) for line in (data / "labels.jsonl").read_text().splitlines()]
    assert len(records) == 24 and {r["kind"] for r in records} == {"real", "whole", "regional"}
    assert all((data / r["file"]).read_bytes()[:2] == b"\xff\xd8" for r in records)  # one encoding: JPEG
    weights = tmp_path / "w.safetensors"
    assert main(["train", str(data / "labels.jsonl"), "--out", str(weights), "--version", "t1",
                 "--scan-steps", "3", "--zoom-steps", "3"]) == 0
    backend = load_backend("compact", str(weights))
    assert backend.model_id == "compact/t1"
    assert backend.model.meta["fusion"] and backend.model.meta["scan_calibration"]
    rows = run_chain(backend, [ImageInput(r["file"], (data / r["file"]).read_bytes()) for r in records[:3]])
    assert all(r.status == "ok" and 0 <= r.score <= 1 for r in rows)
