"""Faults inside the job: a model actor that dies, images that crash the model, bad inputs at scale."""
import io
import random

import pytest
from PIL import Image

from jobs.pipeline import JobConfig
from jobs.scan import RayConfig, run_scan
from jobs.sinks import read_results
from tests.conftest import BAD_INPUTS, write_bad_inputs

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _small_jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24 + i % 9, 20), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(buf, "JPEG")
    return buf.getvalue()


def test_dead_actor_is_replaced_and_its_batch_retried(ray_local, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"{i:03d}.jpg").write_bytes(_small_jpeg(i))
    marker = tmp_path / "crashed-once"
    cfg = JobConfig(backend="fake", backend_options={"crash_once_marker": str(marker)})
    s = run_scan(str(src), str(tmp_path / "out"), cfg, RayConfig(progress=False, batch_size=4))
    assert marker.exists()  # an actor really died
    assert s.complete and s.rows == 40 and s.by_status == {"ok": 40}
    assert len(set(read_results(tmp_path / "out").column("uri").to_pylist())) == 40


def test_ten_thousand_images_five_percent_corrupt(ray_local, tmp_path):
    """10,000 inputs, 500 of them the foundation's bad kinds mixed in: exactly 500 error rows
    of the right kinds, every other image scored."""
    src = tmp_path / "src"
    src.mkdir()
    bad_dir = tmp_path / "kinds"
    expected_by_name = write_bad_inputs(bad_dir)
    bad_kinds = [n for n, st in BAD_INPUTS.items() if st != "ok"]
    rng = random.Random(0)
    expected = {}
    for i in range(10_000):
        name = f"{i:05d}"
        if i % 20 == 7:  # 5%
            kind = rng.choice(bad_kinds)
            (src / f"{name}_{kind}").write_bytes((bad_dir / kind).read_bytes())
            expected[f"{name}_{kind}"] = expected_by_name[kind]
        else:
            (src / f"{name}.jpg").write_bytes(_small_jpeg(i))
            expected[f"{name}.jpg"] = "ok"
    s = run_scan(str(src), str(tmp_path / "out"), JobConfig(backend="fake", examine=_scan_only()),
                 RayConfig(progress=False, batch_size=64), rows_per_file=2000)
    assert s.complete and s.rows == 10_000
    rows = read_results(tmp_path / "out", ["uri", "status"]).to_pylist()
    got = {r["uri"].rsplit("/", 1)[-1]: r["status"] for r in rows}
    assert got == expected
    assert sum(st != "ok" for st in got.values()) == 500


def _scan_only():
    from zoomin_core.stages import ExamineConfig
    return ExamineConfig(stages="scan")


@pytest.mark.parametrize("split", [False, True])
def test_identical_bytes_under_different_keys_are_scored_once(ray_local, tmp_path, split):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.jpg").write_bytes(_small_jpeg(i))
    for name in ("copy_a.jpg", "sub_copy_b.jpg", "zz_copy_c.jpg"):
        (src / name).write_bytes(_small_jpeg(3))
    s = run_scan(str(src), str(tmp_path / "out"), JobConfig(backend="fake"),
                 RayConfig(progress=False, split_stages=split))
    assert s.complete and s.rows == 8 and s.copies == 3
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in read_results(tmp_path / "out").to_pylist()}
    group = [rows[n] for n in ("3.jpg", "copy_a.jpg", "sub_copy_b.jpg", "zz_copy_c.jpg")]
    assert len({r["image_id"] for r in group}) == 1
    assert all((r["verdict"], r["score"], r["boxes"], r["rationale"]) ==
               (group[0]["verdict"], group[0]["score"], group[0]["boxes"], group[0]["rationale"]) for r in group)
    assert sum(r["scan_s"] == 0.0 for r in group) == 3  # examined once, shared three times


