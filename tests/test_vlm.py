"""The `vlm` backend on tiny, randomly initialised Qwen2.5-VL, Qwen2-VL and LLaVA checkpoints built
offline (tests/tiny_vlm.py)."""
import json
import os

import numpy as np
import pytest
from transformers import LogitsProcessorList

from jobs.cli import main
from jobs.sinks import read_results
from tests.conftest import jpeg_bytes, textured, write_bad_inputs
from tests.tiny_vlm import BUILDERS, Script
from zoomin_core import ExamineConfig, ImageInput, load_backend, run_chain
from zoomin_core.backends.vlm_families import smart_resize
from zoomin_core.geometry import region_box
from zoomin_core.records import Box

# CI runs the backend on CPU. ZOOMIN_TEST_DEVICE=cuda runs the same assertions on a GPU, where the
# backend's default dtype is bfloat16: that is how the GPU path is checked on a GPU machine.
DEVICE = os.environ.get("ZOOMIN_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {name: str(build(root / name)) for name, build in BUILDERS.items()}


@pytest.mark.slow
def test_scripted_answers_travel_the_whole_path(checkpoints):
    import torch
    backend = load_backend("vlm", checkpoints["qwen2_5_vl"], device=DEVICE, max_new_tokens=64, keep_raw=True)
    # The default dtype follows the device: bfloat16 on a GPU, float32 on CPU.
    assert next(backend.model.parameters()).dtype == (torch.bfloat16 if DEVICE.startswith("cuda") else torch.float32)
    eos = backend.model.generation_config.eos_token_id
    answers = {"scan": ["Odd texture top left. <boxes>[[28, 14, 84, 70], [90, 90, 90, 95]]</boxes> "
                        "<verdict>real</verdict>", "All natural. <boxes>[]</boxes> <verdict>real</verdict>"],
               "zoom": ["Crop 1 repeats a tile. <verdict>generated</verdict>",
                        "Nothing odd. <verdict>real</verdict>"]}
    backend.generate_hook = lambda query, n: {"logits_processor": LogitsProcessorList(
        [Script(backend.tokenizer, answers[query][:n], eos)])}
    # 224x168 fits the tiny processor's pixel budget, so the model sees it unresized (frame = image).
    assert smart_resize(168, 224, 28, 56 * 56, 224 * 224) == (168, 224)
    inputs = [ImageInput("a.jpg", jpeg_bytes(textured(224, 168, seed=1))),
              ImageInput("b.jpg", jpeg_bytes(textured(224, 168, seed=2)))]
    cfg = ExamineConfig()
    rows = run_chain(backend, inputs, cfg)
    a, b = rows
    assert a.status == b.status == "ok"
    # Boxes: the zero-area one is dropped, the other mapped back to original pixels.
    assert [(x.x1, x.y1, x.x2, x.y2) for x in a.boxes] == [(28, 14, 84, 70)] and b.boxes == ()
    assert (a.initial_verdict, a.verdict, b.initial_verdict, b.verdict) == ("real", "generated", "real", "real")
    assert a.rationale == "Crop 1 repeats a tile" and a.explanation == "Odd texture top left"
    for r in rows:  # scores come from the model's logits at the verdict word: probabilities, not 0/1
        assert 0.0 < r.score < 1.0 and 0.0 < r.initial_score < 1.0
    assert a.prompt_version == "zoomin-prompts-v1"
    raw = json.loads(a.raw)
    assert "<verdict>real</verdict>" in raw["scan"]["text"] and "generated" in raw["zoom"]["text"]
    # Query 2 saw the whole image plus one crop for a, the image alone for b; the crop was cut
    # where the box is (with the margin and minimum side), and its coordinates were in the prompt.
    zoom = [t for t in backend.trace if t["query"] == "zoom"][0]
    assert zoom["images"] == [2, 1]
    r = region_box(Box(28, 14, 84, 70), 224, 168, cfg.margin, cfg.min_crop_side)
    assert f"crop 1: x {int(r.x1)}-{int(r.x2)}, y {int(r.y1)}-{int(r.y2)}" in zoom["prompts"][0]
    crop_w, crop_h = zoom["sizes"][0][1]
    assert crop_w * crop_h > (r.x2 - r.x1) * (r.y2 - r.y1)  # magnified to the crop budget
    assert backend.tokens_generated["scan"] > 0 and backend.tokens_generated["zoom"] > 0
    assert all(r.threshold is None for r in rows)   # the model's own answers stood
    # --threshold: the verdict follows the score the logits give, not the word written
    for t in (min(r.score for r in rows), max(r.score for r in rows) + 1e-6):
        backend.threshold = t
        again = run_chain(backend, inputs, cfg)
        # (the first look's scores are the same; the zoom's may move a little, as its prompt quotes the
        # first verdict, which the threshold may have turned)
        assert [r.initial_score for r in again] == pytest.approx([r.initial_score for r in rows], abs=1e-5)
        assert [r.verdict for r in again] == ["generated" if r.score >= t else "real" for r in again]
        assert all(r.threshold == t for r in again)


def test_a_zoom_answer_that_cannot_be_read_keeps_its_text_and_the_first_look(checkpoints):
    backend = load_backend("vlm", checkpoints["qwen2_5_vl"], device=DEVICE, max_new_tokens=64)   # no keep_raw
    eos = backend.model.generation_config.eos_token_id
    answers = {"scan": ["Odd texture top left. <boxes>[[28, 14, 84, 70]]</boxes> <verdict>generated</verdict>"],
               "zoom": ["Crop 1 looks, well, hard to say"]}
    backend.generate_hook = lambda query, n: {"logits_processor": LogitsProcessorList(
        [Script(backend.tokenizer, answers[query][:n], eos)])}
    (row,) = run_chain(backend, [ImageInput("a.jpg", jpeg_bytes(textured(224, 168, seed=1)))])
    assert row.status == "unparseable" and row.error.startswith("zoom: no <verdict>") and row.verdict is None
    assert json.loads(row.raw)["zoom"]["text"].startswith("Crop 1 looks, well, hard to say")
    assert (row.initial_verdict, row.explanation) == ("generated", "Odd texture top left")
    assert [(b.x1, b.y1, b.x2, b.y2) for b in row.boxes] == [(28, 14, 84, 70)] and row.score is None


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "llava"])
def test_each_family_loads_and_random_weights_are_unparseable(checkpoints, family):
    backend = load_backend("vlm", checkpoints[family], device=DEVICE, max_new_tokens=12)
    rows = run_chain(backend, [ImageInput(f"{i}.jpg", jpeg_bytes(textured(150 + 30 * i, 120, seed=i)))
                               for i in range(3)])
    assert [r.status for r in rows] == ["unparseable"] * 3
    assert all("no <verdict>" in r.error and r.verdict is None for r in rows)
    assert all(json.loads(r.raw)["scan"]["text"] is not None for r in rows)   # kept without keep_raw
    assert backend.model_id.startswith(f"vlm/{family}/")


