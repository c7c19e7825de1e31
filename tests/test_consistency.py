"""The self-consistency check: its map, its weights file, its training, and its place in the chain."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import jpeg_bytes, textured
from jobs.cli import main
from jobs.sinks import read_results
from jobs.sources import SAMPLES_DIR
from zoomin_core import ExamineConfig, ImageInput, load_backend, run_chain
from zoomin_core.compact_model import DEFAULT_WEIGHTS
from zoomin_core.consistency import DEFAULT_CONSISTENCY, PATCH, ConsistencyModel, peak_box
from zoomin_core.consistency_train import train_consistency
from zoomin_core.decode import decode_full
from zoomin_core.pseudo import alter
from zoomin_core.records import Box
from zoomin_core.synth import encode_jpeg, package_photos


def _random_cue(seed: int = 0) -> ConsistencyModel:
    import torch
    torch.manual_seed(seed)
    return ConsistencyModel().eval()


def test_map_is_per_block_deterministic_and_none_for_tiny_images():
    cue = _random_cue()
    img = textured(700, 450)
    m = cue.anomaly_map(img)
    assert m.shape == (450 // PATCH, 700 // PATCH) and np.all((m >= 0) & (m <= 1))
    assert np.array_equal(m, cue.anomaly_map(img))          # same image, same map
    assert cue.anomaly_map(textured(120, 120)) is None       # under 4 blocks: no judgement
    assert cue.propose(textured(120, 120)) == (None, None)
    score, box = cue.propose(img)
    assert score == pytest.approx(float(m.max()))
    assert 0 <= box.x1 < box.x2 <= 700 and 0 <= box.y1 < box.y2 <= 450
    assert box.x1 % PATCH == 0 and box.y1 % PATCH == 0


def test_map_of_a_huge_image_is_made_in_chunks():
    cue = _random_cue()
    img = textured(64 * 40, 64 * 20)   # 800 blocks: several chunks of blocks and of pairs
    m = cue.anomaly_map(img)
    assert m.shape == (20, 40) and np.isfinite(m).all()


def test_peak_box_takes_the_connected_blocks_around_the_peak():
    m = np.full((6, 8), 0.1)
    m[2:4, 5:8] = 0.8
    m[3, 6] = 0.9
    m[0, 0] = 0.7   # high too, but not connected to the peak
    assert peak_box(m, 0.5) == (5, 2, 8, 4)
    assert peak_box(m, 0.95) == (6, 3, 7, 4)


def test_weights_round_trip_and_refusals(tmp_path):
    cue = _random_cue()
    cue.meta = {"version": "t1", "box": {"relative": 0.7}}
    cue.save(tmp_path / "c.safetensors")
    back = ConsistencyModel.load(tmp_path / "c.safetensors")
    img = textured(500, 400)
    assert back.version == "t1" and np.allclose(back.anomaly_map(img), cue.anomaly_map(img))
    with pytest.raises(FileNotFoundError, match="train-consistency"):
        ConsistencyModel.load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not a consistency check"):
        ConsistencyModel.load(DEFAULT_WEIGHTS)   # the detector's weights


def test_training_on_real_photos_writes_usable_weights(tmp_path):
    photos = [p for p in package_photos().values() if min(p.shape[:2]) >= 300][:6]
    model = train_consistency(photos, steps=12, images=10, batch=16, fit_images=6, version="tiny")
    assert model.meta["version"] == "tiny" and model.meta["steps"] == 12 and model.meta["altered_images"] == 10
    assert model.meta["box"]["relative"] in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    assert 0 <= model.meta["box"]["peak_in_region"] <= 1
    fresh = _random_cue(1)
    trained = dict(model.embed.named_parameters())
    assert any(not np.allclose(p.detach(), trained[k].detach()) for k, p in fresh.embed.named_parameters())
    model.save(tmp_path / "w.safetensors")
    assert ConsistencyModel.load(tmp_path / "w.safetensors").propose(photos[0])[0] is not None
    with pytest.raises(ValueError, match="altered images could be made"):
        train_consistency([textured(100, 100)], steps=1, images=10)
    with pytest.raises(ValueError, match="--images must be at least 10"):
        train_consistency(photos, steps=1, images=5)
    # 1-2 steps: a constant rate (torch's one-cycle schedule divides by zero there)
    assert train_consistency(photos, steps=2, images=10, batch=8, fit_images=4).meta["steps"] == 2


def _planted(photo: np.ndarray, op: str, seed: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`photo` with one region of about 4% of its area altered by `op`, JPEG 92 like the set."""
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    side = int((0.04 * h * w) ** 0.5)
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    out = photo.copy()
    out[y:y + side, x:x + side] = alter(np.ascontiguousarray(photo[y:y + side, x:x + side]), op, rng)
    return decode_full(encode_jpeg(out, 92)), (x, y, x + side, y + side)


