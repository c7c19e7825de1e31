"""`zoomin report`: one self-contained HTML page of a scan's results, for a reviewer to work through.

Python decodes each shown image once and embeds three renditions as data URIs: a small thumbnail
for the grid, a larger one for the enlarged view, and the crop of every box (the region the zoom
stage looked at, cut as `geometry.region_box` cuts it). Nothing is drawn into the pixels: boxes,
labels, filters and sorting are done by the page's own script (jobs/report_page.py), so labels stay
legible at any size. All row data goes into the page as JSON and is shown through textContent.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

from PIL import Image

from zoomin_core.decode import DecodeConfig, DecodeError, decode_full
from zoomin_core.geometry import crop, region_box
from zoomin_core.rationale import decimals
from zoomin_core.records import Box
from zoomin_core.stages import ExamineConfig

from . import report_page
from .runs import read_record
from .sinks import open_output, read_results
from .sources import iter_bytes
from .storage import StorageConfig

THUMB_SIDE, THUMB_QUALITY = 360, 75     # grid thumbnails: a few thousand of these must stay light
LARGE_SIDE, LARGE_QUALITY = 1024, 80    # the enlarged view, only of the rows in the page
LARGE_ROWS, LARGE_MIN_SIDE = 500, 512   # above 500 rows the enlarged views share the pixels of 500
                                        # (a --limit 3000 page at 1024 px weighed 630 MB and took a
                                        # browser half a minute to open)
CROP_SIDE, CROP_QUALITY = 256, 80       # crops at native resolution up to this side
LOSSLESS_SIDE = 128                     # images this small go in as PNG: JPEG blocks would be most
                                        # of what a reviewer sees of them once enlarged
SMALL_SIDE = 200                        # shown enlarged (pixelated) with a note of their real size
WORKERS = min(4, os.cpu_count() or 1)   # decoding and encoding release the GIL

# Box colour by score: green (low) -> amber (0.5) -> red (high). The page draws its legend from it.
RAMP = ((0.0, (22, 163, 74)), (0.5, (245, 158, 11)), (1.0, (220, 38, 38)))


def score_colour(score: Optional[float]) -> tuple[str, str]:
    """(fill, ink) of a score on the ramp: the colour and a text colour legible on it."""
    s = min(max(float(score or 0.0), 0.0), 1.0)
    (a, ca), (b, cb) = next((lo, hi) for lo, hi in zip(RAMP, RAMP[1:]) if s <= hi[0])
    t = (s - a) / (b - a)
    rgb = [round(x + (y - x) * t) for x, y in zip(ca, cb)]
    luminance = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255
    return "#%02x%02x%02x" % tuple(rgb), "#111" if luminance > 0.55 else "#fff"


def _data_uri(im: Image.Image, side: int, quality: int) -> str:
    """The image shrunk to at most `side` px (never enlarged; the page scales small ones up)."""
    s = side / max(im.size)
    if s < 1:
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                       Image.Resampling.BICUBIC, reducing_gap=2.0)
    buf = io.BytesIO()
    if max(im.size) <= LOSSLESS_SIDE:
        im.save(buf, format="PNG", optimize=True)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def large_side(rows: int) -> int:
    """Longest side of the enlarged renditions in a page of `rows` images."""
    return max(LARGE_MIN_SIDE, min(LARGE_SIDE, int(LARGE_SIDE * (LARGE_ROWS / max(rows, 1)) ** 0.5)))


def render_images(data: Optional[bytes], boxes: list[dict], margin: float, min_side: int,
                  max_pixels: int = DecodeConfig.max_pixels, large: int = LARGE_SIDE) -> Optional[dict]:
    """Thumbnail, enlarged rendition and one crop per box (boxes are original pixels), or None
    when the bytes cannot be read or decoded from here."""
    if data is None:
        return None
    try:
        pixels = decode_full(data, DecodeConfig(max_pixels=max_pixels))
    except DecodeError:
        return None
    im = Image.fromarray(pixels)
    crops = []
    for b in boxes:
        region = region_box(Box(b["x1"], b["y1"], b["x2"], b["y2"], b["score"]),
                            im.width, im.height, margin, min_side)
        cut = crop(pixels, region).pixels
        if cut.size == 0:   # a box wholly outside the image: nothing to show
            crops.append(None)
            continue
        crops.append({"src": _data_uri(Image.fromarray(cut), CROP_SIDE, CROP_QUALITY),
                      "region": [int(region.x1), int(region.y1), int(region.x2), int(region.y2)],
                      "w": cut.shape[1], "h": cut.shape[0]})
    thumb = _data_uri(im, THUMB_SIDE, THUMB_QUALITY)
    # An image no larger than its thumbnail has nothing more to show enlarged.
    big = _data_uri(im, large, LARGE_QUALITY) if max(im.size) > THUMB_SIDE else None
    return {"thumb": thumb, "big": big, "crops": crops}


def _render_all(boxes: dict, storage: StorageConfig, settings: dict) -> Iterator[tuple]:
    """(uri, images) for each uri, a few images in flight at once: a bounded window, so that a
    page of thousands never holds more than a handful of original files in memory."""
    with ThreadPoolExecutor(WORKERS) as pool:
        pending: deque = deque()
        for uri, data in iter_bytes(boxes, storage):
            pending.append((uri, pool.submit(render_images, data, boxes[uri], settings["margin"], settings["min_side"],
                                             settings["max_pixels"], large_side(len(boxes)))))
            if len(pending) > 2 * WORKERS:
                uri, job = pending.popleft()
                yield uri, job.result()
        for uri, job in pending:
            yield uri, job.result()


def scan_settings(results: str, storage: StorageConfig) -> dict:
    """How the scan cut its crops and which images it decoded: its own settings when its run
    record holds them (jobs/scan.py `job_identity`), else the defaults."""
    record = read_record(open_output(results, storage)) or {}
    job = record.get("job") or {}
    recorded = job.get("margin") is not None and job.get("min_crop_side") is not None
    return {"margin": float(job["margin"]) if recorded else ExamineConfig.margin,
            "min_side": int(job["min_crop_side"]) if recorded else ExamineConfig.min_crop_side,
            # a scan given a higher --max-pixels scored images the default would refuse to decode
            "max_pixels": int(job.get("max_pixels") or DecodeConfig.max_pixels), "recorded": recorded}


def script_json(obj) -> str:
    """JSON safe inside <script>: no `</script>`, `<!--` or entity can come out of the data."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c").replace(
        ">", "\\u003e").replace("&", "\\u0026")


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or uri


