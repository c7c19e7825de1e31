"""The report page's HTML, CSS and script (jobs/report.py fills it in).

The script renders cards from the embedded JSON 200 at a time (data URIs cannot be lazy-loaded by
the browser, so thousands of <img> tags would all decode at once), draws boxes as overlays placed
in percentages of the image, and opens a card in a lightbox (also on load when the address ends
in `#open=N`, N being the row's index in the data, so a link or a headless browser can show one).
Every text from the data goes in through textContent or setAttribute, never as markup.
"""
from __future__ import annotations

import re

CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;background:#f1f1f3;color:#1d1d1f}
header{padding:14px 20px 0}
h1{font-size:20px;margin:0 0 4px}
.sum{margin:0 0 6px;color:#444}
.cut{margin:0 0 6px;padding:6px 10px;background:#fff4d6;border:1px solid #f0c36d;border-radius:6px;display:inline-block}
.bar{position:sticky;top:0;z-index:5;display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;
 padding:8px 20px;background:rgba(241,241,243,.96);border-bottom:1px solid #ddd}
.bar label{font-size:12px;color:#555;display:flex;gap:5px;align-items:center}
.bar select,.bar input{font:inherit;padding:3px 6px;border:1px solid #bbb;border-radius:5px;background:#fff}
.bar input{width:210px}
#count{font-size:12px;color:#555;margin-left:auto}
.legend{display:flex;align-items:center;gap:6px;font-size:12px;color:#555}
.ramp{width:140px;height:12px;border-radius:3px;border:1px solid rgba(0,0,0,.25)}
main{padding:14px 20px 40px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:14px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.12);overflow:hidden;cursor:pointer;
 border-top:4px solid #999;display:flex;flex-direction:column;min-width:0}
.card:hover,.card:focus{box-shadow:0 0 0 2px #3b82f6;outline:none}
.card.gen{border-top-color:#dc2626}.card.real{border-top-color:#16a34a}.card.err{border-top-color:#6b7280}
.thumb{position:relative;height:240px;background:#2b2b30;display:flex;align-items:center;justify-content:center;padding:18px 8px 8px}
.thumb .pic{width:min(100%,calc(214px * var(--r)))}
.pic{isolation:isolate;position:relative;aspect-ratio:var(--r);margin:0 auto;max-width:100%}
.pic img{display:block;width:100%;height:100%}
.pic.small img,.crop img.px{image-rendering:pixelated}
.box{position:absolute;border:2px solid;box-shadow:0 0 0 1px rgba(0,0,0,.55),inset 0 0 0 1px rgba(0,0,0,.35);min-width:3px;min-height:3px}
.lab{position:absolute;left:-2px;bottom:100%;white-space:nowrap;font:600 11px/1.35 system-ui,sans-serif;
 padding:0 4px;border-radius:3px 3px 3px 0;box-shadow:0 0 0 1px rgba(0,0,0,.4)}
.lab.in{bottom:auto;top:0;border-radius:0 0 3px 0}
.lab.right{left:auto;right:-2px;border-radius:3px 3px 0 3px}
.lab.below{bottom:auto;top:100%;border-radius:0 3px 3px 3px}
.lab.inb{bottom:0;border-radius:0 3px 0 0}
.box.hl{border-width:3px;z-index:99!important;box-shadow:0 0 0 2px #fff,0 0 0 3px #000}
.note{position:absolute;right:6px;bottom:6px;font-size:11px;background:rgba(0,0,0,.7);color:#fff;padding:1px 6px;border-radius:4px}
.noimg{color:#ddd;text-align:center;font-size:13px;padding:0 10px}
.noimg b{display:block;font-size:16px;margin-bottom:4px}
.meta{padding:8px 10px 10px;min-width:0}
.head{display:flex;align-items:center;gap:8px;min-width:0}
.verdict{font-weight:650;text-transform:uppercase;font-size:12px;letter-spacing:.03em}
.gen .verdict{color:#b91c1c}.real .verdict{color:#15803d}.err .verdict{color:#4b5563}
.score{font-weight:700;padding:0 6px;border-radius:4px;font-size:13px}
.first{font-size:12px;color:#666;margin-left:auto;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;min-width:0}
.first.flip{color:#6d28d9;font-weight:600}
.name{font-weight:600;margin-top:4px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.sub{font-size:12px;color:#666;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.why{font-size:12.5px;color:#333;margin:5px 0 0;display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden;overflow-wrap:anywhere}
.err .why{color:#7f1d1d}
#more-wrap{text-align:center;margin:18px 0}
#more{font:inherit;padding:8px 18px;border-radius:6px;border:1px solid #bbb;background:#fff;cursor:pointer}
#empty{color:#666;padding:30px;text-align:center}
body.noscroll{overflow:hidden}
.lb{position:fixed;inset:0;z-index:10;background:rgba(10,10,12,.82);display:flex;align-items:center;justify-content:center;padding:2vh 2vw}
.lb[hidden]{display:none}
.panel{background:#fff;border-radius:10px;width:100%;max-width:1800px;height:100%;display:flex;flex-direction:column;overflow:hidden}
.ptop{display:flex;align-items:center;gap:10px;padding:8px 12px;border-bottom:1px solid #e5e5e5}
.ptop .name{margin:0;flex:1;font-size:15px}
.ptop button{font:inherit;font-size:18px;line-height:1;padding:4px 10px;border:1px solid #ccc;border-radius:6px;background:#fff;cursor:pointer}
#pos{font-size:12px;color:#666}
.pbody{flex:1;display:flex;min-height:0}
.stage{flex:1 1 62%;background:#2b2b30;display:flex;align-items:center;justify-content:center;padding:26px 16px 16px;min-width:0}
.stage .pic{width:min(100%,calc((96vh - 110px) * var(--r)))}
.stage .lab{font-size:13px}
.info{flex:1 1 38%;max-width:640px;overflow:auto;padding:12px 16px 20px;border-left:1px solid #e5e5e5}
.info h3{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#666;margin:16px 0 6px}
.info dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0 0;font-size:13px}
.info dt{color:#666}.info dd{margin:0;overflow-wrap:anywhere}
.info p{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.crops{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.crop{margin:0;display:flex;flex-direction:column;gap:4px;cursor:default;width:min-content}
.cwrap{position:relative;border:3px solid;background:#2b2b30;align-self:flex-start}
.cwrap img{display:block}
.inbox{position:absolute;border:1px dashed #fff;box-shadow:0 0 0 1px rgba(0,0,0,.6)}
.crop figcaption{font-size:12px;color:#555}
.crop .chip{font-weight:600;padding:0 5px;border-radius:3px;margin-right:4px;white-space:nowrap}
@media (max-width:900px){.pbody{flex-direction:column;overflow:auto}.stage{flex:none}.info{max-width:none;border-left:0;overflow:visible}
 .stage .pic{width:min(100%,calc(60vh * var(--r)))}}
"""

SCRIPT = r"""
"use strict";
const ROWS = JSON.parse(document.getElementById("zoomin-data").textContent).rows;
const STEP = 200;
const $ = (id) => document.getElementById(id);
let view = [], shown = 0, cur = -1;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
const fmt = (s) => (s == null ? "-" : s.toFixed(2));
const fmtTo = (s, d) => (s == null ? "-" : s.toFixed(d || 2));
const pct = (v) => (100 * v).toFixed(3) + "%";
const dims = (r) => (r.w && r.h ? `${r.w}\u00d7${r.h} px` : "size unknown");

// The image with its boxes laid over it; .pic keeps the image's aspect ratio, so percentages of it
// are percentages of the image at any displayed size.
function picture(r, src) {
  const pic = el("div", "pic" + (r.small ? " small" : ""));
  pic.style.setProperty("--r", (r.w / r.h).toFixed(5));
  const img = el("img");
  img.src = src;
  img.alt = r.name;
  pic.append(img);
  r.boxes.forEach((b, n) => {
    const d = el("div", "box");
    d.dataset.n = n;
    Object.assign(d.style, {left: pct(b.x1 / r.w), top: pct(b.y1 / r.h), width: pct((b.x2 - b.x1) / r.w),
                            height: pct((b.y2 - b.y1) / r.h), borderColor: b.colour});
    const lab = el("span", "lab", `${n + 1} \u00b7 ${b.score.toFixed(2)}`);
    lab.style.background = b.colour;
    lab.style.color = b.ink;
    // Boxes set no z-index (no stacking context of their own), so every chip lies above every
    // box's border, and where chips overlap the higher-scored region's is on top.
    lab.style.zIndex = 10 + r.boxes.length - n;
    if (b.x1 / r.w > 0.72) lab.classList.add("right");    // keep the chip inside the frame
    d.append(lab);
    pic.append(d);
  });
  requestAnimationFrame(() => declutter(pic));   // once laid out: chips must not hide each other
  return pic;
}

// Each chip, highest score first, takes the place (above its box, inside its top, below it,
// inside its bottom) inside the picture that overlaps the chips already placed the least.
function declutter(pic) {
  const frame = pic.getBoundingClientRect();
  if (!frame.width) return;   // not shown (a filtered-out card)
  const placed = [];
  const overlap = (r) => placed.reduce((sum, q) => sum + Math.max(0, Math.min(r.right, q.right) - Math.max(r.left, q.left))
                                                 * Math.max(0, Math.min(r.bottom, q.bottom) - Math.max(r.top, q.top)), 0);
  const places = ["", "in", "below", "inb"];
  for (const lab of pic.querySelectorAll(".lab")) {
    let best = null;
    for (const place of places) {
      lab.classList.remove(...places.slice(1));
      if (place) lab.classList.add(place);
      const r = lab.getBoundingClientRect();
      const cost = overlap(r) + (r.top < frame.top - 1 || r.bottom > frame.bottom + 1 ? 1e6 : 0);
      if (best === null || cost < best.cost) best = {place, cost};
      if (cost === 0) break;
    }
    lab.classList.remove(...places.slice(1));
    if (best.place) lab.classList.add(best.place);
    placed.push(lab.getBoundingClientRect());
  }
}

function scoreChip(r) {
  const s = el("span", "score", fmtTo(r.score, r.digits));
  s.style.background = r.colour;
  s.style.color = r.ink;
  return s;
}

// The scan's first verdict; marked when zooming in overturned it (the rows most worth a look).
function firstLook(r, full) {
  const flip = r.first !== r.verdict, s = el("span", "first" + (flip ? " flip" : ""),
    flip ? `${full ? "overturned: first look" : "\u21ba was"} ${r.first} ${fmt(r.first_score)}`
         : `first look${full ? ": " + r.first : ""} ${fmt(r.first_score)}`);
  s.title = `first look: ${r.first} (${fmt(r.first_score)}); final: ${r.verdict} (${fmt(r.score)})` +
    (flip ? ": zooming in overturned the first look" : "");
  return s;
}

function card(r) {
  const ok = r.status === "ok";
  const c = el("article", "card " + (!ok ? "err" : r.verdict === "generated" ? "gen" : "real"));
  c.tabIndex = 0;
  c.addEventListener("click", () => openRow(r.i));
  c.addEventListener("keydown", (e) => { if (e.key === "Enter") openRow(r.i); });
  const t = el("div", "thumb");
  if (r.thumb) {
    t.append(picture(r, r.thumb));
    if (r.small) t.append(el("span", "note", `${dims(r)} \u00b7 enlarged`));
  } else {
    const n = el("div", "noimg");
    n.append(el("b", null, ok ? "no image" : r.status), ok ? "not readable from here" : "no verdict");
    t.append(n);
  }
  const m = el("div", "meta"), head = el("div", "head");
  head.append(el("span", "verdict", ok ? r.verdict : r.status));
  if (ok) head.append(scoreChip(r));
  if (ok && r.first) head.append(firstLook(r));
  const name = el("div", "name", r.name);
  name.title = r.uri;
  const sub = [dims(r)];
  if (ok) sub.push(`${r.boxes.length} region${r.boxes.length === 1 ? "" : "s"}`);
  if (r.prior != null) sub.push(`prior ${fmt(r.prior)}`);
  const why = el("p", "why", ok ? (r.rationale || r.explanation || "") : (r.error || ""));
  why.title = why.textContent;
  m.append(head, name, el("div", "sub", sub.join(" \u00b7 ")), why);
  c.append(t, m);
  return c;
}

function matches(r, verdict, status, q) {
  if (verdict !== "all" && r.verdict !== verdict) return false;
  if (status === "errors" ? r.status === "ok" : status !== "all" && r.status !== status) return false;
  return !q || r.name.toLowerCase().includes(q);
}

const byName = (a, b) => a.name.localeCompare(b.name) || a.uri.localeCompare(b.uri);
const ORDERS = {
  "score-desc": (a, b) => (a.score == null) - (b.score == null) || (b.score || 0) - (a.score || 0) || byName(a, b),
  "score-asc": (a, b) => (a.score == null) - (b.score == null) || (a.score || 0) - (b.score || 0) || byName(a, b),
  "name": byName,
};

function apply() {
  const q = $("q").value.trim().toLowerCase();
  view = ROWS.filter((r) => matches(r, $("verdict").value, $("status").value, q)).sort(ORDERS[$("sort").value]);
  shown = 0;
  $("grid").replaceChildren();
  $("empty").hidden = view.length > 0;
  more();
}

function more() {
  const frag = document.createDocumentFragment();
  view.slice(shown, shown + STEP).forEach((r) => frag.append(card(r)));
  shown = Math.min(view.length, shown + STEP);
  $("grid").append(frag);
  $("more").hidden = shown >= view.length;
  $("more").textContent = `show more (${view.length - shown} left)`;
  $("count").textContent = `showing ${shown} of ${view.length} matching \u00b7 ${ROWS.length} rows in this page`;
}

function fillSelects() {
  const count = (f) => ROWS.filter(f).length;
  const add = (sel, value, text) => { const o = el("option", null, text); o.value = value; sel.append(o); };
  const v = $("verdict"), s = $("status");
  add(v, "all", `all verdicts (${ROWS.length})`);
  for (const k of ["generated", "real"]) add(v, k, `${k} (${count((r) => r.verdict === k)})`);
  add(s, "all", "all statuses");
  add(s, "ok", `ok (${count((r) => r.status === "ok")})`);
  const errs = [...new Set(ROWS.filter((r) => r.status !== "ok").map((r) => r.status))].sort();
  if (errs.length) add(s, "errors", `any error (${count((r) => r.status !== "ok")})`);
  for (const k of errs) add(s, k, `${k} (${count((r) => r.status === k)})`);
}

// ---- the enlarged view ----
function detail(i) {
  const s = $("d" + i);
  return s ? JSON.parse(s.textContent) : {big: null, crops: []};
}

function field(dl, key, value) {
  if (value == null || value === "") return;
  dl.append(el("dt", null, key), el("dd", null, String(value)));
}

function openRow(i) {
  const r = ROWS[i];
  if (!r) return;
  cur = i;
  const d = detail(i), ok = r.status === "ok";
  const name = $("lb-name");
  name.textContent = r.name;
  name.title = r.uri;
  const k = view.findIndex((x) => x.i === i);
  $("pos").textContent = k >= 0 ? `${k + 1} / ${view.length}` : "";
  const stage = $("stage");
  stage.replaceChildren();
  if (r.thumb) stage.append(picture(r, d.big || r.thumb));
  else stage.append(el("div", "noimg", ok ? "image not readable from here" : "no image: " + r.status));
  const info = $("info");
  info.replaceChildren();
  const head = el("div", "head " + (!ok ? "err" : r.verdict === "generated" ? "gen" : "real"));
  head.append(el("span", "verdict", ok ? "final: " + r.verdict : r.status));
  if (ok) head.append(scoreChip(r));
  if (ok && r.first) head.append(firstLook(r, true));
  const dl = el("dl");
  field(dl, "uri", r.uri);
  field(dl, "size", dims(r) + (r.small ? " (shown enlarged)" : ""));
  if (r.prior != null) field(dl, "prior", fmt(r.prior));
  if (r.threshold != null) field(dl, "threshold", fmtTo(r.threshold, r.digits));
  field(dl, "decided by", r.decided_by);
  field(dl, "provenance", r.marks);
  field(dl, "tiers", r.tiers);
  field(dl, "model", r.model);
  field(dl, "stages", r.stages);
  if (!ok) field(dl, "error", r.error);
  info.append(head, dl);
  if (ok) {
    info.append(el("h3", null, "Rationale"), el("p", null, r.rationale || "(none)"));
    if (r.explanation && r.explanation !== r.rationale)
      info.append(el("h3", null, "First look's explanation"), el("p", null, r.explanation));
    const zoomed = (r.stages || "").includes("zoom");
    const crops = el("div", "crops");
    (d.crops || []).forEach((c, n) => { if (c) crops.append(cropFigure(r, c, n)); });
    if (crops.childElementCount) {
      info.append(el("h3", null, zoomed ? `Zoomed crops (${crops.childElementCount})`
                                        : "Regions up close (this run did not zoom)"), crops);
    } else if (!r.boxes.length) info.append(el("h3", null, "No regions"));
  }
  $("lb").hidden = false;
  document.body.classList.add("noscroll");
  history.replaceState(null, "", "#open=" + i);
  $("close").focus();
}

// A crop at native resolution (stored at most 256 px a side); tiny ones scaled up in whole steps.
function cropFigure(r, c, n) {
  const b = r.boxes[n], f = el("figure", "crop"), wrap = el("div", "cwrap"), img = el("img");
  const side = Math.max(c.w, c.h), k = side < 128 ? Math.ceil(128 / side) : Math.min(1, 256 / side);
  img.src = c.src;
  img.width = Math.round(c.w * k);
  img.height = Math.round(c.h * k);
  if (k > 1) img.className = "px";
  wrap.style.borderColor = b.colour;
  img.alt = `region ${n + 1}`;
  // The region itself, inside the margin the zoom added around it.
  const [x1, y1] = c.region, box = el("div", "inbox");
  Object.assign(box.style, {left: pct((b.x1 - x1) / c.w), top: pct((b.y1 - y1) / c.h),
                            width: pct((b.x2 - b.x1) / c.w), height: pct((b.y2 - b.y1) / c.h)});
  wrap.append(img, box);
  const cap = el("figcaption"), chip = el("span", "chip", `region ${n + 1} \u00b7 ${b.score.toFixed(2)}`);
  chip.style.background = b.colour;
  chip.style.color = b.ink;
  cap.append(chip, `${c.w}\u00d7${c.h} px at (${c.region[0]}, ${c.region[1]})` + (k > 1 ? `, shown \u00d7${k}` : ""));
  f.append(wrap, cap);
  // Which box is this? Hovering a crop highlights its box on the image.
  const hl = (on) => { const x = $("stage").querySelector(`.box[data-n="${n}"]`); if (x) x.classList.toggle("hl", on); };
  f.addEventListener("mouseenter", () => hl(true));
  f.addEventListener("mouseleave", () => hl(false));
  return f;
}

function closeBox() {
  $("lb").hidden = true;
  document.body.classList.remove("noscroll");
  history.replaceState(null, "", location.pathname + location.search);
  cur = -1;
}

function step(delta) {
  const k = view.findIndex((x) => x.i === cur), next = view[k + delta];
  if (next) openRow(next.i);
}

fillSelects();
for (const id of ["verdict", "status", "sort"]) $(id).addEventListener("change", apply);
$("q").addEventListener("input", apply);
$("more").addEventListener("click", more);
$("close").addEventListener("click", closeBox);
$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));
$("lb").addEventListener("click", (e) => { if (e.target === $("lb")) closeBox(); });
document.addEventListener("keydown", (e) => {
  if ($("lb").hidden) return;
  if (e.key === "Escape") closeBox();
  else if (e.key === "ArrowRight") step(1);
  else if (e.key === "ArrowLeft") step(-1);
});
// Scrolling near the end loads the next cards; the button stays for keyboards and old browsers.
if ("IntersectionObserver" in window)
  new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting) && shown < view.length) more(); },
                           {rootMargin: "600px"}).observe($("more-wrap"));
apply();
const m = /^#open=(\d+)$/.exec(location.hash);
if (m) openRow(Number(m[1]));
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>zoomin report</title><style>@@CSS@@</style></head><body>
<header><h1>zoomin report</h1>@@HEADER@@</header>
<div class="bar">
<label>verdict <select id="verdict"></select></label>
<label>status <select id="status"></select></label>
<label>sort <select id="sort"><option value="score-desc">score, highest first</option>
<option value="score-asc">score, lowest first</option><option value="name">name</option></select></label>
<label>name <input id="q" type="search" placeholder="search file names"></label>
@@LEGEND@@<span id="count"></span></div>
<main><div id="grid" class="grid"></div><p id="empty" hidden>No rows match.</p>
<div id="more-wrap"><button id="more" hidden>show more</button></div></main>
<div id="lb" class="lb" hidden><div class="panel" role="dialog" aria-modal="true">
<div class="ptop"><div class="name" id="lb-name"></div><span id="pos"></span>
<button id="prev" title="previous (left arrow)">&#8249;</button><button id="next" title="next (right arrow)">&#8250;</button>
<button id="close" title="close (Esc)">&#215;</button></div>
<div class="pbody"><div class="stage" id="stage"></div><div class="info" id="info"></div></div></div></div>
<noscript><p style="padding:20px">This page draws its rows with JavaScript; allow scripts for this file.</p></noscript>
@@DETAILS@@
<script type="application/json" id="zoomin-data">@@DATA@@</script>
<script>@@SCRIPT@@</script>
</body></html>
"""


def legend(stops: str) -> str:
    """The colour key of boxes and scores; `stops` are CSS gradient stops of the ramp."""
    return ('<span class="legend">box / score colour: 0 <span class="ramp" '
            f'style="background:linear-gradient(90deg, {stops})"></span> 1 '
            '<span>(green low &middot; amber mid &middot; red high)</span></span>')


def _fill(template: str, parts: dict) -> str:
    """Markers replaced in one pass: text inside a part is never read as a marker."""
    return re.sub(r"@@([A-Z]+)@@", lambda m: parts[m.group(1)], template)


def head(header: str, legend: str) -> str:
    """The page up to where the rows' detail scripts go (written one by one as images are made)."""
    return _fill(PAGE.split("@@DETAILS@@")[0], {"CSS": CSS, "HEADER": header, "LEGEND": legend})


def tail(data: str) -> str:
    """The rest of the page: the rows' JSON (already made safe for <script>) and the script."""
    return _fill(PAGE.split("@@DETAILS@@")[1], {"DATA": data, "SCRIPT": SCRIPT})