def test_copies_spread_over_batches_and_actors_are_scored_once(ray_local, tmp_path):
    """Two actors, two images per batch: copies of one image land in different batches and
    actors, and still only one of them is examined (the others wait for its row)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):
        (src / f"{i:02d}.jpg").write_bytes(_small_jpeg(i))
    for i in (1, 7, 12, 18, 23):   # copies of 05.jpg placed between the others in key order
        (src / f"{i:02d}_copy.jpg").write_bytes(_small_jpeg(5))
    for i in (3, 20):              # copies of 11.jpg
        (src / f"{i:02d}_copy2.jpg").write_bytes(_small_jpeg(11))
    s = run_scan(str(src), str(tmp_path / "out"), JobConfig(backend="fake"),
                 RayConfig(progress=False, actors=2, actor_cpus=0.5, batch_size=2))
    assert s.complete and s.rows == 31 and s.copies == 7
    rows = read_results(tmp_path / "out").to_pylist()
    for original in ("05.jpg", "11.jpg"):
        image_id = next(r["image_id"] for r in rows if r["uri"].endswith("/" + original))
        group = [r for r in rows if r["image_id"] == image_id]
        assert len({(r["verdict"], r["score"]) for r in group}) == 1
        assert sum(r["scan_s"] > 0 for r in group) == 1, [(r["uri"], r["scan_s"]) for r in group]


@pytest.mark.parametrize("split", [False, True])
def test_an_image_that_kills_the_model_process_is_isolated(ray_local, tmp_path, split):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        buf = io.BytesIO()
        Image.new("RGB", (30, 24), (20 + i, 30, 40)).save(buf, "JPEG")
        (src / f"dark_{i:02d}.jpg").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.new("RGB", (30, 24), (250, 250, 250)).save(buf, "JPEG")
    (src / "poison.jpg").write_bytes(buf.getvalue())
    cfg = JobConfig(backend="fake", backend_options={"crash_on_mean_above": 0.9})
    s = run_scan(str(src), str(tmp_path / "out"), cfg, RayConfig(progress=False, batch_size=4, split_stages=split))
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in read_results(tmp_path / "out").to_pylist()}
    assert s.complete and len(rows) == 13
    assert rows["poison.jpg"]["status"] == "model_error" and "died" in rows["poison.jpg"]["error"]
    assert all(r["status"] == "ok" for n, r in rows.items() if n != "poison.jpg")


def test_an_input_that_kills_the_decoding_actor_is_isolated(ray_local, tmp_path):
    """Actors that decode their own images (CPU plans): a decoder crash kills the actor; the
    restarted actor decodes that batch one input at a time and gives the culprit its own row."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"img_{i:02d}.jpg").write_bytes(_small_jpeg(i))
    (src / "crashes_decoder.jpg").write_bytes(_small_jpeg(99))
    cfg = JobConfig(backend="fake", backend_options={"crash_decoding": "crashes_decoder"})
    s = run_scan(str(src), str(tmp_path / "out"), cfg, RayConfig(progress=False, batch_size=4, decode="actors"))
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in read_results(tmp_path / "out").to_pylist()}
    assert s.complete and len(rows) == 13
    bad = rows["crashes_decoder.jpg"]
    assert bad["status"] == "decode_error" and "died while decoding" in bad["error"]
    assert all(r["status"] == "ok" for n, r in rows.items() if n != "crashes_decoder.jpg")


def test_a_stalled_pipeline_is_stopped_and_what_is_missing_run_again(ray_local, tmp_path, monkeypatch):
    """A model call that never returns after a node was lost (as Ray Data's lost read task
    does): the watchdog stops the attempt, and a second one finishes exactly the missing rows."""
    import jobs.watchdog
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"{i:02d}.jpg").write_bytes(_small_jpeg(i))
    looks = {"n": 0}

    def alive():  # the cluster loses a node at every look: each attempt sees a lost node
        looks["n"] += 1
        return {f"node-{k}" for k in range(looks["n"], 10_000)}

    monkeypatch.setattr(jobs.watchdog, "alive_nodes", alive)
    marker = tmp_path / "hung-once"
    cfg = JobConfig(backend="fake", backend_options={"hang_once_marker": str(marker)})
    s = run_scan(str(src), str(tmp_path / "out"), cfg,
                 # 30 s: a healthy attempt whose actors start slowly on a loaded machine must not
                 # look stalled (10 s tripped every attempt while a training job shared the cores)
                 RayConfig(progress=False, batch_size=4, stall_s=30, max_restarts=4), rows_per_file=4)
    assert marker.exists()
    assert any("restarting" in n for n in s.notes), s.notes
    assert s.complete and s.rows == 30 and s.by_status == {"ok": 30}
