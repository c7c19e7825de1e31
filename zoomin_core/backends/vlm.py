"""Backend `vlm`: the paper's two queries to one vision-language model, through transformers.

Query 1 (scan): the whole image -> first explanation, boxes, first verdict. Query 2 (zoom): the
whole image plus the crops cut from the full-resolution original -> final rationale and
verdict. Prompts are versioned templates (`zoomin_core/prompts/`); each family's quirks live in
`vlm_families.py`. Generation is batched across images (left padding), greedy, with caps on new
tokens and image pixels; bf16 on GPUs, fp32 on CPU. The score is P(generated) read from the
model's logits where it writes the verdict word, not a hard 0/1.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from ..records import GENERATED, REAL, Box, Crop, ScanResult, Verdict, View
from ..vlm_parse import Unparseable, parse_answer
from .vlm_families import CheckpointError, Shaped, family_for, missing_files  # noqa: F401

log = logging.getLogger(__name__)
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_PROMPTS = PROMPTS_DIR / "v1.json"
PROMPTS_IN_CHECKPOINT = "zoomin_prompts.json"


def check_checkpoint(path: str) -> None:
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"--model {path}: the vlm backend needs a checkpoint folder (config.json, "
                              "*.safetensors, tokenizer files)")
    missing = missing_files([str(f.relative_to(p)) for f in p.rglob("*") if f.is_file()])
    if missing:
        raise CheckpointError(f"--model {path}: incomplete checkpoint, missing {', '.join(missing)}")


def load_prompts(path: Optional[str] = None) -> dict:
    p = Path(path) if path else DEFAULT_PROMPTS
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"--prompts {p}: cannot read it as JSON: {e}") from None
    missing = [k for k in ("version", "scan", "zoom") if not isinstance(d.get(k), str)]
    if missing:
        raise CheckpointError(f"--prompts {p}: needs string fields version, scan, zoom; missing {missing}")
    return d


def _crop_budget(pixels: np.ndarray, crop_pixels: int) -> np.ndarray:
    """Resize a crop to about `crop_pixels` pixels, keeping its aspect: small regions are
    magnified, not left for the processor to blur."""
    h, w = pixels.shape[:2]
    s = math.sqrt(crop_pixels / max(1, h * w))
    if abs(s - 1) < 0.05:
        return pixels
    im = Image.fromarray(pixels).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC)
    return np.asarray(im)


def zoom_prompt(prompts: dict, boxes: Sequence[tuple], initial_verdict: str, explanation: str) -> str:
    """Query 2's text: the crops' places (original pixels) and the first look's words."""
    regions = "; ".join(f"crop {i + 1}: x {int(b[0])}-{int(b[2])}, y {int(b[1])}-{int(b[3])} in original pixels"
                        for i, b in enumerate(boxes)) or "no region was flagged"
    # (the template ends the quote with its own full stop; a scan's explanation comes tidied without
    # one, an annotation's may have it)
    return prompts["zoom"].format(n_crops=len(boxes), regions=regions, initial_verdict=initial_verdict,
                                  explanation=(explanation or "").rstrip(" .,;:") or "-")


