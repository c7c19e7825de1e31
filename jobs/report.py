"""`zoomin report`: one self-contained HTML page (thumbnails embedded) of a scan's results.

Most suspicious first; boxes drawn on each thumbnail with their zoom scores; first and final
verdict side by side; every error row listed with its status and message.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image, ImageDraw

from zoomin_core.decode import DecodeConfig, DecodeError, decode_full

from .sinks import read_results
from .sources import iter_bytes
from .storage import StorageConfig

THUMB = 320
COLOURS = ["#ff3b30", "#ff9500", "#ffcc00", "#34c759", "#5ac8fa"]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>zoomin report</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}}
.grid{{display:flex;flex-wrap:wrap;gap:16px}}
.card{{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px;width:{thumb}px}}
.card img{{display:block;max-width:{thumb}px;max-height:{thumb}px;margin:0 auto 6px}}
.gen{{border-top:5px solid #ff3b30}} .real{{border-top:5px solid #34c759}}
.v{{font-weight:600}} .uri{{font-size:11px;color:#666;word-break:break-all}}
.why{{font-size:12px;line-height:1.35;margin-top:6px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:4px 8px;font-size:13px;text-align:left}}
</style></head><body><h1>zoomin report</h1><p>{summary}</p>
<div class="grid">{cards}</div><h2>Errors ({n_err})</h2>{errors}</body></html>"""


def _thumbnail(data: bytes | None, boxes: list[dict]) -> str | None:
    """Data URI of a thumbnail with the boxes drawn (boxes are original pixels)."""
    if data is None:
        return None
    try:
        pixels = decode_full(data, DecodeConfig())
    except DecodeError:
        return None
    im = Image.fromarray(pixels)
    s = min(1.0, THUMB / max(im.size))
    im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(im)
    for n, b in enumerate(boxes):
        c = COLOURS[n % len(COLOURS)]
        draw.rectangle([b["x1"] * s, b["y1"] * s, b["x2"] * s - 1, b["y2"] * s - 1], outline=c, width=3)
        draw.text((b["x1"] * s + 4, b["y1"] * s + 2), f"{n + 1}:{b['score']:.2f}", fill=c)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(results: str, out: str, limit: int = 500, storage: StorageConfig = StorageConfig()) -> int:
    rows = read_results(results, storage=storage, require=True).to_pylist()
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: -(r["score"] or 0))
    bad = [r for r in rows if r["status"] != "ok"]
    shown = ok[:limit]
    boxes = {r["uri"]: r["boxes"] or [] for r in shown}
    thumbs = {uri: _thumbnail(data, boxes[uri]) for uri, data in iter_bytes(boxes, storage)}
    cards = []
    for r in shown:
        src = thumbs.get(r["uri"])
        img = f'<img src="{src}">' if src else "<p><i>image not readable from here</i></p>"
        first = f"first look: {r['initial_verdict']} ({r['initial_score']:.2f})" if r["initial_verdict"] else ""
        if r.get("consistency") is not None:
            first += f"; consistency {r['consistency']:.2f}"
        cls = "gen" if r["verdict"] == "generated" else "real"
        cards.append(
            f'<div class="card {cls}">{img}<div class="v">{html.escape(r["verdict"])} '
            f'{r["score"]:.2f}</div><div>{html.escape(first)}</div>'
            f'<div class="uri">{html.escape(r["uri"])} - {r["width"]}x{r["height"]}</div>'
            f'<div class="why">{html.escape(r["rationale"] or "")}</div></div>')
    errors = "<table><tr><th>uri</th><th>status</th><th>message</th></tr>" + "".join(
        f"<tr><td>{html.escape(r['uri'])}</td><td>{html.escape(r['status'])}</td>"
        f"<td>{html.escape(r['error'] or '')}</td></tr>" for r in bad) + "</table>" if bad else "<p>none</p>"
    n_gen = sum(1 for r in ok if r["verdict"] == "generated")
    summary = (f"{len(rows)} image(s): {n_gen} generated, {len(ok) - n_gen} real, {len(bad)} error(s). "
               f"Model: {html.escape(', '.join(sorted({r['model'] or '' for r in rows})))}."
               + (f" Showing the {limit} most suspicious." if len(ok) > limit else ""))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(PAGE.format(thumb=THUMB, summary=summary, cards="".join(cards),
                                     n_err=len(bad), errors=errors))
    return len(rows)
