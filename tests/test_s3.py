"""`zoomin scan` against a real S3-speaking server (moto, its own process on loopback) through the
whole client stack (s3fs, aiobotocore, pyarrow) and a real local Ray cluster."""
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from jobs.models import fetch_model
from jobs.sinks import RUN_RECORD, read_results
from jobs.storage import StorageConfig
from tests.conftest import jpeg_bytes, textured
from tests.s3_support import TEST_SECRET, FaultProxy, put_many
from zoomin_core.compact_model import DEFAULT_WEIGHTS, CompactModel
from zoomin_core.schema import RESULT_SCHEMA

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _images(n: int, size: int = 24) -> list[bytes]:
    return [jpeg_bytes(textured(size + i % 5, size, seed=i)) for i in range(n)]


def _scan(s3, *args, endpoint=None) -> int:
    return main(["scan", *args, "--no-progress", "--backend", "fake", "--endpoint-url", endpoint or s3.endpoint])


def _results(s3, uri: str):
    return read_results(uri, storage=StorageConfig(endpoint_url=s3.endpoint)).to_pylist()


def test_paged_prefix_odd_keys_and_sized_output_files(ray_local, s3, capsys):
    src, out = s3.bucket("src"), s3.bucket("out")
    keys = [f"archive/img-{i:05d}.jpg" for i in range(1040)]
    keys += ["archive/été 2026/chat noir.jpg", "archive/with space & plus+.jpg", "archive/日本/写真.jpg"]
    put_many(s3.client, src, dict(zip(keys, _images(len(keys)))))
    s3.put(src, "archive/.hidden/skip.jpg", b"hidden objects are skipped")
    assert _scan(s3, f"s3://{src}/archive/", "--out", f"s3://{out}/run-1/", "--rows-per-file", "400") == 0
    rows = _results(s3, f"s3://{out}/run-1")
    assert sorted(r["uri"] for r in rows) == sorted(f"s3://{src}/{k}" for k in keys)  # > 1000: paged
    assert all(r["status"] == "ok" for r in rows)
    files = [o for o in s3.client.list_objects_v2(Bucket=out, Prefix="run-1/")["Contents"]]
    parquet = [o["Key"] for o in files if o["Key"].endswith(".parquet")]
    assert len(parquet) >= 3 and f"run-1/{RUN_RECORD}" in [o["Key"] for o in files]
    for key in parquet:  # same schema as a local run; at most --rows-per-file rows per file
        t = pq.read_table(io.BytesIO(s3.client.get_object(Bucket=out, Key=key)["Body"].read()))
        assert t.schema.remove_metadata().equals(RESULT_SCHEMA.remove_metadata()) and t.num_rows <= 400
    record = json.loads(s3.client.get_object(Bucket=out, Key=f"run-1/{RUN_RECORD}")["Body"].read())
    assert record["complete"] and record["rows"] == len(keys)
    # The same job again: refused unless told what to do; --incremental finds nothing new.
    assert _scan(s3, f"s3://{src}/archive/", "--out", f"s3://{out}/run-1/") == 2
    assert "already holds a complete run" in capsys.readouterr().err
    s3.put(src, "archive/late arrival.jpg", _images(1)[0])
    assert _scan(s3, f"s3://{src}/archive/", "--out", f"s3://{out}/run-1/", "--incremental") == 0
    assert "1 new" in capsys.readouterr().out
    assert len(_results(s3, f"s3://{out}/run-1")) == len(keys) + 1


def test_manifest_from_s3_with_extras_and_missing_object(ray_local, s3, tmp_path):
    src, out = s3.bucket("src"), s3.bucket("out")
    imgs = _images(3)
    for i, b in enumerate(imgs):
        s3.put(src, f"photos/p{i}.jpg", b)
    manifest = "uri,id,label\n" + "\n".join([
        f"s3://{src}/photos/p0.jpg,10,real", "p1.jpg,11,generated",  # relative to the manifest
        f"s3://{src}/photos/p2.jpg,12,real", f"s3://{src}/photos/gone.jpg,13,real"]) + "\n"
    s3.put(src, "photos/list.csv", manifest.encode())
    assert _scan(s3, "--manifest", f"s3://{src}/photos/list.csv", "--out", f"s3://{out}/m") == 0
    rows = {r["uri"]: r for r in _results(s3, f"s3://{out}/m")}
    assert set(rows) == {f"s3://{src}/photos/{n}" for n in ("p0.jpg", "p1.jpg", "p2.jpg", "gone.jpg")}
    assert json.loads(rows[f"s3://{src}/photos/p1.jpg"]["extra"]) == {"id": 11, "label": "generated"}
    gone = rows[f"s3://{src}/photos/gone.jpg"]
    assert gone["status"] == "read_error" and "no such object" in gone["error"]
    # A glob under a prefix.
    assert _scan(s3, f"s3://{src}/photos/p[01].jpg", "--out", f"s3://{out}/g") == 0
    assert sorted(r["uri"] for r in _results(s3, f"s3://{out}/g")) == [f"s3://{src}/photos/p0.jpg",
                                                                     f"s3://{src}/photos/p1.jpg"]


