"""The two-tier cascade: first tier on every image, the second only inside the band, one row per
input whatever the second tier does, every tier's judgement kept (in one process and as one Ray
Data job with both tiers as actor pools)."""
import pytest

from jobs.cli import main
from tests.conftest import jpeg_bytes, textured
from zoomin_core import ImageInput, load_backend
from zoomin_core.cascade import Band, run_cascade
from tests.test_provenance import A1111, PIXELS, png

BAND = Band(0.3, 0.7)


def _inputs(n=10):
    # bright and dark images: the fake backend scores an image by its brightness
    return [ImageInput(f"t{i}.jpg", jpeg_bytes((textured(96, 80, seed=i) * (0.2 + 0.08 * i)).astype("uint8")))
            for i in range(n)]


def test_only_the_band_goes_on_and_the_second_tier_decides_there():
    first = load_backend("fake", threshold=BAND.high)
    rows = run_cascade(first, load_backend("fake", threshold=0.5), _inputs(), BAND)
    alone = run_cascade(first, load_backend("fake", threshold=0.5), _inputs(), Band(0.0, 1e-9))
    assert len(rows) == 10
    scores = [r.tiers[0].score for r in rows]
    assert {r.tiers[0].score for r in alone} == set(scores)
    inside = [r for r, s in zip(rows, scores) if BAND.low <= s < BAND.high]
    outside = [r for r, s in zip(rows, scores) if not BAND.low <= s < BAND.high]
    assert inside and outside
    for r in inside:
        assert len(r.tiers) == 2 and r.rationale.startswith("Escalated: the first tier (fake-1) scored")
        assert r.verdict == ("generated" if r.score >= 0.5 else "real") and r.threshold == 0.5
    for r in outside:
        assert len(r.tiers) == 1 and r.decided_by == "fake"
        assert r.verdict == ("generated" if r.score >= BAND.high else "real")   # the band's edges decide


def test_a_failing_second_tier_leaves_the_first_tiers_verdict():
    first = load_backend("fake", threshold=BAND.high)
    broken = load_backend("fake", fail_on_mean_above=0.0)   # refuses every image
    marked = ImageInput("marked.png", png(PIXELS, parameters=A1111))
    rows = run_cascade(first, broken, _inputs() + [marked], BAND)
    assert len(rows) == 11 and all(r.status == "ok" for r in rows)
    failed = [r for r in rows if len(r.tiers) == 2]
    assert failed
    for r in failed:
        assert r.tiers[1].status == "model_error" and "refusing a bright image" in r.tiers[1].error
        assert r.verdict == r.tiers[0].verdict and "the first tier's verdict stands" in r.rationale
    m = rows[-1]
    assert m.decided_by == "provenance" and m.tiers == ()    # decided before either tier


def test_flags_of_a_cascade_are_checked_before_anything_runs(tmp_path, capsys):
    out = str(tmp_path / "o")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 7 + b"junk, not a safetensors header" * 3)
    ckpt = tmp_path / "ckpt"   # the files a checkpoint has, none of them real
    ckpt.mkdir()
    for name, text in (("config.json", "{}"), ("tokenizer.json", "{}"), ("model.safetensors", "x" * 64)):
        (ckpt / name).write_text(text)
    for argv, says in (
        (["--escalate", "0.2:0.8"], "give --cascade FIRST,SECOND too"),
        (["--cascade", "compact,vlm", "--model", "x.safetensors", "--escalate", "0.2:0.8"], "say which tier"),
        (["--cascade", "compact,vlm", "--model", "fake=x", "--escalate", "0.2:0.8"], "not a backend of this scan"),
        (["--cascade", "compact,compact"], "must be different backends"),
        (["--cascade", "compact,vlm", "--escalate", "0.8:0.2"], "0 <= LOW < HIGH <= 1"),
        (["--cascade", "compact"], "takes two backends"),
        (["--backend", "vlm", "--cascade", "compact,vlm"], "disagree"),
        (["--cascade", "compact,vlm", "--escalate", "0.2:0.8"], "the vlm backend needs --model"),
        (["--model", str(bad)], "not compact weights this version can load"),
        (["--cascade", "compact,vlm", "--model", f"compact={bad}", "--escalate", "0.2:0.8"], "not compact weights"),
        (["--cascade", "compact,vlm", "--model", f"vlm={ckpt}", "--escalate", "0.2:0.8"],
         "model.safetensors: not a readable safetensors file"),
    ):
        assert main(["scan", str(tmp_path), "--out", out, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "o").exists()   # refused before --out was touched


@pytest.mark.ray
@pytest.mark.slow
def test_the_cascade_runs_as_one_ray_job(ray_local, tmp_path):
    from jobs.sinks import read_results
    from tests.tiny_vlm import build_llava
    src = tmp_path / "src"
    src.mkdir()
    for item in _inputs(12):
        (src / item.uri).write_bytes(item.data)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")
    out = tmp_path / "out"
    assert main(["scan", str(src), "--out", str(out), "--no-progress", "--cascade", "compact,fake",
                 "--escalate", "0:0.5", "--threshold", "0.4"]) == 0
    rows = read_results(out).to_pylist()
    assert len(rows) == 13 and len({r["uri"] for r in rows}) == 13
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 12 and [r for r in rows if r["status"] == "decode_error"]
    for r in ok:
        first = r["tiers"][0]
        assert first["model"].startswith("compact/")
        if first["score"] < 0.5:
            assert r["decided_by"] == "fake" and r["tiers"][1]["model"] == "fake-1"
            assert r["threshold"] == pytest.approx(0.4)
        else:
            assert r["decided_by"] == "compact" and len(r["tiers"]) == 1 and r["verdict"] == "generated"
    # a vision-language second tier whose answers cannot be read: the first tier's verdicts stand
    ckpt = build_llava(tmp_path / "llava")
    out2 = tmp_path / "out2"
    assert main(["scan", str(src), "--out", str(out2), "--no-progress", "--cascade", "compact,vlm",
                 "--model", f"vlm={ckpt}", "--escalate", "0:1", "--max-new-tokens", "8"]) == 0
    rows = [r for r in read_results(out2).to_pylist() if r["status"] == "ok"]
    assert len(rows) == 12
    for r in rows:
        assert [t["status"] for t in r["tiers"]] == ["ok", "unparseable"] and r["decided_by"] == "compact"
        assert r["verdict"] == r["tiers"][0]["verdict"]
