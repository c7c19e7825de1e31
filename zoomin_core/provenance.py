"""Provenance marks read from an image's metadata, before any pixel is judged.

Each mark becomes a `Signal`: which mark, what it says in its own words (`detail`), and what it
claims (`says`): generated, composite (a capture with generated parts), capture, or unknown.
What a mark proves: that whoever wrote the file said so. What its absence proves: nothing - any
re-encode, screenshot or upload pipeline drops metadata. An unsigned capture claim is recorded
and never decides (anyone can write it); a generated or composite claim decides `generated`
(`decides`): a mark that admits generation is not worth forging.

Read here:
- C2PA Content Credentials embedded in the file (`c2pa-python`; no remote manifest is ever
  fetched): validation state, signer, claim generator, and the `digitalSourceType` of its
  actions. A manifest that does not validate (tampered pixels, a broken signature) is recorded
  as such and never decides. A capture claim decides `real` only when its signer chains to a
  trust anchor the job was given (`--c2pa-trust`), as signal `c2pa_trusted`;
- IPTC `Iptc4xmpExt:DigitalSourceType` in XMP (JPEG APP1, PNG iTXt, WebP), the vocabulary of
  https://cv.iptc.org/newscodes/digitalsourcetype/;
- text chunks that generator front-ends write into PNGs: AUTOMATIC1111 and its forks
  (`parameters` with "Steps:" and "Sampler:"), ComfyUI (`prompt`/`workflow` JSON with
  `class_type` nodes), InvokeAI (`invokeai_metadata`, `sd-metadata`), NovelAI (`Software`
  "NovelAI");
- the invisible watermarks Stable Diffusion 1.x and SDXL embed (`watermark.py`), in files whose
  pixels are stored losslessly, at their own size.
Metadata is untrusted input: it is matched with bounded regular expressions (no XML parser, so
no entity expansion), read at most `MAX_BYTES` of it, and any failure is a signal, never a raise.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from . import watermark

GENERATED, COMPOSITE, CAPTURE, UNKNOWN = "generated", "composite", "capture", "unknown"
DECISIVE = (GENERATED, COMPOSITE)
MAX_BYTES = 1 << 20          # of any one metadata field
DETAIL_CHARS = 160           # of a field quoted in `detail`

# IPTC digital source types (the term after .../digitalsourcetype/) -> what they claim.
SOURCE_TYPES = {
    "trainedAlgorithmicMedia": GENERATED, "algorithmicMedia": GENERATED,
    "compositeWithTrainedAlgorithmicMedia": COMPOSITE, "compositeSynthetic": COMPOSITE,
    "digitalCapture": CAPTURE, "negativeFilm": CAPTURE, "positiveFilm": CAPTURE, "print": CAPTURE,
    "minorHumanEdits": CAPTURE, "compositeCapture": CAPTURE,
}
_DST = re.compile(r"DigitalSourceType\s*(?:=\s*[\"']([^\"']{1,300})[\"']|>\s*([^<]{1,300})<|"
                  r"[^>]{0,200}rdf:resource\s*=\s*[\"']([^\"']{1,300})[\"'])")


@dataclass(frozen=True)
class Signal:
    signal: str      # which mark: "c2pa", "c2pa_trusted", "iptc_xmp", "png_a1111", "png_comfyui", "png_invokeai",
    #                  "png_novelai", "watermark_sd", "watermark_sdxl", "metadata_error"
    detail: str      # what it says, in its own words (shortened)
    says: str        # generated / composite / capture / unknown


def decides(signals) -> bool:
    """Whether the marks decide the verdict on their own (see `verdict`)."""
    return verdict(signals) is not None


def verdict(signals):
    """"generated" when a mark says generated or composite; "real" when only a capture claim
    signed by a trusted signer speaks (and nothing says generated); else None: the pixels decide."""
    if any(s.says in DECISIVE for s in signals):
        return GENERATED
    if any(s.signal == "c2pa_trusted" and s.says == CAPTURE for s in signals):
        return "real"
    return None


_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
         "AVIF": "image/avif", "HEIF": "image/heif", "GIF": "image/gif"}


def read_c2pa(data: bytes, image_format: str | None, trust_pem: str | None = None) -> list[Signal]:
    """The C2PA manifest embedded in `data`, if any, as signals. Never raises, never fetches."""
    mime = _MIME.get(image_format or "")
    if mime is None or b"c2pa" not in data:   # no JUMBF box labelled c2pa: nothing to parse (cheap)
        return []
    try:
        import io

        import c2pa
    except ImportError:
        return [Signal("c2pa", "a C2PA manifest may be present; c2pa-python is not installed", UNKNOWN)]
    try:
        settings = {"verify": {"remote_manifest_fetch": False, "verify_trust": bool(trust_pem)}}
        if trust_pem:
            settings["trust"] = {"trust_anchors": trust_pem}
        ctx = c2pa.Context(c2pa.Settings.from_json(json.dumps(settings)))
        reader = c2pa.Reader(mime, io.BytesIO(data), context=ctx)
        state = str(reader.get_validation_state() or "")
        store = json.loads(reader.json())
    except Exception as e:  # noqa: BLE001 - no manifest, a truncated or hostile one
        text = str(e)
        if "ManifestNotFound" in text or "no JUMBF" in text or "JumbfNotFound" in text:
            return []
        return [Signal("c2pa", f"a C2PA manifest that cannot be read: {_short(type(e).__name__ + ' ' + text)}", UNKNOWN)]
    manifest = (store.get("manifests") or {}).get(store.get("active_manifest") or "", {})
    generator = ", ".join(g.get("name", "") for g in manifest.get("claim_generator_info") or []) \
        or str(manifest.get("claim_generator") or "unnamed")
    signer = (manifest.get("signature_info") or {}).get("issuer") or "unknown signer"
    if state not in ("Valid", "Trusted"):
        return [Signal("c2pa", f"C2PA manifest {state or 'not validated'} (claim generator {generator}, signed by "
                               f"{signer}): recorded, never trusted", UNKNOWN)]
    terms = [str(a.get("digitalSourceType", "")).rstrip("/").rsplit("/", 1)[-1]
             for assertion in manifest.get("assertions") or [] if str(assertion.get("label", "")).startswith("c2pa.actions")
             for a in (assertion.get("data") or {}).get("actions") or [] if a.get("digitalSourceType")]
    says = next((SOURCE_TYPES[t] for t in terms if SOURCE_TYPES.get(t) in DECISIVE), None) \
        or next((SOURCE_TYPES[t] for t in terms if t in SOURCE_TYPES), UNKNOWN)
    trusted = state == "Trusted"
    what = f"digitalSourceType {', '.join(terms)}" if terms else "no digitalSourceType"
    return [Signal("c2pa_trusted" if trusted else "c2pa",
                   f"C2PA manifest, {'signer trusted' if trusted else 'signature valid, signer not trusted'} "
                   f"({signer}), claim generator {generator}: {what}", says)]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value[:MAX_BYTES].decode("utf-8", "replace")
    return str(value)[:MAX_BYTES]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS - 1] + "\u2026"


def _xmp(info: Mapping) -> list[Signal]:
    packets = [info[k] for k in ("xmp", "XML:com.adobe.xmp") if info.get(k)]
    out = []
    for packet in packets:
        for m in _DST.finditer(_text(packet)):
            value = (m.group(1) or m.group(2) or m.group(3) or "").strip()
            term = value.rstrip("/").rsplit("/", 1)[-1]
            out.append(Signal("iptc_xmp", f"IPTC DigitalSourceType {term}", SOURCE_TYPES.get(term, UNKNOWN)))
    return out


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _png_chunks(info: Mapping) -> list[Signal]:
    out = []
    params = info.get("parameters")
    if params is not None:
        text = _text(params)
        if "Steps:" in text and "Sampler:" in text:
            out.append(Signal("png_a1111", f"AUTOMATIC1111-style parameters: {_short(text)}", GENERATED))
    for key in ("prompt", "workflow"):
        if info.get(key) is not None:
            text = _text(info[key])
            if '"class_type"' in text or ('"nodes"' in text and isinstance(_json(text), dict)):
                out.append(Signal("png_comfyui", f"ComfyUI {key} ({len(text):,} characters of graph)", GENERATED))
                break
    for key in ("invokeai_metadata", "sd-metadata"):
        if info.get(key) is not None and isinstance(_json(_text(info[key])), dict):
            out.append(Signal("png_invokeai", f"InvokeAI {key}: {_short(_text(info[key]))}", GENERATED))
            break
    if _text(info.get("Software", "")).strip() == "NovelAI":
        out.append(Signal("png_novelai", f"Software NovelAI; {_short(_text(info.get('Source', '')))}", GENERATED))
    return out


def _lossless(data: bytes, image_format: str | None) -> bool:
    """Whether the file's pixels are stored exactly: a dwtDct watermark lives in chroma detail
    that JPEG (even at quality 100 with 4:2:0 chroma) and lossy WebP erase (docs/operations.md)."""
    return image_format in ("PNG", "TIFF", "BMP", "PPM") or (image_format == "WEBP" and data[12:16] == b"VP8L")


def _watermarks(pixels, data: bytes, image_format: str | None) -> list[Signal]:
    if pixels is None or not _lossless(data, image_format):
        return []
    return [Signal(mark.name, f"invisible watermark of {mark.who}: {matched} of {len(mark.bits)} bits match "
                              f"(chance: under 1 in a million)", GENERATED)
            for mark, matched in watermark.read(pixels)]


def read(info: Mapping, data: bytes = b"", image_format: str | None = None,
         trust_pem: str | None = None, pixels=None) -> tuple[Signal, ...]:
    """The marks in a decoded image: its metadata (`PIL.Image.info` after loading), from its
    bytes a C2PA manifest, and from its RGB `pixels` (a PIL image at the file's own size, or None)
    an invisible watermark. Never raises."""
    try:
        # dict.fromkeys: one packet can sit under two keys (Pillow names a PNG's XMP twice)
        return tuple(dict.fromkeys(read_c2pa(data, image_format, trust_pem) + _xmp(info) + _png_chunks(info)
                                   + _watermarks(pixels, data, image_format)))
    except Exception as e:  # noqa: BLE001 - hostile metadata costs its mark, never the image's row
        return (Signal("metadata_error", f"metadata could not be read: {type(e).__name__}", UNKNOWN),)


def sentence(signals) -> str:
    """What the rationale says of the marks that decided."""
    if verdict(signals) == "real":
        marks = "; ".join(s.detail for s in signals if s.signal == "c2pa_trusted")
        return (f"Real, decided by provenance before any model ran: a capture claim signed by a trusted "
                f"signer ({marks}).")
    marks = "; ".join(s.detail for s in signals if s.says in DECISIVE)
    return (f"Generated, decided by provenance before any model ran: the file carries a mark that says so ({marks}). "
            "A mark proves only that whoever wrote the file said it; its absence would prove nothing.")