def test_tar_and_parquet_shards(ray_local, s3, tmp_path):
    src, out = s3.bucket("src"), s3.bucket("out")
    imgs = _images(7)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, b in enumerate(imgs[:4]):
            for name, data in ((f"{i:06d}.jpg", b), (f"{i:06d}.json", b'{"caption": "x"}')):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    s3.put(src, "shards/train-000.tar", buf.getvalue())
    pbuf = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "image": imgs[4:]}), pbuf)
    s3.put(src, "shards/train-001.parquet", pbuf.getvalue())
    s3.put(src, "shards/train-002.tar", b"a tar shard that was cut off in transit" * 30)
    assert _scan(s3, f"s3://{src}/shards/", "--out", f"s3://{out}/sh", "--retries", "2") == 0
    rows = {r["uri"]: r for r in _results(s3, f"s3://{out}/sh")}
    tar_uris = {f"s3://{src}/shards/train-000.tar#{i:06d}.jpg" for i in range(4)}
    pq_uris = {f"s3://{src}/shards/train-001.parquet#{i}" for i in range(3)}
    broken = f"s3://{src}/shards/train-002.tar"
    assert set(rows) == tar_uris | pq_uris | {broken}
    assert all(rows[u]["status"] == "ok" for u in tar_uris | pq_uris)
    assert json.loads(rows[f"s3://{src}/shards/train-001.parquet#2"]["extra"]) == {"id": "c"}
    assert rows[broken]["status"] == "read_error" and "shard unreadable" in rows[broken]["error"]
    # The report reads thumbnails back out of the shards, through the same storage flags.
    page = tmp_path / "report.html"
    assert main(["report", f"s3://{out}/sh", "--out", str(page), "--endpoint-url", s3.endpoint]) == 0
    assert page.read_text().count('"thumb":"data:image/') == 7   # small images go in as PNG


def test_transient_faults_lose_and_duplicate_nothing(ray_local, s3):
    src, out = s3.bucket("src"), s3.bucket("out")
    keys = [f"f/{i:03d}.jpg" for i in range(60)]
    put_many(s3.client, src, dict(zip(keys, _images(len(keys)))))
    with FaultProxy(s3.endpoint, rate=0.25, seed=7) as proxy:
        code = _scan(s3, f"s3://{src}/f/", "--out", f"s3://{out}/faulty", "--rows-per-file", "25",
                     "--batch-size", "8", endpoint=proxy.endpoint)
    assert code == 0
    assert all(n > 0 for n in proxy.counts.values()), proxy.counts  # every fault kind happened
    rows = _results(s3, f"s3://{out}/faulty")  # read back directly, not through the proxy
    assert sorted(r["uri"] for r in rows) == sorted(f"s3://{src}/{k}" for k in keys)
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]


def test_unreachable_objects_become_rows_and_secrets_stay_hidden(ray_local, s3, tmp_path, capfd):
    src, out = s3.bucket("src"), s3.bucket("out")
    s3.put(src, "ok.jpg", _images(1)[0])
    cfg = tmp_path / "storage.json"
    cfg.write_text(json.dumps({"endpoint_url": s3.endpoint, "key": "AKIAFILEKEY000000001",
                               "secret": "file-secret-never-log-me", "retries": 2, "backoff_s": 0.01}))
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"s3://{src}/ok.jpg\ns3://no-such-bucket-zz/x.jpg\ns3://{src}/missing.jpg\n")
    code = main(["scan", "--manifest", str(manifest), "--out", f"s3://{out}/r", "--backend", "fake",
                 "--no-progress", "--storage-config", str(cfg)])
    assert code == 0
    rows = {r["uri"]: r for r in _results(s3, f"s3://{out}/r")}
    assert rows[f"s3://{src}/ok.jpg"]["status"] == "ok"
    assert rows["s3://no-such-bucket-zz/x.jpg"]["status"] == "read_error"
    assert rows[f"s3://{src}/missing.jpg"]["status"] == "read_error"
    printed = capfd.readouterr()
    record = s3.client.get_object(Bucket=out, Key=f"r/{RUN_RECORD}")["Body"].read().decode()
    everything = printed.out + printed.err + record + json.dumps(list(rows.values()), default=str)
    for secret in ("file-secret-never-log-me", TEST_SECRET):
        assert secret not in everything


