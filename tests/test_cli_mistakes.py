"""A new user's mistakes on the command line: each refused in one line (exit 2) before any Ray
cluster starts, with the closest flag or choice for a misspelled one; no work for nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jobs.scan
from jobs.cli import main
from tests.conftest import jpeg_bytes, textured

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_ray(monkeypatch):
    """Any attempt to start or join a cluster fails the test."""
    def refuse(_rc):
        raise AssertionError("Ray was started for a command that should have been refused")
    monkeypatch.setattr(jobs.scan, "_init_ray", refuse)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "usage:" not in err
    return err


@pytest.mark.parametrize("argv, says", [
    (["--num-cpus", "0"], "argument --num-cpus: must be at least 1, got 0"),
    (["--num-cpus", "-1"], "argument --num-cpus: must be at least 1, got -1"),
    (["--num-cpus", "two"], "argument --num-cpus: expected a whole number, got 'two'"),
    (["--actors", "0"], "--actors: must be at least 1"),
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--actor-cpus", "0"], "--actor-cpus: must be more than 0"),
    (["--gpus-per-actor", "-1"], "--gpus-per-actor: must be at least 0"),
    (["--max-boxes", "0"], "--max-boxes: must be at least 1"),
    (["--margin", "-0.1"], "--margin: must be at least 0"),
    (["--prior", "1.5"], "--prior: is a share of images"),
    (["--ouput", "x"], "unrecognized argument --ouput (did you mean --out?)"),
    (["--stages", "zoom"], "invalid choice: 'zoom'"),
    (["--split-stages", "of"], "(did you mean off?)"),
    (["--backend", "compac"], "unknown backend 'compac' (did you mean compact?); choose from classifier, compact, vlm"),
    (["--keep-raw"], "--keep-raw applies to --backend vlm only"),
    (["--overwrite", "--rescan"], "exclude each other"),
])
def test_scan_mistakes_are_one_line_before_ray(argv, says, no_ray, tmp_path, capsys):
    assert main(["scan", "--out", str(tmp_path / "out"), *argv]) == 2
    err = _one_line(capsys)
    assert err.startswith("zoomin scan: error: ") and says in err, err
    assert not (tmp_path / "out").exists()


def test_top_level_and_other_commands(capsys):
    assert main(["scna"]) == 2
    assert "(did you mean scan?)" in _one_line(capsys)
    assert main(["report", "r", "--out", "x.html", "--limt", "3"]) == 2
    assert "unrecognized argument --limt (did you mean --limit?)" in _one_line(capsys)
    assert main(["train", "l.jsonl", "--out", "w", "--scan-steps", "0"]) == 2
    assert "--scan-steps: must be at least 1" in _one_line(capsys)
    assert main(["train", "nowhere/labels.jsonl", "--out", "w"]) == 2
    assert "LABELS nowhere/labels.jsonl: not a file" in _one_line(capsys)
    assert main(["train", "--real", "nowhere", "--out", "w"]) == 2
    assert "--real nowhere: not a folder" in _one_line(capsys)
    assert main(["scan", "--help"]) == 0
    assert "--pseudo" not in capsys.readouterr().out


def test_verbose_is_taken_after_the_command_too(no_ray, tmp_path, capsys):
    assert main(["scan", "--out", str(tmp_path / "o"), "--verbose", "--num-cpus", "0"]) == 2
    assert "--num-cpus" in _one_line(capsys)


def test_synth_without_its_extra_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "skimage", None)   # as if scikit-image were not installed
    assert main(["synth", "--out", str(tmp_path / "s"), "--count", "3"]) == 2
    err = _one_line(capsys)
    assert "scripts/setup.sh ray,synth" in err and "--real-dir" in err
    assert main(["synth", "--out", str(tmp_path / "s"), "--real-dir", str(tmp_path / "none")]) == 2
    assert "not a folder" in _one_line(capsys)


def _scan(argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    # Ray's defaults: the token authentication `ray.init` turns on (and its notice), not the
    # suite's RAY_AUTH_MODE=disabled.
    env.pop("RAY_AUTH_MODE", None)
    return subprocess.run([sys.executable, "-c", "import sys; from jobs.cli import main; sys.exit(main(sys.argv[1:]))",
                           "scan", *argv], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.ray
def test_a_default_run_is_quiet_and_a_second_one_compares_every_setting(tmp_path):
    src, out = tmp_path / "photos", tmp_path / "out"
    src.mkdir()
    for k in range(3):
        (src / f"{k}.jpg").write_bytes(jpeg_bytes(textured(200, 150, seed=k)))
    p = _scan([str(src), "--out", str(out), "--backend", "fake", "--num-cpus", "2"])
    assert p.returncode == 0, p.stderr
    # no Ray noise: its INFO lines, its bars, its token notice, its core_worker line
    for noise in ("core_worker.cc", "Total Progress", "INFO", "Token authentication", "Running Dataset"):
        assert noise not in p.stderr + p.stdout, (noise, p.stderr)
    assert "zoomin: progress: 3/3 images (100%)" in p.stderr
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.jpg").write_bytes(jpeg_bytes(textured(200, 150, seed=7)))
    q = _scan([str(one), "--out", str(tmp_path / "out1"), "--backend", "fake", "--num-cpus", "2"])
    # one image, one block: not Ray Data's advice to make more blocks for the two actors
    assert q.returncode == 0 and "Warning" not in q.stderr, q.stderr
    record = json.loads((out / "_run.json").read_text())
    assert record["job"]["max_boxes"] == 4 and record["job"]["view_size"] == 768
    # nothing new: no cluster, no work, exit 0
    p = _scan([str(src), "--out", str(out), "--backend", "fake", "--incremental"])
    assert p.returncode == 0 and "nothing to scan" in p.stdout, p.stderr
    assert "scanning" not in p.stdout
    # a setting that changes rows: refused, named, before any work
    (src / "new.jpg").write_bytes(jpeg_bytes(textured(200, 150, seed=9)))
    p = _scan([str(src), "--out", str(out), "--backend", "fake", "--incremental", "--max-boxes", "2"])
    assert p.returncode == 2 and "max_boxes was 4, now 2" in p.stderr and "--rescan" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
