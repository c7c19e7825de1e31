"""Planning and reading sources, without Ray: listings, manifests, shards, retries, redaction."""
import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.sources import (SourceConfig, SourceError, iter_inputs, plan_manifest, plan_source, read_object,
                          unlisted_folders)
from jobs.storage import StorageConfig, redact, retrying
from tests.conftest import jpeg_bytes, textured


def _tar(members: dict[str, bytes], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_plan_folder_skips_hidden_and_output(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"1")
    (tmp_path / "a" / ".cache").mkdir()
    (tmp_path / "a" / ".cache" / "y.jpg").write_bytes(b"2")
    (tmp_path / ".hidden.jpg").write_bytes(b"3")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part.parquet").write_bytes(b"4")
    (tmp_path / "shard.tar").write_bytes(_tar({"k.jpg": b"5"}))
    t = plan_source(str(tmp_path), exclude=str(tmp_path / "out"))
    rows = t.to_pylist()
    assert [r["uri"] for r in rows] == [str(tmp_path / "a" / "x.jpg"), str(tmp_path / "shard.tar")]
    assert [r["kind"] for r in rows] == ["file", "tar"] and rows[0]["size"] == 1
    files_only = plan_source(str(tmp_path), SourceConfig(input_format="files"))
    assert set(files_only.column("kind").to_pylist()) == {"file"}
    with pytest.raises(SourceError, match="no such"):
        plan_source(str(tmp_path / "missing"))


def test_plan_folder_follows_links_and_reports_what_it_cannot_list(tmp_path, monkeypatch):
    elsewhere = tmp_path / "other-disk"
    (elsewhere / "deep").mkdir(parents=True)
    (elsewhere / "deep" / "z.jpg").write_bytes(b"12")
    src = tmp_path / "archive"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "w.jpg").write_bytes(b"1")
    (src / "a.jpg").write_bytes(b"123")
    (src / "linked").symlink_to(elsewhere)           # a folder that lives on another disk
    (src / "loop").symlink_to(src)                   # a link to its own parent: listed once
    (src / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    t = plan_source(str(src))
    monkeypatch.undo()
    sizes = dict(zip(t.column("uri").to_pylist(), t.column("size").to_pylist()))
    assert sizes == {str(src / "a.jpg"): 3, str(src / "gone.jpg"): -1,
                     str(src / "linked" / "deep" / "z.jpg"): 2}
    assert unlisted_folders(t) == [f"{src / 'locked'}: Permission denied"]
    assert unlisted_folders(plan_source(str(elsewhere))) == []
    gone = read_object(str(src / "gone.jpg"), -1, SourceConfig())
    assert gone.data is None and "broken symbolic link" in gone.read_error and "nowhere.jpg" in gone.read_error


def test_manifest_formats_resolve_relative_and_carry_extras(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "txt.lst").write_text("# a comment\nimg/a.jpg\n\n/abs/b.jpg\ns3://bkt/c d.jpg\n")
    t = plan_manifest(str(tmp_path / "txt.lst"))
    assert t.column("uri").to_pylist() == [str(tmp_path / "img" / "a.jpg"), "/abs/b.jpg", "s3://bkt/c d.jpg"]
    assert t.column("size").to_pylist() == [-1, -1, -1]

    (tmp_path / "m.csv").write_text("id,uri,label,size\n7,img/a.jpg,real,12\n8,img/b.jpg,generated,\n")
    t = plan_manifest(str(tmp_path / "m.csv")).to_pylist()
    assert t[0]["uri"] == str(tmp_path / "img" / "a.jpg") and t[0]["size"] == 12 and t[1]["size"] == -1
    assert json.loads(t[0]["extra"]) == {"id": 7, "label": "real"}

    pq.write_table(pa.table({"path": ["img/a.jpg"], "group": ["x"]}), tmp_path / "m.parquet")
    t = plan_manifest(str(tmp_path / "m.parquet")).to_pylist()
    assert t[0]["uri"] == str(tmp_path / "img" / "a.jpg") and json.loads(t[0]["extra"]) == {"group": "x"}

    (tmp_path / "bad.csv").write_text("name,label\na.jpg,real\n")
    with pytest.raises(SourceError, match="no uri column"):
        plan_manifest(str(tmp_path / "bad.csv"))
    with pytest.raises(SourceError, match="no such file"):
        plan_manifest(str(tmp_path / "nope.csv"))


def test_tar_shard_members_and_sidecars(tmp_path):
    img = jpeg_bytes(textured(40, 30))
    shard = tmp_path / "s.tar.gz"
    shard.write_bytes(_tar({"000.jpg": img, "000.json": b"{}", "sub/001.PNG": b"not really",
                            "._mac.jpg": img}, gz=True))
    unit = {"uri": str(shard), "size": -1, "kind": "tar", "extra": '{"batch": 3}'}
    got = list(iter_inputs(unit, SourceConfig()))
    assert [i.uri for i, _ in got] == [f"{shard}#000.jpg", f"{shard}#sub/001.PNG"]
    assert got[0][0].data == img and json.loads(got[0][1]) == {"batch": 3}

    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"definitely not a tar archive" * 40)
    got = list(iter_inputs({"uri": str(broken), "size": -1, "kind": "tar", "extra": None},
                           SourceConfig(storage=StorageConfig(retries=2, backoff_s=0.0))))
    assert len(got) == 1 and got[0][0].uri == str(broken) and "unreadable" in got[0][0].read_error

    empty = tmp_path / "empty.tar"
    empty.write_bytes(_tar({"meta.json": b"{}"}))
    got = list(iter_inputs({"uri": str(empty), "size": -1, "kind": "tar", "extra": None}, SourceConfig()))
    assert len(got) == 1 and got[0][0].read_status == "unsupported"


