"""Runs over one output: resume after SIGKILL, incremental nightly runs, manifest roots."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.cli import main
from jobs.runs import RUNS_DIR, remaining
from jobs.sinks import RUN_RECORD, read_results
from jobs.sources import SourceConfig, iter_inputs, plan_manifest
from tests.conftest import jpeg_bytes, kill_cluster, textured
from tests.s3_support import free_port
from zoomin_core.compact_model import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parent.parent


def _images(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"img_{i:04d}.jpg").write_bytes(jpeg_bytes(textured(40 + i % 7, 32, seed=i)))


def _parts(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("part-*.parquet"))


@pytest.mark.slow
def test_sigkill_then_the_same_command_finishes_the_rest(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _images(src, 240)
    cmd = [sys.executable, "-c", "import sys; from jobs.cli import main; sys.exit(main(sys.argv[1:]))",
           "scan", str(src), "--out", str(out), "--backend", "fake", "--no-progress", "--num-cpus", "2",
           "--rows-per-file", "8", "--batch-size", "4"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    # Its own session: the kill takes the driver and the local Ray cluster it started, as a crash would.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(_parts(out)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.read_bytes() for p in _parts(out)}
    done_before = read_results(out).num_rows
    assert 0 < done_before < 240
    assert json.loads((out / RUN_RECORD).read_text())["state"] == "running"

    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resume" in r.stdout
    rows = read_results(out).to_pylist()
    assert sorted(x["uri"] for x in rows) == sorted(str(p) for p in src.iterdir())  # no gap, no duplicate
    for name, data in first.items():  # committed work was neither redone nor rewritten
        assert (out / name).read_bytes() == data
    record = json.loads((out / RUN_RECORD).read_text())
    assert record["state"] == "complete" and record["mode"] == "resume"
    # Rows already committed when the second run started (a write in flight at the kill may
    # still have landed after done_before was counted) plus the rows it added: all, once.
    assert done_before <= record["already_done"] and record["already_done"] + record["new_rows"] == 240
    assert len(list((out / RUNS_DIR).glob("*.json"))) == 2


@pytest.mark.slow
def test_a_scan_starts_its_own_cluster_while_another_ray_runs_here(tmp_path):
    """`ray start` on the same machine must not capture a scan given no --address: plain
    ray.init() would join that cluster (found through the Ray temp dir) and refuse --num-cpus."""
    src, out = tmp_path / "src", tmp_path / "out"
    _images(src, 4)
    # Its own Ray temp dir (short: socket paths are limited to 107 bytes): the other cluster is
    # found there, and nothing under /tmp/ray is touched.
    ray_tmp = tempfile.mkdtemp(prefix="zr", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT), RAY_TMPDIR=ray_tmp)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    other = subprocess.Popen([ray_bin, "start", "--head", "--block", "--num-cpus", "1", "--disable-usage-stats",
                              "--include-dashboard", "false", "--port", str(free_port()),
                              "--dashboard-agent-listen-port", str(free_port()),
                              "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())],
                             env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address_file = Path(ray_tmp) / "ray" / "ray_current_cluster"
        deadline = time.time() + 120
        while not address_file.exists() and other.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert address_file.exists(), "the other cluster did not start"
        r = subprocess.run([sys.executable, "-m", "jobs.cli", "scan", str(src), "--out", str(out), "--backend",
                            "fake", "--no-progress", "--num-cpus", "2"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "cluster 2 CPU" in r.stdout      # its own cluster, not the other one's single CPU
        assert read_results(out).num_rows == 4
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()
        kill_cluster(ray_tmp)


@pytest.mark.ray
@pytest.mark.slow
def test_incremental_runs_scan_only_new_images(ray_local, tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _images(src, 6)
    base = ["scan", str(src), "--out", str(out), "--no-progress", "--backend", "fake"]
    assert main(base) == 0
    first = {p.name: p.read_bytes() for p in _parts(out)}
    _images(src, 3, start=6)
    capsys.readouterr()
    assert main(base) == 2
    assert "already holds a complete run" in capsys.readouterr().err
    assert main(base + ["--incremental"]) == 0
    printed = capsys.readouterr().out
    assert "6 row(s) already" in printed and "3 new" in printed
    rows = read_results(out).to_pylist()
    assert sorted(r["uri"] for r in rows) == sorted(str(p) for p in src.iterdir())
    for name, data in first.items():
        assert (out / name).read_bytes() == data  # earlier rows untouched
    assert len(list((out / RUNS_DIR).glob("*.json"))) == 2
    # Nothing new: a run that writes nothing and says so - but it notices replaced content.
    (src / "img_0002.jpg").write_bytes(jpeg_bytes(textured(90, 70, seed=99)))
    assert main(base + ["--incremental"]) == 0
    printed = capsys.readouterr().out
    assert "0 new" in printed and "1 object(s) changed size" in printed and "img_0002.jpg" in printed
    assert "nothing to scan" in printed
    # Other settings (here the stages) are refused on --incremental; --rescan redoes everything.
    _images(src, 1, start=9)
    assert main(base + ["--stages", "scan", "--incremental"]) == 2
    assert "stages was 'scan,zoom', now 'scan'" in capsys.readouterr().err
    assert main(base + ["--stages", "scan"]) == 2   # without a flag: the settings are named, not --incremental
    err = capsys.readouterr().err
    assert "made with other settings (stages)" in err and "--rescan" in err and "--incremental" not in err
    (src / "img_0009.jpg").unlink()
    # Another SRC is another job: refused unless --overwrite.
    assert main(["scan", str(src / "img_0001.jpg"), "--out", str(out), "--no-progress", "--backend", "fake",
                 "--incremental"]) == 2
    assert "another job" in capsys.readouterr().err
    assert main(base + ["--rescan"]) == 0
    assert "9 new" in capsys.readouterr().out and not any((out / n).exists() for n in first)
    assert read_results(out).num_rows == 9


@pytest.mark.ray
@pytest.mark.slow
def test_a_model_or_prior_change_is_refused_on_incremental_and_recorded(ray_local, tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _images(src, 2)
    assert main(["scan", str(src), "--out", str(out), "--no-progress"]) == 0
    _images(src, 1, start=2)
    other = tmp_path / "retrained.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, other)
    # the same file under another path: the path differs, the sha256 does not
    assert main(["scan", str(src), "--out", str(out), "--no-progress", "--incremental", "--model", str(other)]) == 2
    err = capsys.readouterr().err
    assert "model was 'default', now" in err and "model_sha256" not in err and "--rescan" in err
    assert main(["scan", str(src), "--out", str(out), "--no-progress", "--incremental", "--prior", "0.05"]) == 2
    assert "prior was not set, now 0.05" in capsys.readouterr().err
    # --rescan redoes every row under the new settings, and the rows say which prior they assume
    assert main(["scan", str(src), "--out", str(out), "--no-progress", "--rescan", "--prior", "0.05"]) == 0
    assert "prior changed since the last run" in capsys.readouterr().out
    rows = read_results(out).to_pylist()
    assert len(rows) == 3 and all(r["prior"] == pytest.approx(0.05) for r in rows)
    assert all(r["threshold"] == 0.5 for r in rows)   # --prior alone: even odds at that share
    assert main(["scan", str(src), "--out", str(out), "--no-progress", "--incremental", "--prior", "0.05",
                 "--threshold", "0.7"]) == 2
    assert "threshold was not set, now 0.7" in capsys.readouterr().err
    assert main(["scan", str(src), "--out", str(out), "--no-progress", "--rescan", "--threshold", "0.02"]) == 0
    rows = read_results(out).to_pylist()
    assert all(r["threshold"] == pytest.approx(0.02) for r in rows)
    assert all(r["verdict"] == ("generated" if r["score"] >= 0.02 else "real") for r in rows)


def test_manifest_cannot_reach_outside_its_roots(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "ok.jpg").write_bytes(jpeg_bytes(textured(40, 30)))
    (tmp_path / "outside.jpg").write_bytes(jpeg_bytes(textured(40, 30)))
    manifest = tmp_path / "m" / "list.txt"
    manifest.write_text("ok.jpg\n/etc/shadow\n../outside.jpg\ns3://bucket/fine.jpg\n")
    units = plan_manifest(str(manifest))
    got = {u["uri"]: next(iter_inputs(u, SourceConfig()))[0] for u in units.to_pylist() if u["kind"] != "file"
           or u["uri"].endswith("ok.jpg")}
    assert got[str(tmp_path / "m" / "ok.jpg")].data is not None
    for bad in ("/etc/shadow", str(tmp_path / "outside.jpg")):
        assert got[bad].data is None and "refused" in got[bad].read_error
    kinds = dict(zip(units.column("uri").to_pylist(), units.column("kind").to_pylist()))
    assert kinds["s3://bucket/fine.jpg"] == "file"
    strict = plan_manifest(str(manifest), SourceConfig(allow_roots=(str(tmp_path / "m"),)))
    assert dict(zip(strict.column("uri").to_pylist(), strict.column("kind").to_pylist()))[
        "s3://bucket/fine.jpg"] == "refused"


def test_resumed_shards_skip_their_finished_members(tmp_path):
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(4):
            data = jpeg_bytes(textured(30, 30, seed=i))
            info = tarfile.TarInfo(f"./{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard = tmp_path / "s.tar"
    shard.write_bytes(buf.getvalue())
    units = pa.Table.from_pylist([{"uri": str(shard), "size": -1, "kind": "tar", "extra": None, "skip": None},
                                  {"uri": "/x/a.jpg", "size": 1, "kind": "file", "extra": None, "skip": None}])
    left = remaining(units, {f"{shard}#0.jpg", f"{shard}#2.jpg", "/x/a.jpg"})
    assert left.column("uri").to_pylist() == [str(shard)]
    got = [i.uri for i, _ in iter_inputs(left.to_pylist()[0], SourceConfig())]
    assert got == [f"{shard}#1.jpg", f"{shard}#3.jpg"]
    done_all = remaining(units, {f"{shard}#{i}.jpg" for i in range(4)})
    assert list(iter_inputs(done_all.to_pylist()[0], SourceConfig())) == []  # no "empty shard" row


def test_an_unusable_out_is_refused_before_any_cluster_starts(tmp_path, monkeypatch, capsys):
    import jobs.scan

    def no_cluster(*_a, **_k):
        raise AssertionError("a cluster was started for a run that is refused")
    monkeypatch.setattr(jobs.scan, "_init_ray", no_cluster)
    src = tmp_path / "src"
    _images(src, 2)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    base = ["scan", str(src), "--no-progress", "--backend", "fake"]
    assert main(base + ["--out", str(a_file / "out")]) == 2
    assert f"{a_file} is not a folder" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    assert main(base + ["--out", str(tmp_path / "busy")]) == 2
    assert "holds no zoomin run record" in capsys.readouterr().err


def test_an_out_that_cannot_be_written_is_an_output_error(tmp_path, monkeypatch):
    import jobs.runs
    from jobs.sinks import OutputError, open_output

    out = open_output(str(tmp_path / "out"))
    run = jobs.runs.decide(out, {"src": "x"}, overwrite=False, incremental=False, rescan=False)
    assert run.mode == "new"

    def read_only(*_a, **_k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(jobs.runs, "write_record", read_only)
    with pytest.raises(OutputError, match="cannot write there: PermissionError"):
        jobs.runs.begin(out, run)


def test_a_second_run_on_a_live_output_is_refused(tmp_path, monkeypatch, capsys):
    """Two drivers on one --out (a nightly run that overran into the next night's) would scan
    the same images twice: the second one is refused while the first one's heartbeat is fresh,
    and resumes as soon as that driver is seen dead."""
    import socket

    import jobs.runs
    import jobs.scan
    from jobs.sinks import open_output

    monkeypatch.setattr(jobs.scan, "_init_ray", lambda *_a, **_k: pytest.fail("a cluster was started"))
    src, out_dir = tmp_path / "src", tmp_path / "out"
    _images(src, 2)
    out = open_output(str(out_dir))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = jobs.runs.begin(out, jobs.runs.decide(out, {"src": "x"}, False, False, False))
        record = {**run.record, "pid": other.pid}  # as another driver on this machine wrote it
        jobs.runs.write_record(out, record)
        with pytest.raises(jobs.runs.OutputError, match="being written by another run"):
            jobs.runs.decide(out, {"src": "x"}, overwrite=True, incremental=False, rescan=False)
        assert "last heartbeat" in jobs.runs.live_run(record)
        # the same, started on another machine: alive until its heartbeat is STALE_S old
        remote = {**record, "host": socket.gethostname() + "-elsewhere"}
        assert jobs.runs.live_run(remote) and not jobs.runs.live_run(
            remote, now=record["heartbeat"] + jobs.runs.STALE_S + 1)
        assert not jobs.runs.live_run({**remote, "state": "complete"})
        # that driver dies: the next run resumes at once
        other.kill()
        other.wait()
        assert not jobs.runs.live_run(record)
        assert jobs.runs.decide(out, {"src": "x"}, False, False, False).mode == "resume"
    finally:
        other.kill()
        other.wait()
    # the CLI says why, before any cluster starts
    jobs.runs.write_record(out, {**record, "pid": os.getppid(), "heartbeat": time.time()})
    assert main(["scan", str(src), "--out", str(out_dir), "--backend", "fake", "--no-progress"]) == 2
    assert "being written by another run" in capsys.readouterr().err


def test_heartbeat_refreshes_the_record_until_stopped(tmp_path):
    import jobs.runs
    from jobs.sinks import open_output

    out = open_output(str(tmp_path / "out"))
    run = jobs.runs.begin(out, jobs.runs.decide(out, {"src": "x"}, False, False, False))
    first = run.record["heartbeat"]
    with jobs.runs.Heartbeat(out, run.record, every=0.05):
        time.sleep(0.5)
        beat = jobs.runs.read_record(out)["heartbeat"]
    assert beat > first
    time.sleep(0.2)
    last = jobs.runs.read_record(out)["heartbeat"]
    time.sleep(0.2)
    assert jobs.runs.read_record(out)["heartbeat"] == last  # nothing lands after it stopped
    history = json.loads((tmp_path / "out" / RUNS_DIR / f"{run.run_id}.json").read_text())
    assert history["heartbeat"] == first  # the run's history keeps its start record