def _row(i: int, r: dict, thumb: Optional[str]) -> dict:
    """What the page's script needs of one row (the `consistency` column is not shown)."""
    boxes = []
    for b in r.get("boxes") or []:
        score = round(float(b["score"]), 4)   # float32 in the file: 0.95 reads as 0.949999...
        fill, ink = score_colour(score)
        boxes.append({**{k: b[k] for k in ("x1", "y1", "x2", "y2")}, "score": score, "colour": fill, "ink": ink})
    fill, ink = score_colour(r.get("score"))
    w, h = r.get("width"), r.get("height")
    rnd = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
    return {"i": i, "name": _name(r["uri"]), "uri": r["uri"], "status": r["status"], "error": r.get("error"),
            "w": w, "h": h, "verdict": r.get("verdict"), "score": rnd(r.get("score")), "colour": fill, "ink": ink,
            "first": r.get("initial_verdict"), "first_score": rnd(r.get("initial_score")),
            "prior": rnd(r.get("prior")), "threshold": r.get("threshold"), "decided_by": r.get("decided_by"),
            # decimals at which score and threshold read the way the verdict goes (0.9588 < 0.9589)
            "digits": decimals(r["score"], r["threshold"]) if r.get("score") is not None
            and r.get("threshold") is not None else 2,
            "tiers": "; ".join(f"{t['model']}: {t['verdict'] or t['status']}"
                               + (f" {float(t['score']):.2f}" if t.get("score") is not None else "")
                               for t in r.get("tiers") or []) or None,
            "marks": "; ".join(f"{m['signal']} ({m['says']})" for m in r.get("provenance") or []) or None,
            "boxes": boxes, "rationale": r.get("rationale"),
            "explanation": r.get("explanation"), "model": r.get("model"), "stages": r.get("stages"),
            "small": bool(w and h and max(w, h) < SMALL_SIDE),
            "thumb": thumb}