@pytest.mark.ray
@pytest.mark.slow
def test_scan_job_with_vlm_backend_through_ray(ray_local, checkpoints, tmp_path, capsys):
    folder = tmp_path / "imgs"
    expected = write_bad_inputs(folder)
    out = tmp_path / "res"
    assert main(["scan", str(folder), "--out", str(out), "--backend", "vlm", "--model", checkpoints["qwen2_5_vl"],
                 "--max-new-tokens", "8", "--no-progress", "--keep-raw"]) == 0
    rows = read_results(out).to_pylist()
    assert sorted(r["uri"].rsplit("/", 1)[-1] for r in rows) == sorted(expected)
    for r in rows:
        name = r["uri"].rsplit("/", 1)[-1]
        want = "unparseable" if expected[name] == "ok" else expected[name]
        assert r["status"] == want, (name, r["error"])
        assert r["prompt_version"] == "zoomin-prompts-v1"
        if want == "unparseable":
            assert json.loads(r["raw"])["scan"]["text"] is not None


def test_missing_or_incomplete_checkpoint_is_refused_before_reading(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["scan", "--out", str(out), "--backend", "vlm"]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["scan", "--out", str(out), "--backend", "vlm", "--model", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    partial = tmp_path / "ckpt"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    (partial / "pytorch_model.bin").write_bytes(b"pickles are never loaded")
    assert main(["scan", "--out", str(out), "--backend", "vlm", "--model", str(partial)]) == 2
    err = capsys.readouterr().err
    assert "incomplete checkpoint" in err and "safetensors" in err and "tokenizer" in err
    bad = tmp_path / "prompts.json"
    bad.write_text('{"version": "x"}')
    assert main(["scan", "--out", str(out), "--backend", "vlm", "--model", str(partial), "--prompts", str(bad)]) == 2
    assert not out.exists() or not any(out.iterdir())


def test_custom_prompts_are_used_and_recorded(checkpoints, tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"version": "team-v7", "scan": "Scan it ({frame}).", "zoom": "Zoom {n_crops}: {regions}"}))
    backend = load_backend("vlm", checkpoints["llava"], device=DEVICE, prompts=str(p), max_new_tokens=4)
    rows = run_chain(backend, [ImageInput("x.jpg", jpeg_bytes(textured(90, 60)))])
    assert rows[0].prompt_version == "team-v7"
    assert backend.trace[0]["prompts"][0] == "Scan it (coordinates from 0 to 1 across the image's width and height)."


