"""Which URIs a manifest may make the workers read (--allow-root): planning only, no Ray, no reads
except of the refusal rows themselves."""
import os

import pytest

from jobs.sources import KIND_REFUSED, SourceConfig, _allowed, iter_inputs, plan_manifest


@pytest.fixture
def tree(tmp_path):
    """tmp/m: the manifest's folder (a.jpg, sub/b.jpg, links in and out); tmp/m2 and tmp/outside.jpg: outside."""
    m = tmp_path / "m"
    (m / "sub").mkdir(parents=True)
    (m / "a.jpg").write_bytes(b"a")
    (m / "sub" / "b.jpg").write_bytes(b"b")
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "x.jpg").write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"o")
    os.symlink(tmp_path / "outside.jpg", m / "link_out.jpg")
    os.symlink(tmp_path / "m2", m / "dir_out")
    os.symlink(m / "a.jpg", m / "link_in.jpg")
    return tmp_path


def plan(tree, lines, *roots):
    manifest = tree / "m" / "list.txt"
    manifest.write_text("\n".join(lines) + "\n")
    t = plan_manifest(str(manifest), SourceConfig(allow_roots=tuple(roots)))
    return dict(zip(t.column("uri").to_pylist(), t.column("kind").to_pylist()))


def refusal(uri, *roots):
    row = {"uri": uri, "size": -1, "kind": KIND_REFUSED, "extra": None, "skip": None}
    [(item, _)] = list(iter_inputs(row, SourceConfig(allow_roots=tuple(roots))))
    assert item.data is None
    return item.read_error


def test_default_object_stores_anywhere_local_only_under_the_manifest(tree):
    m = tree / "m"
    kinds = plan(tree, ["a.jpg", "sub/../a.jpg", "sub/b.jpg", "s3://bucket/x.jpg", "s3a://bucket/y.jpg",
                        "gs://bucket/z.jpg", "az://container/w.jpg", "../outside.jpg", "../m2/x.jpg",
                        "/etc/passwd", "sub/../../outside.jpg"])
    assert kinds == {str(m / "a.jpg"): "file", str(m / "sub" / "b.jpg"): "file",
                     "s3://bucket/x.jpg": "file", "s3a://bucket/y.jpg": "file", "gs://bucket/z.jpg": "file",
                     "az://container/w.jpg": "file", str(tree / "outside.jpg"): KIND_REFUSED,
                     str(tree / "m2" / "x.jpg"): KIND_REFUSED, "/etc/passwd": KIND_REFUSED}
    msg = refusal("/etc/passwd")
    assert "local file outside the manifest's own folder" in msg and "--allow-root /that/folder" in msg


def test_other_schemes_are_refused_unless_a_root_names_them(tree):
    bad = ["local:///etc/shadow", "local://etc/shadow", "http://169.254.169.254/latest/meta-data/iam",
           "HTTPS://images.example.com/a.jpg", "memory://cache/x.jpg", "ftp://host/x.jpg", "sftp://host/x.jpg",
           "hdfs://nn/x.jpg", "data://x", "zip://a.jpg::s3://bucket/x.zip", "simplecache::s3://bucket/x.jpg",
           "unknown://x/y.jpg"]
    assert set(plan(tree, bad).values()) == {KIND_REFUSED}
    msg = refusal("http://169.254.169.254/latest/meta-data/iam")
    assert "points at http://" in msg and "(none given)" in msg and "--allow-root http://host/prefix/" in msg
    assert "local://" in refusal("local:///etc/shadow")
    assert "relative local:// path" in refusal("local://etc/shadow")
    assert "chained URL" in refusal("zip://a.jpg::s3://bucket/x.zip")