def _header(rows: list[dict], ok: list[dict], bad: list[dict], shown: int, limit: int,
            settings: dict) -> str:
    """The summary under the title (escaped here: model names come from the data)."""
    n_gen = sum(1 for r in ok if r.get("verdict") == "generated")
    statuses: dict = {}
    for r in bad:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    errs = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    models = ", ".join(sorted({r.get("model") for r in rows if r.get("model")})) or "none recorded"
    text = (f"{len(rows)} image(s): {n_gen} generated, {len(ok) - n_gen} real, {len(bad)} error(s)"
            + (f" ({errs})" if errs else "") + f". Model: {models}. Crops: box + {settings['margin']:g} margin, "
            f"at least {settings['min_side']} px a side "
            f"({'from the run record' if settings['recorded'] else 'defaults'}).")
    if large_side(shown) < LARGE_SIDE:
        text += f" Enlarged views are at most {large_side(shown)} px a side, to keep a page of {shown} images light."
    out = f'<p class="sum">{html.escape(text)}</p>'
    if shown < len(ok):
        out += (f'<p class="cut">Only the {shown} most suspicious of {len(ok)} scored images are in this page '
                f'(--limit {limit}); every error row is listed.</p>')
    return out


def write_report(results: str, out: str, limit: int = 500, storage: StorageConfig = StorageConfig(),
                 order: Optional[list] = None, settings_from: Optional[str] = None) -> int:
    """Write the page of `results` to `out` (a local file); returns the number of rows read.
    `order`: uris in the order to show them (default: most suspicious first); `settings_from`:
    the scan whose crop settings the rows were made with (default: `results` itself)."""
    parent = Path(out).parent
    if not parent.is_dir():  # said before any reading: a mistyped path is not worth minutes of thumbnails
        raise FileNotFoundError(f"{out}: folder {parent} does not exist")
    rows = read_results(results, storage=storage, require=True).to_pylist()
    rank = {u: i for i, u in enumerate(order or [])}
    ok = sorted((r for r in rows if r["status"] == "ok"),
                key=lambda r: (rank.get(r["uri"], len(rank)), -(r.get("score") or 0), r["uri"]))
    bad = sorted((r for r in rows if r["status"] != "ok"), key=lambda r: (r["status"], r["uri"]))
    shown = ok[:max(0, limit)]
    settings = scan_settings(settings_from or results, storage)
    where: dict = {}   # uri -> its rows' indices in the page's data
    for i, r in enumerate(shown):
        where.setdefault(r["uri"], []).append(i)
    thumbs = {}
    tmp = Path(f"{out}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            legend = report_page.legend(", ".join(f"rgb{c} {p * 100:g}%" for p, c in RAMP))
            f.write(report_page.head(_header(rows, ok, bad, len(shown), limit, settings), legend))
            # Each row's enlarged rendition and crops go to the file as soon as they are made (the
            # page parses one only when its row is opened): a page of hundreds of megabytes is
            # never held in memory, only the thumbnails, which the rows' JSON needs at the end.
            boxes = {r["uri"]: r.get("boxes") or [] for r in shown}
            for uri, images in _render_all(boxes, storage, settings):
                if images:
                    thumbs[uri] = images["thumb"]
                    detail = script_json({"big": images["big"], "crops": images["crops"]})
                    f.writelines(f'<script type="application/json" id="d{i}">{detail}</script>\n'
                                 for i in where[uri])
            data = [_row(i, r, thumbs.get(r["uri"])) for i, r in enumerate(shown + bad)]
            f.write(report_page.tail(script_json({"rows": data})))
        tmp.replace(out)   # the page appears whole, never half-written
    finally:
        tmp.unlink(missing_ok=True)
    return len(rows)