def _mirrored(photo: np.ndarray) -> np.ndarray:
    """A packaged photo (under 700 px) as a 2x2 mirror tiling: an image of about 1000 px, the size
    the check is made for, without resampling (which would leave traces of its own)."""
    top = np.concatenate([photo, photo[:, ::-1]], 1)
    return np.concatenate([top, top[::-1]], 0)


def test_shipped_weights_find_a_region_that_went_through_another_process():
    # rocket and flower: photos the check's training never used (calib-only and holdout photos).
    cue = ConsistencyModel.load(DEFAULT_CONSISTENCY)
    photos = package_photos()
    hits = above = 0
    cases = [(name, op) for name in ("rocket", "flower") for op in ("resample", "noise", "blur", "median")]
    for name, op in cases:
        photo = _mirrored(photos[name])
        real_score = cue.propose(decode_full(encode_jpeg(photo, 92)))[0]
        fake, (x1, y1, x2, y2) = _planted(photo, op, 1)
        m = cue.anomaly_map(fake)
        i, j = np.unravel_index(int(np.argmax(m)), m.shape)
        hits += x1 <= (j + 0.5) * PATCH < x2 and y1 <= (i + 0.5) * PATCH < y2
        above += float(m.max()) > real_score
    assert hits >= 6 and above >= 6, (hits, above, len(cases))


def test_chain_adds_the_checks_region_and_score(tmp_path):
    cue = _random_cue()
    inputs = [ImageInput("big", jpeg_bytes(textured(900, 600))), ImageInput("tiny", jpeg_bytes(textured(100, 90))),
              ImageInput("broken", b"\xff\xd8\xff\xe0 not a jpeg")]
    rows = run_chain(load_backend("fake"), inputs, ExamineConfig(consistency="w"), cue)
    big, tiny, broken = rows
    assert big.status == "ok" and big.consistency is not None and 0 <= big.consistency <= 1
    plain = run_chain(load_backend("fake"), inputs[:1])[0]
    assert plain.consistency is None
    if len(big.boxes) == len(plain.boxes) + 1:   # added unless a scan box already covers it
        assert "self-consistency check" in big.rationale
    else:
        assert len(big.boxes) == len(plain.boxes)
    assert tiny.status == "ok" and tiny.consistency is None    # too small to judge: the verdict stands
    assert broken.status != "ok" and broken.consistency is None


class _FixedCue:
    """A check that always points at the top-left 128 px (the fake backend's scan box of a
    `textured` image is its brightest quadrant, bottom-right)."""

    def propose(self, pixels):
        return 0.9, Box(0, 0, 128, 128, 0.9)


def test_chain_zooms_into_the_checks_region_and_says_so():
    inputs = [ImageInput("a", jpeg_bytes(textured(600, 400)))]
    (row,) = run_chain(load_backend("fake"), inputs, ExamineConfig(consistency="w"), _FixedCue())
    assert row.consistency == pytest.approx(0.9) and len(row.boxes) == 2
    assert (row.boxes[1].x1, row.boxes[1].y1, row.boxes[1].x2, row.boxes[1].y2) == (0, 0, 128, 128)
    assert row.boxes[1].score != pytest.approx(0.9)             # the zoom's judgement replaced the check's
    assert "Region 2 (0,0)-(128,128) was added by the self-consistency check" in row.rationale
    assert f"the zoom scored it {row.boxes[1].score:.2f}" in row.rationale

    backend = load_backend("fake")
    plain_zoom = backend.zoom
    backend.zoom = lambda items: [replace(v, region_scores=()) for v in plain_zoom(items)]   # as a vlm may
    (row,) = run_chain(backend, inputs, ExamineConfig(consistency="w"), _FixedCue())
    assert "added by the self-consistency check" in row.rationale and "the zoom scored it" not in row.rationale