def test_parquet_shard_bytes_structs_and_limits(tmp_path):
    img = jpeg_bytes(textured(40, 30))
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"key": ["a", "b", "c"], "image": [img, None, b"x" * 100]}), shard)
    cfg = SourceConfig(max_bytes=50)
    got = list(iter_inputs({"uri": str(shard), "size": -1, "kind": "parquet", "extra": None}, cfg))
    assert [i.uri for i, _ in got] == [f"{shard}#0", f"{shard}#1", f"{shard}#2"]
    assert got[0][0].read_status == "too_large"            # 1.1 KB > 50 bytes
    assert got[1][0].data is None and "no image bytes" in got[1][0].read_error
    assert [json.loads(e)["key"] for _, e in got] == ["a", "b", "c"]

    hf = tmp_path / "hf.parquet"
    pq.write_table(pa.table({"img": [{"bytes": img, "path": "x.jpg"}]}), hf)
    got = list(iter_inputs({"uri": str(hf), "size": -1, "kind": "parquet", "extra": None},
                           SourceConfig(image_column="img")))
    assert got[0][0].data == img
    got = list(iter_inputs({"uri": str(hf), "size": -1, "kind": "parquet", "extra": None},
                           SourceConfig(storage=StorageConfig(retries=1))))
    assert len(got) == 1 and "--image-column" in got[0][0].read_error


def test_retrying_retries_transient_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert retrying(flaky, StorageConfig(retries=5), sleep=lambda s: None) == "ok" and len(calls) == 3

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        retrying(missing, StorageConfig(retries=5), sleep=lambda s: None)
    assert len(calls) == 1

    def always():
        calls.append(1)
        raise OSError("503 SlowDown")

    calls.clear()
    with pytest.raises(OSError):
        retrying(always, StorageConfig(retries=4), sleep=lambda s: None)
    assert len(calls) == 4


def test_redact_hides_secrets():
    cfg = StorageConfig(key="AKIAEXAMPLEKEY123", secret="very-secret-value")
    text = ("failed with key AKIAEXAMPLEKEY123 and very-secret-value; aws_secret_access_key=abc123 "
            "url https://user:pa55@host/x?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/x")
    out = redact(text, cfg)
    for s in ("AKIAEXAMPLEKEY123", "very-secret-value", "abc123", "pa55", "deadbeef", "AKIA/x"):
        assert s not in out
    assert "***" in out and "failed with key" in out
    assert "very-secret-value" not in repr(cfg) and "AKIAEXAMPLEKEY123" not in repr(cfg)


def test_storage_config_file(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"endpoint_url": "http://x:9000", "region": "eu-west-1", "retries": 3}))
    cfg = StorageConfig.from_file(str(f), region="us-east-2", profile=None)
    assert (cfg.endpoint_url, cfg.region, cfg.retries) == ("http://x:9000", "us-east-2", 3)
    f.write_text(json.dumps({"endpoint": "typo"}))
    from jobs.storage import StorageError
    with pytest.raises(StorageError, match="unknown keys"):
        StorageConfig.from_file(str(f))