def test_weights_from_s3_are_cached_per_node(ray_local, s3, tmp_path, capsys):
    bucket, out = s3.bucket("models"), s3.bucket("out")
    s3.put(bucket, "compact/v2/compact.safetensors", DEFAULT_WEIGHTS.read_bytes())
    storage = StorageConfig(endpoint_url=s3.endpoint)
    uri = f"s3://{bucket}/compact/v2/"
    path, downloaded = fetch_model(uri, storage, cache=tmp_path / "cache")
    assert downloaded and open(path + "/compact.safetensors", "rb").read() == DEFAULT_WEIGHTS.read_bytes()
    assert fetch_model(uri, storage, cache=tmp_path / "cache") == (path, False)  # reused
    retrained = CompactModel.load(DEFAULT_WEIGHTS)
    retrained.meta["version"] = "v2-retrained"
    retrained.save(tmp_path / "new.safetensors")
    s3.put(bucket, "compact/v2/compact.safetensors", (tmp_path / "new.safetensors").read_bytes())
    path2, again = fetch_model(uri, storage, cache=tmp_path / "cache")
    assert again and path2 != path  # the remote copy changed (new ETag): fetched again
    assert CompactModel.load(path2).meta["version"] == "v2-retrained"
    # A truncated checkpoint is refused and leaves no cache entry behind.
    s3.put(bucket, "bad/model.safetensors", DEFAULT_WEIGHTS.read_bytes()[:1000])
    from jobs.models import ModelError
    with pytest.raises(ModelError, match="truncated"):
        fetch_model(f"s3://{bucket}/bad/", storage, cache=tmp_path / "cache")
    entries = list((tmp_path / "cache").glob("*/*/.complete"))
    assert [e.parent for e in entries] == [__import__("pathlib").Path(path2)]  # old version pruned, no bad one
    # The job loads them in its actors; a missing checkpoint stops it before any image is read.
    assert main(["scan", "--out", f"s3://{out}/w", "--model", uri, "--no-progress",
                 "--endpoint-url", s3.endpoint]) == 0
    rows = _results(s3, f"s3://{out}/w")
    assert rows and all(r["model"].startswith("compact/") for r in rows if r["status"] == "ok")
    assert main(["scan", "--out", f"s3://{out}/w2", "--model", f"s3://{bucket}/nothing/",
                 "--endpoint-url", s3.endpoint]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_sigkill_then_resume_on_s3(s3):
    """The resume of test_runs.py, with sources and results on S3 (no rename there: each
    results object appears whole when its upload completes)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    src, out = s3.bucket("src"), s3.bucket("out")
    keys = [f"p/{i:04d}.jpg" for i in range(200)]
    put_many(s3.client, src, dict(zip(keys, _images(len(keys)))))
    cmd = [sys.executable, "-c", "import sys; from jobs.cli import main; sys.exit(main(sys.argv[1:]))",
           "scan", f"s3://{src}/p/", "--out", f"s3://{out}/r", "--backend", "fake", "--no-progress",
           "--num-cpus", "2", "--rows-per-file", "8", "--batch-size", "4", "--endpoint-url", s3.endpoint]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(root))

    def parts():
        got = s3.client.list_objects_v2(Bucket=out, Prefix="r/").get("Contents", [])
        return {o["Key"]: o["ETag"] for o in got if o["Key"].endswith(".parquet")}

    proc = subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(parts()) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = parts()
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resume" in r.stdout
    rows = _results(s3, f"s3://{out}/r")
    assert sorted(x["uri"] for x in rows) == sorted(f"s3://{src}/{k}" for k in keys)
    after = parts()
    assert all(after.get(k) == etag for k, etag in first.items())  # committed objects untouched
