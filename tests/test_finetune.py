"""The training loop: labelled images -> `zoomin annotate` -> `zoomin finetune` (Ray Train, two CPU
workers) -> `zoomin scan --backend vlm` with the result. A tiny Qwen2.5-VL built offline
(tests/tiny_vlm.py) learns the protocol and the verdicts of 32 images."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.cli import main
from jobs.sinks import read_results
from tests.tiny_classifier import photos
from tests.tiny_vlm import build_qwen

ROOT = Path(__file__).resolve().parent.parent


def _labelled(folder: Path, n: int = 32) -> Path:
    """n photo crops; every other one 'generated', with a magenta block planted at a known place."""
    (folder / "img").mkdir(parents=True)
    pics = photos(("astronaut", "chelsea", "coffee", "rocket"))
    rng = np.random.default_rng(0)
    with open(folder / "labels.jsonl", "w") as f:
        for i in range(n):
            pic = pics[i % 4]
            y, x = rng.integers(0, pic.shape[0] - 160), rng.integers(0, pic.shape[1] - 160)
            px = pic[y:y + 160, x:x + 160].copy()
            label, boxes = ("generated", [[50, 40, 120, 100]]) if i % 2 else ("real", [])
            if boxes:
                px[40:100, 50:120] = [255, 0, 255]
            Image.fromarray(px).save(folder / "img" / f"img{i:02d}.png")
            f.write(json.dumps({"file": f"img/img{i:02d}.png", "label": label, "boxes": boxes}) + "\n")
    return folder / "labels.jsonl"


def _scan_rates(out: Path, labels: Path) -> tuple[float, float]:
    truth = {Path(json.loads(line)["file"]).name: json.loads(line)["label"] for line in labels.read_text().splitlines()}
    rows = read_results(str(out)).to_pylist()
    assert len(rows) == len(truth)
    ok = [r for r in rows if r["status"] == "ok"]
    right = [r for r in ok if r["verdict"] == truth[Path(r["uri"]).name]]
    return len(ok) / len(rows), len(right) / len(rows)


CLI = [sys.executable, "-c", "import sys; from jobs.cli import main; sys.exit(main(sys.argv[1:]))"]


def _until_checkpoint(args: list, env: dict, ck: Path) -> None:
    """Start `zoomin finetune` and SIGKILL it (driver, workers and its Ray) once it has checkpointed."""
    proc = subprocess.Popen(CLI + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list(ck.glob("*/checkpoint_*/zoomin_state.json")) and time.time() < deadline:
            time.sleep(1)
        assert list(ck.glob("*/checkpoint_*/zoomin_state.json")), "no checkpoint within 240 s"
        assert proc.poll() is None, "finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.ray
@pytest.mark.slow
def test_annotate_finetune_scan_loop(ray_local, tmp_path, capsys):
    """Annotate, fine-tune (killed after its first checkpoint; the same command resumes it), scan."""
    labels = _labelled(tmp_path)
    base = build_qwen(tmp_path / "base", hidden=128)
    ds = tmp_path / "dataset"
    with_missing = tmp_path / "with_missing.jsonl"    # one label whose image is not there: a row, counted
    with_missing.write_text(labels.read_text() + json.dumps({"file": "img/gone.png", "label": "real"}) + "\n")
    assert main(["annotate", str(with_missing), "--out", str(ds), "--chunk", "16"]) == 0
    summary = json.loads((ds / "summary.json").read_text())
    assert summary["examples"] == 32 and summary["failed"] == {"read_error": 1}
    messages = [json.loads(line) for line in (ds / "messages.jsonl").read_text().splitlines()]
    assert len(messages) == 64 and messages[1]["messages"][1]["content"][0]["text"].endswith("</verdict>")
    page = (ds / "review.html").read_text()   # a sample to look through: every example here (< 100)
    assert all(f"img{i:02d}.png" in page for i in range(32)) and "gone.png" in page
    # the same command again finishes nothing new: every chunk is there
    assert main(["annotate", str(with_missing), "--out", str(ds), "--chunk", "16"]) == 0
    assert json.loads((ds / "summary.json").read_text())["chunks_resumed"] == 3

    # the random base model answers in no usable way
    assert main(["scan", str(tmp_path / "img"), "--out", str(tmp_path / "before"), "--backend", "vlm",
                 "--model", str(base), "--max-new-tokens", "48", "--no-progress"]) == 0
    fmt, right = _scan_rates(tmp_path / "before", labels)
    assert fmt < 0.5 and right < 0.5

    out, ck = tmp_path / "tuned", tmp_path / "ck"
    args = ["finetune", str(ds), "--base", str(base), "--out", str(out), "--full", "--steps", "240", "--lr", "1e-3",
            "--batch-size", "2", "--workers", "2", "--checkpoints", str(ck), "--checkpoint-every", "60"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    _until_checkpoint(args, env, ck)
    assert not out.exists()
    done = subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed at step" in done.stdout + done.stderr
    record = json.loads((out / "zoomin_finetune.json").read_text())
    assert record["steps"] == 240 and record["workers"] == 2 and record["mode"] == "full"
    assert (out / "zoomin_prompts.json").exists() and (out / "tokenizer.json").exists()

    assert main(["scan", str(tmp_path / "img"), "--out", str(tmp_path / "after"), "--backend", "vlm",
                 "--model", str(out), "--no-progress"]) == 0
    fmt, right = _scan_rates(tmp_path / "after", labels)
    assert fmt >= 0.9 and right >= 0.8, (fmt, right)
    rows = read_results(str(tmp_path / "after")).to_pylist()
    assert {r["prompt_version"] for r in rows} == {"zoomin-prompts-v1"}


@pytest.mark.ray
@pytest.mark.slow
def test_lora_finetune_merges_into_a_checkpoint_the_vlm_backend_loads(ray_local, tmp_path):
    """The default mode: LoRA adapters, merged at the end into a plain checkpoint."""
    from zoomin_core.backends.vlm import VLMBackend
    labels = _labelled(tmp_path, 4)
    base = build_qwen(tmp_path / "base")
    ds = tmp_path / "dataset"
    assert main(["annotate", str(labels), "--out", str(ds)]) == 0
    out = tmp_path / "tuned"
    assert main(["finetune", str(ds), "--base", str(base), "--out", str(out), "--steps", "6", "--batch-size", "1",
                 "--checkpoints", str(tmp_path / "ck")]) == 0
    record = json.loads((out / "zoomin_finetune.json").read_text())
    assert record["steps"] == 6 and record["mode"] == "lora r16 (merged)"
    tuned = VLMBackend(str(out))
    assert not any("lora" in n for n, _ in tuned.model.named_parameters())
    base_w = dict(VLMBackend(str(base)).model.named_parameters())
    assert any(not np.allclose(p.detach().numpy(), base_w[n].detach().numpy())
               for n, p in tuned.model.named_parameters()), "the merged adapters changed no weight"


def test_annotate_and_finetune_refuse_bad_input(tmp_path, capsys):
    bad = tmp_path / "labels.jsonl"
    bad.write_text('{"file": "a.png", "label": "maybe"}\n')
    assert main(["annotate", str(bad), "--out", str(tmp_path / "ds")]) == 2
    assert "label must be 'real' or 'generated'" in capsys.readouterr().err
    assert main(["annotate", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "ds")]) == 2
    assert "no such labels file" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "empty"), "--base", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "annotated" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "llava"])
def test_training_targets_are_in_each_familys_box_frame(tmp_path, family):
    """The boxes a model is taught map back, through the backend's own reading, to the true ones."""
    import io

    from tests.tiny_vlm import BUILDERS
    from zoomin_core.annotate import template
    from zoomin_core.backends.vlm import VLMBackend
    from zoomin_core.decode import prepare
    from zoomin_core.finetune import texts
    from zoomin_core.records import ImageInput
    from zoomin_core.vlm_parse import parse_answer
    backend = VLMBackend(str(BUILDERS[family](tmp_path / family)))
    px = np.asarray(Image.fromarray(photos(("coffee",))[0]).resize((1200, 800)))
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG")
    ex = template("a.png", "id", "generated", 1200, 800, [(300, 200, 900, 500)])
    (prompt, images, answer), (zprompt, zimages, zanswer) = texts(backend, ex, buf.getvalue())
    view = prepare(ImageInput("a.png", buf.getvalue())).view
    _, _, shaped = backend.scan_conversation(view)
    (b,) = parse_answer(answer, shaped.frame_w, shaped.frame_h, want_boxes=True).boxes
    x1, y1, x2, y2 = shaped.to_input(b)
    got = (x1 * view.scale_x, y1 * view.scale_y, x2 * view.scale_x, y2 * view.scale_y)
    assert np.allclose(got, (300, 200, 900, 500), atol=8), got
    assert len(zimages) == 2 and "crop 1" in zprompt and zanswer.endswith("<verdict>generated</verdict>")
