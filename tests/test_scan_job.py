"""The `zoomin scan` job through a real local Ray cluster (2 CPUs, as in CI)."""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from jobs.sinks import RUN_RECORD, read_results
from jobs.sources import SAMPLES_DIR, plan_source
from zoomin_core.schema import RESULT_SCHEMA

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _check_output(out: Path, n_inputs: int):
    files = sorted(out.rglob("*.parquet"))
    assert files
    for f in files:  # every file carries exactly the declared schema
        assert pq.read_schema(f).remove_metadata().equals(RESULT_SCHEMA.remove_metadata())
    t = read_results(out)
    assert t.num_rows == n_inputs
    assert len(set(t.column("uri").to_pylist())) == n_inputs  # nothing duplicated
    return t.to_pylist()


def test_bundled_samples_end_to_end(ray_local, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["scan", "--out", str(out), "--no-progress"]) == 0
    n = plan_source(str(SAMPLES_DIR)).num_rows
    rows = _check_output(out, n)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= n - 1
    for r in ok:
        assert r["verdict"] in ("real", "generated") and 0 <= r["score"] <= 1
        assert r["boxes"], r["uri"]
        for b in r["boxes"]:
            assert 0 <= b["x1"] < b["x2"] <= r["width"] and 0 <= b["y1"] < b["y2"] <= r["height"]
        assert r["rationale"] and r["model"].startswith("compact/")
    record = json.loads((out / RUN_RECORD).read_text())
    assert record["complete"] and record["inputs"] == n
    printed = capsys.readouterr().out
    assert f"{n} row(s) for {n} input(s)" in printed and "images/s" in printed


def test_bad_inputs_each_get_one_row(ray_local, bad_inputs, tmp_path):
    folder, expected = bad_inputs
    out = tmp_path / "res"
    assert main(["scan", str(folder), "--out", str(out), "--no-progress", "--batch-size", "3"]) == 0
    rows = _check_output(out, len(expected))
    for r in rows:
        name = Path(r["uri"]).name
        assert r["status"] == expected[name], (name, r["error"])
        if r["status"] == "ok":
            assert r["verdict"] and r["score"] is not None and r["error"] is None
        else:
            assert r["error"] and r["verdict"] is None
    rotated = next(r for r in rows if r["uri"].endswith("rotated.jpg"))
    assert (rotated["width"], rotated["height"]) == (100, 200)


def test_scan_only_stage(ray_local, tmp_path):
    out = tmp_path / "res"
    assert main(["scan", str(SAMPLES_DIR), "--out", str(out), "--stages", "scan", "--no-progress"]) == 0
    rows = read_results(out).to_pylist()
    assert all(r["stages"] == "scan" for r in rows)
    assert all(r["verdict"] == r["initial_verdict"] for r in rows if r["status"] == "ok")


def test_refuses_non_empty_output_and_missing_source(ray_local, tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    (out / "old.parquet").write_bytes(b"x")
    assert main(["scan", str(SAMPLES_DIR), "--out", str(out), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["scan", str(SAMPLES_DIR), "--out", str(out), "--overwrite", "--no-progress",
                 "--backend", "fake"]) == 0
    assert read_results(out).num_rows == plan_source(str(SAMPLES_DIR)).num_rows


def test_output_inside_source_is_not_rescanned(ray_local, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for p in sorted(SAMPLES_DIR.iterdir())[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    (src / ".hidden.jpg").write_bytes(b"hidden files are skipped")
    out = src / "results"
    assert main(["scan", str(src), "--out", str(out), "--no-progress", "--backend", "fake"]) == 0
    assert main(["scan", str(src), "--out", str(out), "--overwrite", "--no-progress", "--backend", "fake"]) == 0
    assert read_results(out).num_rows == 3


def test_glob_source(ray_local, tmp_path):
    out = tmp_path / "res"
    pattern = str(SAMPLES_DIR / "real_*.jpg")
    assert main(["scan", pattern, "--out", str(out), "--no-progress", "--backend", "fake"]) == 0
    uris = read_results(out).column("uri").to_pylist()
    expected = sorted(str(p.resolve()) for p in SAMPLES_DIR.glob("real_*.jpg"))
    assert len(expected) >= 2 and sorted(uris) == expected


def test_split_stages_give_the_same_rows(ray_local, tmp_path):
    """Scan actors -> CPU crop tasks -> zoom actors (the GPU layout), run on CPU: same rows as
    the single-pool pipeline."""
    one, split = tmp_path / "one", tmp_path / "split"
    assert main(["scan", str(SAMPLES_DIR), "--out", str(one), "--no-progress", "--split-stages", "off"]) == 0
    assert main(["scan", str(SAMPLES_DIR), "--out", str(split), "--no-progress", "--split-stages", "on"]) == 0
    a = {r["uri"]: r for r in read_results(one).to_pylist()}
    b = {r["uri"]: r for r in read_results(split).to_pylist()}
    assert a.keys() == b.keys()
    for uri, r in a.items():
        assert (r["status"], r["verdict"], r["initial_verdict"]) == (b[uri]["status"], b[uri]["verdict"],
                                                                   b[uri]["initial_verdict"])
        if r["status"] == "ok":
            assert abs(r["score"] - b[uri]["score"]) < 1e-5
            assert [(x["x1"], x["y1"], x["x2"], x["y2"]) for x in r["boxes"]] == \
                [(x["x1"], x["y1"], x["x2"], x["y2"]) for x in b[uri]["boxes"]]
            assert [x["score"] for x in r["boxes"]] == pytest.approx([x["score"] for x in b[uri]["boxes"]], abs=1e-5)
    record = json.loads((split / RUN_RECORD).read_text())
    assert "scan +" in record["plan"] and "zoom actor" in record["plan"]
