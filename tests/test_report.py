"""`zoomin report`: the page holds every row once, draws boxes over (never into) the thumbnails,
colours them by score, embeds each box's crop, escapes what the data says, loads nothing from
outside, refuses a missing folder before any work, and says when --limit cut rows. No Ray: the
results folder is written here with the product's own schema."""
import base64
import io
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import report
from jobs.report import score_colour, write_report
from zoomin_core.geometry import region_box
from zoomin_core.provenance import Signal
from zoomin_core.records import Box, ResultRow, Tier
from zoomin_core.schema import rows_to_table
from tests.conftest import jpeg_bytes, textured

EVIL_NAME = "script><img src=x onerror=alert(2)>.jpg"


def _row(uri, w, h, score, boxes=(), status="ok", error=None, verdict=None):
    if status != "ok":
        return ResultRow(image_id=uri, uri=uri, status=status, error=error, width=None, height=None,
                         verdict=None, score=None, initial_verdict=None, initial_score=None)
    return ResultRow(image_id=uri, uri=uri, status="ok", error=None, width=w, height=h,
                     verdict=verdict or ("generated" if score >= 0.5 else "real"), score=score,
                     initial_verdict="real", initial_score=0.3, boxes=tuple(boxes),
                     explanation="first look", rationale=f"rationale of {uri.rsplit('/', 1)[-1]}",
                     model="compact-test", threshold=0.5, decided_by="compact",
                     provenance=(Signal("iptc_xmp", "IPTC DigitalSourceType digitalCapture", "capture"),),
                     tiers=(Tier("compact-test", "ok", "real", 0.31), Tier("vlm/tiny", "unparseable", None, None, "x")))