def test_chain_turns_a_failing_check_into_that_images_row():
    class Broken:
        def propose(self, pixels):
            raise RuntimeError("boom")
    inputs = [ImageInput("a", jpeg_bytes(textured(400, 300)))]
    (row,) = run_chain(load_backend("fake"), inputs, ExamineConfig(consistency="w"), Broken())
    assert row.status == "model_error" and "consistency check failed: boom" in row.error


def test_check_needs_the_zoom_stage():
    with pytest.raises(ValueError, match="needs --stages scan,zoom"):
        ExamineConfig(stages="scan", consistency="w")


def test_cli_refuses_missing_or_wrong_weights(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["scan", "--out", str(out), "--consistency", str(tmp_path / "nope.safetensors")]) == 2
    assert "consistency weights not found" in capsys.readouterr().err
    assert main(["scan", "--out", str(out), "--consistency", str(DEFAULT_WEIGHTS)]) == 2
    assert "not a consistency check" in capsys.readouterr().err
    assert main(["scan", "--out", str(out), "--consistency", "--stages", "scan"]) == 2
    assert "needs --stages scan,zoom" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_job_with_the_check_in_one_pool_and_in_split_stages(ray_local, tmp_path):
    rows = {}
    for split in ("off", "on"):
        out = tmp_path / split
        assert main(["scan", str(SAMPLES_DIR), "--out", str(out), "--no-progress", "--consistency",
                     "--split-stages", split]) == 0
        t = read_results(str(out)).to_pylist()
        assert len(t) == len(list(Path(SAMPLES_DIR).iterdir()))
        assert all((r["consistency"] is not None) == (r["status"] == "ok") for r in t)
        rows[split] = {r["uri"]: r for r in t}
    assert rows["off"].keys() == rows["on"].keys()
    for uri, a in rows["off"].items():   # the check ran in the actor (off) and in the crop tasks (on)
        b = rows["on"][uri]
        assert (a["status"], a["verdict"], len(a["boxes"])) == (b["status"], b["verdict"], len(b["boxes"]))
        assert a["consistency"] == pytest.approx(b["consistency"], abs=1e-4) if a["consistency"] else True


@pytest.mark.slow
def test_job_with_the_check_gives_bad_inputs_their_own_rows(ray_local, bad_inputs, tmp_path):
    folder, expected = bad_inputs
    out = tmp_path / "res"
    assert main(["scan", str(folder), "--out", str(out), "--no-progress", "--consistency", "--split-stages", "on",
                 "--batch-size", "3"]) == 0
    rows = read_results(str(out)).to_pylist()
    assert sorted(Path(r["uri"]).name for r in rows) == sorted(expected)
    for r in rows:
        assert r["status"] == expected[Path(r["uri"]).name], (r["uri"], r["error"])
        if r["status"] != "ok":
            assert r["consistency"] is None and r["error"]


def test_train_consistency_refuses_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not an image")
    out = str(tmp_path / "w.safetensors")
    assert main(["train-consistency", "--out", out]) == 2
    assert "give LABELS and/or --real" in capsys.readouterr().err
    assert main(["train-consistency", "--real", str(tmp_path / "nope"), "--out", out]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["train-consistency", "--real", str(tmp_path / "empty"), "--real", str(tmp_path / "notes"),
                 "--out", out, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "skipped 1 file(s)" in err and "no readable real photos" in err
    assert main(["train-consistency", "--real", str(tmp_path / "notes"), "--out", out, "--device", "cuda:7"]) == 2
    assert not (tmp_path / "w.safetensors").exists()