class VLMBackend:
    name = "vlm"

    def __init__(self, model: Optional[str] = None, prompts: Optional[str] = None, device: str = "cpu",
                 max_new_tokens: int = 256, max_pixels: Optional[int] = None, crop_pixels: int = 448 * 448,
                 batch_size: int = 8, keep_raw: bool = False, max_boxes: int = 4, threads: Optional[int] = None,
                 dtype: str = "auto", model_name: Optional[str] = None, threshold: Optional[float] = None):
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText
        if model is None:
            raise CheckpointError("the vlm backend needs --model (a local checkpoint folder or s3:// prefix)")
        check_checkpoint(model)
        if threads:
            torch.set_num_threads(threads)
        # A checkpoint made by `zoomin finetune` carries the prompts it learned to answer.
        own = Path(model) / PROMPTS_IN_CHECKPOINT
        self.prompts = load_prompts(prompts or (str(own) if own.is_file() else None))
        # --threshold: the verdict is score >= threshold; None: the model's own answer.
        self.threshold = threshold
        self.prompt_version = self.prompts["version"]
        config = AutoConfig.from_pretrained(model)
        self.family = family_for(config.model_type)
        self.processor = self.family.load_processor(model)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        self.device = torch.device(device)
        # auto: bf16 on GPUs, fp32 on CPU (bf16 matmuls are slow on most CPUs).
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
        self.model = AutoModelForImageTextToText.from_pretrained(
            model, dtype=self.dtype, use_safetensors=True).to(self.device).eval()
        self.max_new_tokens, self.max_pixels, self.crop_pixels = max_new_tokens, max_pixels, crop_pixels
        self.batch_size, self.keep_raw, self.max_boxes = batch_size, keep_raw, max_boxes
        # (query, batch size) -> extra generate() arguments, e.g. a logits processor (tests use it
        # to make a tiny model write known answers).
        self.generate_hook: Optional[Callable[[str, int], dict]] = None
        self.trace: list[dict] = []          # per query call: what the model was given (for audit/tests)
        self._model_name = model_name or Path(model.rstrip("/")).name
        self._verdict_ids = {w: self._first_tokens(w) for w in ("real", "generated")}
        self.tokens_generated = {"scan": 0, "zoom": 0}

    @property
    def model_id(self) -> str:
        return f"vlm/{self.family.name}/{self._model_name}"

    def _first_tokens(self, word: str) -> set[int]:
        ids = set()
        for variant in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            toks = self.tokenizer.encode(variant, add_special_tokens=False)
            if toks:
                ids.add(toks[0])
        return ids

    # ---- generation ---------------------------------------------------------------------------

    def generate(self, query: str, convs: list[tuple[str, list[Image.Image]]]) -> list[tuple[str, Optional[float], bool]]:
        """(text, P(generated) at the verdict word or None, truncated) per conversation."""
        import torch
        out: list[tuple[str, Optional[float], bool]] = []
        for start in range(0, len(convs), self.batch_size):
            chunk = convs[start:start + self.batch_size]
            texts = [self.chat_text(prompt, len(ims)) for prompt, ims in chunk]
            images = [im for _, ims in chunk for im in ims]
            inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            self.trace.append({"query": query, "images": [len(ims) for _, ims in chunk],
                               "sizes": [[im.size for im in ims] for _, ims in chunk], "prompts": [p for p, _ in chunk]})
            with torch.inference_mode():
                gen = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                          return_dict_in_generate=True, output_logits=True,
                                          **(self.generate_hook(query, len(chunk)) if self.generate_hook else {}))
            new = gen.sequences[:, inputs["input_ids"].shape[1]:].cpu()
            logits = torch.stack(gen.logits, dim=1).float().cpu() if gen.logits else None
            for b in range(new.shape[0]):
                ids = new[b].tolist()
                stop = self._stop_index(ids)
                truncated = stop == len(ids) and len(ids) >= self.max_new_tokens
                ids = ids[:stop]
                self.tokens_generated[query] += len(ids)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                out.append((text, self._verdict_prob(ids, logits[b] if logits is not None else None), truncated))
        return out

    def _stop_index(self, ids: list[int]) -> int:
        eos = self.model.generation_config.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.pad_token_id}
        return next((i for i, t in enumerate(ids) if t in stops), len(ids))

    def _verdict_prob(self, ids: list[int], logits) -> Optional[float]:
        """P(generated) from the logits of the step that wrote the last verdict word."""
        if logits is None:
            return None
        import torch
        pos = None
        for t in range(1, len(ids)):
            before = self.tokenizer.decode(ids[:t], skip_special_tokens=True).rstrip().lower()
            if before.endswith("<verdict>") and (ids[t] in self._verdict_ids["real"] or ids[t] in self._verdict_ids["generated"]):
                pos = t
        if pos is None:
            return None
        row = logits[pos]
        g = torch.logsumexp(row[list(self._verdict_ids["generated"])], 0)
        r = torch.logsumexp(row[list(self._verdict_ids["real"])], 0)
        return float(torch.sigmoid(g - r))

    # ---- the two queries ----------------------------------------------------------------------

    def _shape(self, pixels: np.ndarray) -> Shaped:
        return self.family.shape(pixels, self.processor, self.max_pixels)

    def scan_conversation(self, view: View) -> tuple[str, list[Image.Image], Shaped]:
        """Query 1 as the model sees it: (prompt, images, how the box frame maps to the view)."""
        s = self._shape(view.pixels)
        return self.prompts["scan"].format(frame=self.family.frame_words(s)), [s.image], s

    def zoom_conversation(self, view: View, crops: Sequence[Crop], initial_verdict: str,
                          explanation: str) -> tuple[str, list[Image.Image]]:
        """Query 2 as the model sees it: the whole image and the crops, and the first look's words."""
        images = [self._shape(view.pixels).image]
        images += [self._shape(_crop_budget(c.pixels, self.crop_pixels)).image for c in crops]
        prompt = zoom_prompt(self.prompts, [(c.box.x1, c.box.y1, c.box.x2, c.box.y2) for c in crops],
                             initial_verdict, explanation)
        return prompt, images

    def chat_text(self, prompt: str, n_images: int, answer: Optional[str] = None) -> str:
        """The chat-template text of one query (and, for training, its answer turn)."""
        turns = [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]}]
        if answer is None:
            return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return self.tokenizer.apply_chat_template(turns, tokenize=False)

    def scan(self, views: Sequence[View]) -> list:
        shaped, convs = [], []
        for v in views:
            prompt, images, s = self.scan_conversation(v)
            shaped.append(s)
            convs.append((prompt, images))
        results: list = []
        for s, v, (text, prob, truncated) in zip(shaped, views, self.generate("scan", convs)):
            try:
                results.append(self.read_scan(text, s, v, prob, truncated))
            except Unparseable as e:
                # an answer that could not be read keeps its text, --keep-raw or not: it is what to look at
                results.append(Unparseable(f"scan: {e.reason}", json.dumps({"scan": {"text": text}})))
        return results

    def read_scan(self, text: str, s: Shaped, view: View, prob: Optional[float] = None,
                  truncated: bool = False) -> ScanResult:
        """Query 1's answer -> the first look, boxes in view pixels (raises Unparseable). Fine-tuning
        reads its targets back through here, so query 2 is taught with the prompt a scan will build."""
        a = parse_answer(text, s.frame_w, s.frame_h, want_boxes=True, truncated=truncated)
        w, h = view.size
        boxes = []
        for b in a.boxes[: self.max_boxes]:
            x1, y1, x2, y2 = s.to_input(b)  # frame -> view pixels
            x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                boxes.append(Box(x1, y1, x2, y2, 1.0))
        score = prob if prob is not None else (1.0 if a.verdict == GENERATED else 0.0)
        raw = json.dumps({"text": text, "notes": a.notes}) if self.keep_raw else ""
        return ScanResult(tuple(boxes), self._verdict(a.verdict, score), score, a.explanation, raw)

    def zoom(self, items: Sequence[tuple[View, Sequence[Crop], ScanResult]]) -> list:
        convs = [self.zoom_conversation(view, crops, scan.initial_verdict, scan.explanation)
                 for view, crops, scan in items]
        results: list = []
        for (text, prob, truncated), (_, crops, scan) in zip(self.generate("zoom", convs), items):
            try:
                a = parse_answer(text, 1, 1, want_boxes=False, truncated=truncated)
            except Unparseable as e:
                raw = json.dumps({"scan": json.loads(scan.raw) if scan.raw else None, "zoom": {"text": text}})
                results.append(Unparseable(f"zoom: {e.reason}", raw))
                continue
            score = prob if prob is not None else (1.0 if a.verdict == GENERATED else 0.0)
            raw = json.dumps({"text": text, "notes": a.notes}) if self.keep_raw else ""
            results.append(Verdict(self._verdict(a.verdict, score), score, a.explanation, (), raw))
        return results

    def _verdict(self, answer: str, score: float) -> str:
        if self.threshold is None:
            return answer
        return GENERATED if score >= self.threshold else REAL