@pytest.fixture
def results(tmp_path):
    """A results folder over images made here: a photo with boxes, a 40x40 PNG, a panorama, a
    file whose name carries markup, a corrupt file and a row whose bytes are gone."""
    img = tmp_path / "img"
    img.mkdir()
    photo = textured(400, 300, seed=1)
    (img / "photo.jpg").write_bytes(jpeg_bytes(photo))
    Image.fromarray(textured(40, 40, seed=2)).save(img / "tiny.png")
    (img / "pano.jpg").write_bytes(jpeg_bytes(textured(1200, 150, seed=3)))
    # A uri that closes a script and opens markup of its own (its folder ends in "<", so the
    # uri reads ".../<script>alert(1)</script><img src=x onerror=alert(2)>.jpg").
    (img / "<script>alert(1)<").mkdir()
    evil = img / "<script>alert(1)<" / "script><img src=x onerror=alert(2)>.jpg"
    evil.write_bytes(jpeg_bytes(textured(64, 64, seed=4)))
    (img / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg at all")
    rows = [
        _row(str(img / "photo.jpg"), 400, 300, 0.91, [Box(20, 30, 120, 110, 0.95), Box(300, 200, 320, 215, 0.1)]),
        _row(str(img / "tiny.png"), 40, 40, 0.62, [Box(5, 5, 20, 20, 0.5)]),
        _row(str(img / "pano.jpg"), 1200, 150, 0.2),
        _row(str(evil), 64, 64, 0.4, verdict="real"),
        _row(str(img / "corrupt.jpg"), 0, 0, 0, status="decode_error", error="not a recognised image <b>"),
        _row(str(img / "gone.jpg"), 0, 0, 0, status="read_error", error="No such file"),
    ]
    out = tmp_path / "results"
    out.mkdir()
    pq.write_table(rows_to_table(rows), out / "part-0.parquet")
    return {"out": out, "img": img, "photo": photo, "rows": rows}


def _page(path):
    text = path.read_text()
    data = json.loads(re.search(r'<script type="application/json" id="zoomin-data">(.*?)</script>', text, re.S)[1])
    details = {int(i): json.loads(j) for i, j in
               re.findall(r'<script type="application/json" id="d(\d+)">(.*?)</script>', text, re.S)}
    return text, data["rows"], details


def _decode(uri):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"), dtype=np.float32)


def test_every_row_once_with_thumbnails_free_of_drawings(results, tmp_path):
    page = tmp_path / "page.html"
    assert write_report(str(results["out"]), str(page)) == 6
    text, rows, details = _page(page)
    assert sorted(r["uri"] for r in rows) == sorted(r.uri for r in results["rows"])
    assert [r["i"] for r in rows] == list(range(6))
    # Most suspicious first, then the errors; each error with its status and message.
    assert [r["name"] for r in rows[:4]] == ["photo.jpg", "tiny.png", EVIL_NAME, "pano.jpg"]
    assert {r["status"] for r in rows[4:]} == {"decode_error", "read_error"}
    assert all(r["thumb"] is None for r in rows[4:]) and rows[4]["error"].startswith("not a recognised")
    # The thumbnail is the photo shrunk, nothing drawn on it: close to a plain resize, and no
    # further from it along the boxes' outlines than anywhere else (a drawn outline or label
    # would differ there by ~100 grey levels; JPEG of this noisy image differs by ~10).
    photo = rows[0]
    thumb = _decode(photo["thumb"])
    plain = np.asarray(Image.fromarray(results["photo"]).resize((thumb.shape[1], thumb.shape[0]),
                                                                 Image.Resampling.BICUBIC), dtype=np.float32)
    diff = np.abs(thumb - plain).max(axis=2)
    s = thumb.shape[1] / 400
    outline = np.zeros(diff.shape, bool)
    for b in photo["boxes"]:
        x1, y1, x2, y2 = (round(b[k] * s) for k in ("x1", "y1", "x2", "y2"))
        outline[y1:y2, x1:x1 + 3] = outline[y1:y2, x2 - 3:x2] = True
        outline[y1:y1 + 3, x1:x2] = outline[y2 - 3:y2, x1:x2] = True
        outline[max(0, y1 - 14):y1 + 14, x1:x1 + 40] = True   # where a label would sit
    assert diff.mean() < 16 and diff[outline].mean() < diff.mean() * 1.3 + 2, (diff.mean(), diff[outline].mean())
    assert max(thumb.shape[:2]) <= report.THUMB_SIDE
    # The 40x40 image is marked to be shown enlarged, losslessly, at its own size in the data.
    tiny = rows[1]
    assert tiny["small"] and tiny["thumb"].startswith("data:image/png") and _decode(tiny["thumb"]).shape == (40, 40, 3)
    assert not photo["small"]
    # the enlarged view's facts: the threshold that applied, who decided, each tier's judgement
    assert photo["threshold"] == 0.5 and photo["decided_by"] == "compact"
    assert photo["tiers"] == "compact-test: real 0.31; vlm/tiny: unparseable"
    assert photo["marks"] == "iptc_xmp (capture)"
    assert "image-rendering:pixelated" in text


def test_box_colour_follows_score_and_each_box_has_its_crop(results, tmp_path):
    page = tmp_path / "page.html"
    write_report(str(results["out"]), str(page))
    _, rows, details = _page(page)
    photo = rows[0]
    hi, lo = photo["boxes"]
    assert (hi["score"], lo["score"]) == (pytest.approx(0.95), pytest.approx(0.1))
    rgb = lambda c: tuple(int(c[k:k + 2], 16) for k in (1, 3, 5))  # noqa: E731
    (r_hi, g_hi, _), (r_lo, g_lo, _) = rgb(hi["colour"]), rgb(lo["colour"])
    assert r_hi > g_hi and g_lo > r_lo                      # high red, low green
    assert score_colour(0.95) == (hi["colour"], hi["ink"])
    ramp = [rgb(score_colour(s)[0]) for s in np.linspace(0, 1, 11)]
    assert all(a[1] >= b[1] for a, b in zip(ramp, ramp[1:]))        # less green as the score rises
    assert all(a[0] <= b[0] for a, b in zip(ramp[:6], ramp[1:6]))   # more red up to amber
    assert ramp[5][0] > 200 and ramp[5][1] > 120 and ramp[5][2] < 60  # amber in the middle
    assert score_colour(None) == score_colour(0.0) and score_colour(1.7) == score_colour(1.0)
    # One crop per box, of the region the zoom cut (box + margin, at least 64 px a side).
    crops = details[0]["crops"]
    assert len(crops) == 2
    decoded = np.asarray(Image.open(results["img"] / "photo.jpg").convert("RGB"), dtype=np.float32)
    for b, c in zip(photo["boxes"], crops):
        want = region_box(Box(b["x1"], b["y1"], b["x2"], b["y2"]), 400, 300, 0.15, 64)
        assert c["region"] == [want.x1, want.y1, want.x2, want.y2]
        assert (c["w"], c["h"]) == (want.x2 - want.x1, want.y2 - want.y1)
        x1, y1, x2, y2 = c["region"]
        got = _decode(c["src"])
        d = 6 if x2 + 6 <= 400 else -6
        here, beside = decoded[y1:y2, x1:x2], decoded[y1:y2, x1 + d:x2 + d]   # the crop is of these pixels
        assert np.abs(got - here).mean() < 6 < np.abs(got - beside).mean()
    assert min(crops[1]["w"], crops[1]["h"]) >= 64           # a 20x15 box grows to the minimum side
    assert _decode(details[0]["big"]).shape == (300, 400, 3)   # enlarged view: native up to 1024 px
    assert details[1]["big"] is None                        # 40 px: the thumbnail is all there is
    assert details[1]["crops"][0]["region"] == [0, 0, 40, 40]   # a crop cannot leave a 40 px image
    assert "legend" in page.read_text()


def test_crop_settings_come_from_the_run_record(results, tmp_path):
    (results["out"] / "_run.json").write_text(json.dumps({"job": {"margin": 0.5, "min_crop_side": 32}}))
    page = tmp_path / "page.html"
    write_report(str(results["out"]), str(page))
    text, rows, details = _page(page)
    b = rows[0]["boxes"][0]
    want = region_box(Box(b["x1"], b["y1"], b["x2"], b["y2"]), 400, 300, 0.5, 32)
    assert details[0]["crops"][0]["region"] == [want.x1, want.y1, want.x2, want.y2]
    assert "0.5 margin, at least 32 px a side (from the run record)" in text


def test_untrusted_text_is_escaped_and_nothing_loads_from_outside(results, tmp_path):
    page = tmp_path / "page.html"
    write_report(str(results["out"]), str(page))
    text, rows, _ = _page(page)
    assert "<script>alert(1)" not in text and "<img src=x" not in text and "<b>" not in text
    evil = next(r for r in rows if r["name"] == EVIL_NAME)   # the JSON reads back whole
    assert evil["uri"].endswith("/<script>alert(1)</script><img src=x onerror=alert(2)>.jpg") and evil["thumb"]
    # Only the page's own scripts: the data's `</script>` cannot close one early.
    assert len(re.findall(r"<script\b", text)) == len(re.findall(r"</script>", text))
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", text, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", text, re.I)
    assert "textContent" in text and "innerHTML" not in text


