"""`zoomin annotate --teacher`: the teacher's answers are read back as a scan reads them and kept
only when they hold up; every drop is counted by reason, every label leaves one row."""
import json
import os

import pytest
from transformers import LogitsProcessorList

from jobs.annotate import read_dataset
from jobs.cli import main
from tests.conftest import jpeg_bytes, textured
from tests.tiny_vlm import Script, build_qwen
from zoomin_core.backends.vlm import VLMBackend
from zoomin_core.decode import prepare
from zoomin_core.records import ImageInput
from zoomin_core.teacher import HINT, Dropped, match, teach

GEN, REAL = "generated", "real"
TRUE = [50, 40, 120, 100]
# (label, true boxes, query 1's forced answer, query 2's forced answer or None when 1 is dropped, outcome)
CASES = [
    (GEN, [TRUE], "Odd block. <boxes>[[50, 40, 120, 100]]</boxes> <verdict>generated</verdict>",
     "Crop 1 is flat. <verdict>generated</verdict>", "kept"),
    (GEN, [], "Looks made. <verdict>generated</verdict>", None, "no_boxes"),
    (GEN, [TRUE], "Odd corner. <boxes>[[0, 0, 20, 20]]</boxes> <verdict>generated</verdict>", None, "boxes_miss"),
    (REAL, [], "Natural. <boxes>[[10, 10, 60, 60]]</boxes> <verdict>generated</verdict>", None, "disagrees"),
    (REAL, [], "a camera, I think", None, "unparseable"),
    (REAL, [], "Natural. <boxes>[[10, 10, 60, 60]]</boxes> <verdict>real</verdict>",
     "Crop 1 is smooth. <verdict>generated</verdict>", "disagrees"),
    (REAL, [], "Natural. <boxes>[[10, 10, 60, 60]]</boxes> <verdict>real</verdict>",
     "Nothing odd. <verdict>real</verdict>", "kept"),
    (GEN, [TRUE], "Block. <boxes>[[48, 38, 122, 104]]</boxes> <verdict>generated</verdict>", "hmm", "unparseable"),
]


def test_every_filter_on_forced_answers(tmp_path):
    backend = VLMBackend(str(build_qwen(tmp_path / "teacher")), max_new_tokens=64)
    eos = backend.model.generation_config.eos_token_id
    answers = {"scan": [c[2] for c in CASES], "zoom": [c[3] for c in CASES if c[3] is not None]}
    backend.generate_hook = lambda query, n: {"logits_processor": LogitsProcessorList(
        [Script(backend.tokenizer, answers[query][:n], eos)])}
    items = []
    for i, (label, boxes, *_rest) in enumerate(CASES):   # 224x168: the tiny processor's frame is the image
        data = jpeg_bytes(textured(224, 168, seed=i))
        items.append((prepare(ImageInput(f"{i}.jpg", data)), data, {"label": label, "boxes": boxes}))
    got = teach(backend, items, min_iou=0.5)
    assert [g.reason if isinstance(g, Dropped) else "kept" for g in got] == [c[4] for c in CASES]
    # every prompt told the teacher the label
    prompts = [p for t in backend.trace for p in t["prompts"]]
    assert all(p.endswith(HINT.format(label=lab)) for p, lab in zip(prompts, [c[0] for c in CASES]))
    kept = got[0]
    assert kept.boxes == ((50.0, 40.0, 120.0, 100.0),) and kept.explanation == "Odd block"
    assert kept.rationale == "Crop 1 is flat" and kept.annotator.startswith("teacher:vlm/qwen2_5_vl/")
    assert "IoU 0.00" in got[2].detail and "query 2 says generated" in got[5].detail
    assert match([TRUE], [(48, 38, 122, 104)]) > 0.8 and match([TRUE], []) == 0.0


@pytest.mark.ray
@pytest.mark.slow
def test_annotate_with_a_teacher_through_ray(ray_local, tmp_path, capsys):
    """A random teacher writes nothing usable: every label still leaves one row, each drop counted;
    the review page lists them."""
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(5):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(jpeg_bytes(textured(200, 150, seed=i)))
        lines.append(json.dumps({"file": f"img/{i}.jpg", "label": GEN if i % 2 else REAL}))
    (tmp_path / "img" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    lines.append(json.dumps({"file": "img/broken.jpg", "label": REAL}))
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(lines) + "\n")
    teacher = build_qwen(tmp_path / "teacher")
    ds = tmp_path / "ds"
    args = ["annotate", str(labels), "--out", str(ds), "--teacher", str(teacher), "--max-new-tokens", "8",
            "--chunk", "3"]
    assert main(args) == 1   # nothing kept: said, and a non-zero exit
    summary = json.loads((ds / "summary.json").read_text())
    assert summary["examples"] == 0 and summary["dropped"] == {"unparseable": 5}
    assert summary["failed"] == {"decode_error": 1} and summary["annotator"] == f"teacher:{teacher}"
    rows = read_dataset(str(ds))
    assert len(rows) == 6 and all(r["error"].startswith("dropped: query 1") for r in rows if r["status"] == "dropped")
    page = (ds / "review.html").read_text()
    assert "dropped" in page and "broken.jpg" in page
    # a template run may not write into a teacher's dataset
    assert main(["annotate", str(labels), "--out", str(ds)]) == 2
    assert "another annotator" in capsys.readouterr().err
    # a teacher that is not a checkpoint: one line, before Ray
    assert main(["annotate", str(labels), "--out", str(tmp_path / "ds2"), "--teacher", str(tmp_path / "nope")]) == 2
    assert "--teacher " + str(tmp_path / "nope") + ": no such file" in capsys.readouterr().err
    # nor into a folder of other files
    assert main(["annotate", str(labels), "--out", str(tmp_path / "img")]) == 2
    assert "a folder with other files in it" in capsys.readouterr().err
    # a dataset the teacher kept nothing of: finetune says why
    assert main(["finetune", str(ds), "--base", str(teacher), "--out", str(tmp_path / "tuned")]) == 2
    assert "dropped 5" in capsys.readouterr().err