def test_an_explicit_https_root(tree):
    root = "https://images.example.com/pub/"
    kinds = plan(tree, ["https://images.example.com/pub/a.jpg", "https://images.example.com/pub",
                        "https://images.example.com/public/a.jpg", "https://images.example.com.evil.org/pub/a.jpg",
                        "https://images.example.com/pub/../admin", "https://images.example.com/pub/%2e%2e/admin",
                        "http://images.example.com/pub/a.jpg", "s3://bucket/x.jpg", "a.jpg"], root)
    allowed = {u for u, k in kinds.items() if k == "file"}
    assert allowed == {"https://images.example.com/pub/a.jpg", "https://images.example.com/pub"}
    # With roots given, only the roots: not even object stores or the manifest's own folder.
    assert kinds["s3://bucket/x.jpg"] == kinds[str(tree / "m" / "a.jpg")] == KIND_REFUSED
    assert f"none of the allowed roots ({root}) does" in refusal("http://images.example.com/pub/a.jpg", root)
    # A root of only a scheme allows the whole scheme.
    assert set(plan(tree, ["https://anything.example.org/x.jpg"], "https://").values()) == {"file"}


def test_file_uris_are_local_paths(tree):
    m = tree / "m"
    kinds = plan(tree, [f"file://{m}/a.jpg", f"file://localhost{m}/sub/b.jpg", "file:///etc/passwd",
                        f"file://otherhost{m}/a.jpg", f"FILE://{m}/sub/../a.jpg"])
    assert kinds == {str(m / "a.jpg"): "file", str(m / "sub" / "b.jpg"): "file", "/etc/passwd": KIND_REFUSED,
                     f"file://otherhost{m}/a.jpg": KIND_REFUSED}
    assert "another host (otherhost)" in refusal(f"file://otherhost{m}/a.jpg")
    # A file:// root is the same as the plain path.
    assert plan(tree, ["../m2/x.jpg"], f"file://{tree / 'm2'}") == {str(tree / "m2" / "x.jpg"): "file"}


def test_symbolic_links_out_of_a_root_are_refused(tree):
    m = tree / "m"
    kinds = plan(tree, ["link_out.jpg", "dir_out/x.jpg", "link_in.jpg"])
    assert kinds == {str(m / "link_out.jpg"): KIND_REFUSED, str(m / "dir_out" / "x.jpg"): KIND_REFUSED,
                     str(m / "link_in.jpg"): "file"}
    assert f"it resolves to {tree / 'outside.jpg'}" in refusal(str(m / "link_out.jpg"))
    # The same with an explicit root; a root that is itself reached through a link still works.
    assert plan(tree, ["link_out.jpg", "a.jpg"], str(m))[str(m / "link_out.jpg")] == KIND_REFUSED
    os.symlink(m, tree / "alias")
    assert plan(tree, ["a.jpg", "link_out.jpg"], str(tree / "alias")) == {
        str(m / "a.jpg"): "file", str(m / "link_out.jpg"): KIND_REFUSED}


def test_roots_are_path_component_prefixes(tree):
    kinds = plan(tree, ["s3://bucket/a", "s3://bucket/a/x.jpg", "s3://bucket/ab/x.jpg", "s3a://bucket/a/y.jpg",
                        "s3://bucket/a/../b/x.jpg", "../m2/x.jpg"], "s3://bucket/a/", str(tree / "m"))
    assert kinds == {"s3://bucket/a": "file", "s3://bucket/a/x.jpg": "file", "s3://bucket/ab/x.jpg": KIND_REFUSED,
                     "s3a://bucket/a/y.jpg": "file", "s3://bucket/a/../b/x.jpg": KIND_REFUSED,
                     str(tree / "m2" / "x.jpg"): KIND_REFUSED}  # m2 is not under m
    assert "s3:// outside the allowed roots" in refusal("s3://bucket/ab/x.jpg", "s3://bucket/a/")


def test_star_allows_anything(tree):
    lines = ["local:///etc/shadow", "http://169.254.169.254/latest", "memory://x", "../outside.jpg",
             "link_out.jpg", "s3://bucket/a/../b", "zip://a.jpg::s3://bucket/x.zip"]
    assert set(plan(tree, lines, "*").values()) == {"file"}


def test_a_remote_manifest_never_points_at_local_files():
    base = "s3://manifests/run1"
    assert _allowed("s3://other/x.jpg", (), base)
    assert not _allowed("/etc/passwd", (), base)
    assert not _allowed("http://169.254.169.254/latest", (), base)