def test_a_missing_folder_is_refused_before_any_work(results, tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(report, "read_results", lambda *a, **k: called.append(1))
    out = tmp_path / "missing" / "page.html"
    with pytest.raises(FileNotFoundError, match=r"page.html: folder .*missing does not exist"):
        write_report(str(results["out"]), str(out))
    assert not called and not (tmp_path / "missing").exists()


def test_limit_cuts_the_least_suspicious_and_says_so(results, tmp_path):
    page = tmp_path / "page.html"
    write_report(str(results["out"]), str(page), limit=2)
    text, rows, details = _page(page)
    scored = [r for r in rows if r["status"] == "ok"]
    assert [r["name"] for r in scored] == ["photo.jpg", "tiny.png"]
    assert len(rows) == 4                       # the two errors are still listed
    assert "Only the 2 most suspicious of 4 scored images" in text and "--limit 2" in text
    assert set(details) == {0, 1}               # no larger renditions of rows not shown
    write_report(str(results["out"]), str(page))
    assert "most suspicious of" not in page.read_text()


def test_a_large_image_gets_a_larger_rendition_for_the_enlarged_view(tmp_path):
    (tmp_path / "big.jpg").write_bytes(jpeg_bytes(textured(1600, 900, seed=5)))
    out = tmp_path / "results"
    out.mkdir()
    pq.write_table(rows_to_table([_row(str(tmp_path / "big.jpg"), 1600, 900, 0.7, [Box(100, 100, 900, 700, 0.8)])]),
                   out / "part-0.parquet")
    page = tmp_path / "page.html"
    write_report(str(out), str(page))
    _, rows, details = _page(page)
    assert _decode(rows[0]["thumb"]).shape == (202, 360, 3)
    assert _decode(details[0]["big"]).shape == (576, 1024, 3)
    crop = details[0]["crops"][0]
    want = region_box(Box(100, 100, 900, 700), 1600, 900, 0.15, 64)
    assert crop["region"] == [want.x1, want.y1, want.x2, want.y2] and crop["w"] > report.CROP_SIDE
    assert max(_decode(crop["src"]).shape) == report.CROP_SIDE  # stored no larger than shown


def test_enlarged_views_shrink_only_for_pages_of_many_rows():
    assert report.large_side(1) == report.large_side(500) == 1024
    assert 512 < report.large_side(1000) < 1024 and report.large_side(100_000) == 512


@pytest.mark.ray
def test_relabel_lists_disagreements_most_confident_first(ray_local, tmp_path, capsys):
    """A labels file that contradicts some verdicts: those rows, in order of confidence, and a page."""
    import pyarrow.parquet as pq

    from jobs.cli import main as cli
    from jobs.relabel import disagreements
    from jobs.sources import SAMPLES_DIR
    rows = [{"uri": f"/x/{n}.png", "status": "ok", "verdict": v, "score": s} for n, v, s in
            (("a", "generated", 0.99), ("b", "generated", 0.61), ("c", "real", 0.02), ("d", "real", 0.40),
             ("e", "generated", 0.97))]
    labels = [{"uri": "/x/a.png", "label": "real"}, {"uri": "/x/b.png", "label": "real"},
              {"uri": "/x/c.png", "label": "generated"}, {"uri": "/x/d.png", "label": "real"},
              {"uri": "/elsewhere/e.png", "label": "generated"}]
    found = disagreements(rows, labels)
    assert [r["uri"] for r in found] == ["/x/a.png", "/x/c.png", "/x/b.png"]
    assert found[0]["label"] == "real" and found[0]["confidence"] == pytest.approx(0.49)
    # the command, on a real scan of the samples with labels that call every sample real
    results = tmp_path / "res"
    assert cli(["scan", "--out", str(results), "--no-progress"]) == 0
    lab = tmp_path / "labels.jsonl"
    lab.write_text("".join(json.dumps({"file": str(p), "label": "real"}) + "\n"
                           for p in sorted(SAMPLES_DIR.iterdir()) if p.suffix == ".jpg"))
    capsys.readouterr()
    assert cli(["relabel", str(results), "--labels", str(lab), "--out", str(tmp_path / "review")]) == 0
    said = capsys.readouterr().out
    table = pq.read_table(tmp_path / "review" / "disagreements.parquet").to_pylist()
    from jobs.sinks import read_results
    n = sum(1 for r in read_results(results).to_pylist() if r["uri"].endswith(".jpg") and r["status"] == "ok")
    assert table and f"{len(table)} of {n} labelled image(s) with a verdict (10 scanned)" in said
    assert all(r["verdict"] == "generated" for r in table)
    page = (tmp_path / "review" / "review.html").read_text()
    assert all(r["uri"].rsplit("/", 1)[-1] in page for r in table) and "Labelled real; the model says" in page
    # its own output is replaced; a folder of other files is refused
    assert cli(["relabel", str(results), "--labels", str(lab), "--out", str(tmp_path / "review")]) == 0
    assert cli(["relabel", str(results), "--labels", str(lab), "--out", str(SAMPLES_DIR)]) == 2
    assert "a folder with other files in it" in capsys.readouterr().err