def test_frames_map_boxes_back_to_view_pixels(checkpoints):
    backend = load_backend("vlm", checkpoints["llava"], device=DEVICE)
    s = backend._shape(np.zeros((100, 300, 3), np.uint8))   # padded to a 300x300 square
    assert s.image.size == (300, 300) and s.to_input((0.0, 0.5, 1.0, 1.0)) == (0.0, 50.0, 300.0, 200.0)
    backend = load_backend("vlm", checkpoints["qwen2_vl"], device=DEVICE)
    s = backend._shape(np.zeros((100, 300, 3), np.uint8))
    assert (s.frame_w, s.frame_h) == (1000, 1000) and s.to_input((500, 500, 1000, 1000)) == (150.0, 50.0, 300.0, 100.0)


@pytest.mark.slow
def test_bf16_path_runs_on_cpu(checkpoints):
    """The GPU default (bf16 weights and pixel values, float logits for the score), forced on
    whichever device the tests use (CPU in CI)."""
    import torch
    backend = load_backend("vlm", checkpoints["qwen2_5_vl"], device=DEVICE, dtype="bfloat16", max_new_tokens=24)
    assert next(backend.model.parameters()).dtype == torch.bfloat16
    eos = backend.model.generation_config.eos_token_id
    backend.generate_hook = lambda q, n: {"logits_processor": LogitsProcessorList(
        [Script(backend.tokenizer, ["<verdict>generated</verdict>"] * n, eos)])}
    rows = run_chain(backend, [ImageInput("a.jpg", jpeg_bytes(textured(120, 90)))], ExamineConfig(stages="scan"))
    assert rows[0].status == "ok" and rows[0].verdict == "generated" and 0 < rows[0].score < 1


@pytest.mark.ray
@pytest.mark.slow
def test_vlm_checkpoint_from_s3(ray_local, s3, checkpoints, tmp_path):
    from pathlib import Path
    bucket = s3.bucket("models")
    root = Path(checkpoints["llava"])
    for f in root.rglob("*"):
        if f.is_file():
            s3.put(bucket, f"tiny-llava/{f.relative_to(root)}", f.read_bytes())
    out = tmp_path / "res"
    assert main(["scan", "--out", str(out), "--backend", "vlm", "--model", f"s3://{bucket}/tiny-llava/",
                 "--endpoint-url", s3.endpoint, "--max-new-tokens", "4", "--no-progress"]) == 0
    rows = read_results(out).to_pylist()
    assert rows and all(r["model"] == "vlm/llava/tiny-llava" for r in rows)
    assert {r["status"] for r in rows} <= {"unparseable", "decode_error"}
