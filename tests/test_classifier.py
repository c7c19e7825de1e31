"""The `classifier` backend: Hugging Face image classifiers built offline (tests/tiny_classifier.py),
random ones of four families and one trained here to find a planted pattern."""
import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.cli import main
from jobs.sinks import read_results
from tests.conftest import BAD_INPUTS, write_bad_inputs
from tests.tiny_classifier import PATTERN, SIDE, build, photos, plant, train_pattern
from zoomin_core import ExamineConfig, ImageInput, load_backend, run_chain
from zoomin_core.backends.classifier import ClassifierBackend, hot_regions, scan_side
from zoomin_core.backends.classifier_checkpoint import Preprocess, label_map, meaning
from zoomin_core.backends.vlm_families import CheckpointError
from zoomin_core.decode import DecodeConfig
from zoomin_core.geometry import tiles
from zoomin_core.records import Box, View

DEVICE = os.environ.get("ZOOMIN_TEST_DEVICE", "cpu")   # cuda: the same assertions, bf16, on a GPU
FAMILIES = ("vit", "convnext", "efficientnet", "resnet")


@pytest.fixture(scope="module")
def random_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    return {f: build(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def pattern_ckpt(tmp_path_factory):
    return train_pattern(tmp_path_factory.mktemp("clf") / "pattern-detector")


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ---- the checkpoint's own preprocessing, without torchvision -----------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_preprocessing_matches_the_checkpoints_own_processor(random_ckpts, family):
    from transformers import AutoImageProcessor
    folder = random_ckpts[family]
    pre = Preprocess.from_config(json.loads((folder / "preprocessor_config.json").read_text()))
    theirs = AutoImageProcessor.from_pretrained(str(folder))
    rng = np.random.default_rng(0)
    for shape in ((57, 83, 3), (300, 200, 3), (SIDE, SIDE, 3)):
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        want = theirs(Image.fromarray(x), return_tensors="np")["pixel_values"][0]
        got = pre.image(x)
        assert got.shape == want.shape == (3, SIDE, SIDE)
        assert np.abs(got - want).max() < 1e-4, (family, shape)


def test_sparse_older_processor_configs_take_their_class_defaults():
    # An older ConvNeXt/ResNet file: size as a number (the shortest edge), no resample or crop_pct.
    pre = Preprocess.from_config({"feature_extractor_type": "ConvNextFeatureExtractor", "size": 224,
                                  "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]})
    assert pre.resize == ("shortest", 256) and pre.crop == (224, 224) and pre.resample == 3
    eff = Preprocess.from_config({"image_processor_type": "EfficientNetImageProcessor", "size": {"height": 600,
                                                                                               "width": 600}})
    assert eff.extra_std and (eff.height, eff.width) == (600, 600)
    vit = Preprocess.from_config({"image_processor_type": "ViTImageProcessor", "size": 384})
    assert vit.resize == ("exact", 384, 384) and vit.crop is None
    with pytest.raises(CheckpointError, match="size"):
        Preprocess.from_config({"size": {"longest_edge": 512}})


# ---- labels ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,want", [
    ("FAKE", "generated"), ("AI-Generated", "generated"), ("aiGenerated", "generated"), ("Synthetic", "generated"),
    ("deepfake", "generated"), ("artificial", "generated"), ("real", "real"), ("Human", "real"),
    ("not_ai", "real"), ("non-ai", "real"), ("authentic", "real"), ("midjourney", None), ("LABEL_0", None),
    ("real_or_fake", "both"), ("photo", "real"), ("ai_photo", "generated"), ("Original", "real")])
def test_label_names(name, want):
    assert meaning(name) == want


def test_label_maps():
    cfg = lambda *names, **kw: {"id2label": {str(i): n for i, n in enumerate(names)}, **kw}   # noqa: E731
    assert label_map(cfg("Real", "Fake")).generated == (1,)
    multi = label_map(cfg("real", "midjourney", "sdxl", "dalle3"))
    assert multi.generated == (1, 2, 3) and multi.generators
    assert label_map(cfg("human", "ai_generated")).describe() == "generated = ai_generated; real = human"
    for unmappable in (cfg("LABEL_0", "LABEL_1"), cfg("tench", "goldfish", "shark"), cfg("fake", "cat")):
        with pytest.raises(CheckpointError, match="--generated-labels") as e:
            label_map(unmappable)
        assert repr(unmappable["id2label"]["0"]) in str(e.value)   # the label list is shown
    assert label_map(cfg("LABEL_0", "LABEL_1"), ("label_1",)).generated == (1,)
    with pytest.raises(CheckpointError, match="not a class"):
        label_map(cfg("real", "fake"), ("gan",))
    with pytest.raises(CheckpointError, match="every class"):
        label_map(cfg("a", "b"), ("a", "b"))
    single = label_map(cfg("artificial", num_labels=1))
    assert single.mode == "single" and single.generated == (0,)
    assert label_map(cfg("real", "fake", problem_type="multi_label_classification")).mode == "sigmoid"


# ---- the tile scan -----------------------------------------------------------------------------

def test_tiles_cover_the_image_within_the_cap():
    for w, h in ((144, 144), (1000, 300), (4000, 3000), (20, 500), (31, 31)):
        grid = tiles(w, h, 32, 0.5, 64)
        assert 1 <= len(grid) <= 64
        cover = np.zeros((h, w), bool)
        for b in grid:
            assert 0 <= b.x1 < b.x2 <= w and 0 <= b.y1 < b.y2 <= h
            cover[int(b.y1):int(b.y2), int(b.x1):int(b.x2)] = True
        assert cover.all(), (w, h)
    # a panorama: square tiles up to its short side, then spread with gaps - never stretched
    thin = tiles(300, 5000, 32, 0.5, 64)
    assert len(thin) <= 64 and {(b.width, b.height) for b in thin} == {(300, 300)}
    assert {(b.width, b.height) for b in tiles(300, 50000, 32, 0.5, 64)} == {(300, 300)}
    # at the input size while the cap allows it; larger (resized) tiles beyond it
    assert {b.width for b in tiles(144, 144, 32, 0.5, 64)} == {32}
    assert min(b.width for b in tiles(4000, 3000, 32, 0.5, 64)) > 32
    # the zoom keeps native-resolution tiles, spread evenly, when a region needs more than its cap
    spread = tiles(1000, 700, 32, 0.5, 9, grow=False)
    assert len(spread) == 9 and {b.width for b in spread} == {32}
    assert max(b.x2 for b in spread) == 1000 and min(b.x1 for b in spread) == 0
    # with half-overlapping tiles a trace of up to half a tile lies wholly inside one of them
    for x in range(0, 144 - PATTERN):
        assert any(b.x1 <= x and x + PATTERN <= b.x2 for b in tiles(144, 32, 32, 0.5, 64))
    assert scan_side(224) == 1008 and scan_side(32) == 144


def test_hot_tiles_join_into_regions():
    t = [Box(0, 0, 32, 32, 0.9), Box(16, 0, 48, 32, 0.7), Box(96, 96, 128, 128, 0.6), Box(48, 48, 80, 80, 0.1)]
    regions = hot_regions(t, 0.5)
    assert [(r.x1, r.y1, r.x2, r.y2, r.score) for r in regions] == [(0, 0, 48, 32, 0.9), (96, 96, 128, 128, 0.6)]
    assert hot_regions(t, 0.95) == [t[0]]   # nothing hot: the most suspicious tile


# ---- every family, every bad input -------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_one_row_per_input(random_ckpts, tmp_path, family):
    expected = write_bad_inputs(tmp_path / "in")
    big = np.asarray(Image.fromarray(photos(("coffee",))[0]).resize((1200, 800)))
    (tmp_path / "in" / "photo.png").write_bytes(_png(big))
    expected["photo.png"] = "ok"
    files = sorted((tmp_path / "in").iterdir())
    backend = load_backend("classifier", str(random_ckpts[family]), device=DEVICE)
    assert backend.model_id == f"classifier/{family}/{family}"
    rows = run_chain(backend, [ImageInput(str(f), f.read_bytes()) for f in files],
                     ExamineConfig(decode=DecodeConfig(view_max_side=scan_side(SIDE))))
    assert [r.uri for r in rows] == [str(f) for f in files]
    for f, r in zip(files, rows):
        assert r.status == expected[f.name], (f.name, r.error)
        if r.status != "ok":
            assert r.error and r.verdict is None
            continue
        assert 0 <= r.score <= 1 and 0 <= r.initial_score <= 1 and r.verdict in ("real", "generated")
        assert r.verdict == ("generated" if r.score >= 0.5 else "real")
        assert r.score >= r.initial_score - 1e-6       # the final score is the highest look
        assert 1 <= len(r.boxes) <= 4
        for b in r.boxes:
            assert 0 <= b.x1 < b.x2 <= r.width and 0 <= b.y1 < b.y2 <= r.height
        assert "whole image" in r.rationale and "Region 1" in r.rationale


def test_bf16_matches_fp32(random_ckpts):
    pixels = photos(("chelsea",))[0]
    view = [View(pixels, 1.0, 1.0)]
    fp32 = ClassifierBackend(str(random_ckpts["vit"])).scan(view)[0]
    bf16 = ClassifierBackend(str(random_ckpts["vit"]), dtype="bfloat16").scan(view)[0]
    assert abs(fp32.initial_score - bf16.initial_score) < 0.05
    assert [b.score for b in bf16.boxes] and abs(fp32.boxes[0].score - bf16.boxes[0].score) < 0.05


# ---- multi-class and one-output checkpoints ----------------------------------------------------

def _fixed_head(folder: Path, bias) -> None:
    """Outputs that do not depend on the image: zero weights, the given biases."""
    import torch
    from transformers import AutoModelForImageClassification
    m = AutoModelForImageClassification.from_pretrained(str(folder))
    head = m.classifier if not isinstance(m.classifier, torch.nn.Sequential) else m.classifier[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor(bias, dtype=head.bias.dtype))
    m.save_pretrained(folder)


def test_multi_class_sums_the_generated_classes_and_names_the_generator(tmp_path):
    folder = build("convnext", tmp_path / "per-generator", labels=("real", "midjourney", "sdxl"))
    _fixed_head(folder, [0.0, 1.0, 2.0])
    inputs = [ImageInput("a.png", _png(photos(("coffee",))[0]))]
    row = run_chain(load_backend("classifier", str(folder)), inputs)[0]
    p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert row.score == pytest.approx(p[1] + p[2], abs=1e-5) and row.verdict == "generated"
    assert "Most likely generator: sdxl." in row.rationale
    # --generated-labels: only the named class counts
    row = run_chain(load_backend("classifier", str(folder), generated_labels=("sdxl",)), inputs)[0]
    assert row.score == pytest.approx(p[2], abs=1e-5)
    assert "Most likely generator" not in row.rationale


@pytest.mark.parametrize("label,want", [("fake", 1 / (1 + np.exp(-1.0))), ("real", 1 - 1 / (1 + np.exp(-1.0)))])
def test_one_output_checkpoint(tmp_path, label, want):
    folder = build("vit", tmp_path / label, labels=(label,))
    _fixed_head(folder, [1.0])
    row = run_chain(load_backend("classifier", str(folder)), [ImageInput("a.png", _png(photos(("coffee",))[0]))])[0]
    assert row.score == pytest.approx(want, abs=1e-5)


# ---- the trained detector: the scan boxes the pattern, the verdicts follow it ------------------

@pytest.mark.ray
@pytest.mark.slow
def test_planted_pattern_is_boxed_and_decides_the_verdict(ray_local, pattern_ckpt, tmp_path, capsys):
    rng = np.random.default_rng(1)
    folder, planted = tmp_path / "photos", {}
    folder.mkdir()
    pics = photos(("china", "flower"))    # photos the detector never saw in training
    for i in range(12):
        pic = pics[i % 2]
        y0, x0 = rng.integers(0, pic.shape[0] - 144), rng.integers(0, pic.shape[1] - 144)
        px = pic[y0:y0 + 144, x0:x0 + 144]
        if i % 4 >= 2:
            x, y = (int(v) for v in rng.integers(0, 144 - PATTERN, 2))
            px, planted[f"img{i:02d}.png"] = plant(px, x, y), (x, y)
        (folder / f"img{i:02d}.png").write_bytes(_png(px))
    out = tmp_path / "res"
    # --split-stages on: the GPU layout (scan actors, CPU crop tasks, zoom actors) on CPU; the zoom
    # must not lean on anything the scan actor kept
    assert main(["scan", str(folder), "--out", str(out), "--backend", "classifier", "--model", str(pattern_ckpt),
                 "--split-stages", "on", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "generated = fake; real = real" in said
    rows = {Path(r["uri"]).name: r for r in read_results(str(out)).to_pylist()}
    assert len(rows) == 12 and {r["status"] for r in rows.values()} == {"ok"}
    assert json.loads((out / "_run.json").read_text())["job"]["view_size"] == 144   # full resolution
    for name, r in rows.items():
        assert r["model"] == "classifier/resnet/pattern-detector"
        if name not in planted:
            assert r["verdict"] == "real", (name, r["score"])
            continue
        x, y = planted[name]
        assert r["verdict"] == "generated", (name, r["score"], r["rationale"])
        # the resized whole image hides the 12 px pattern: the zoom into the region decides
        assert r["initial_verdict"] == "real" and "(region 1)" in r["rationale"]
        best = r["boxes"][0]
        assert best["x1"] <= x and best["y1"] <= y and x + PATTERN <= best["x2"] and y + PATTERN <= best["y2"]
        assert best["score"] >= 0.5
    # the classifier's settings are part of the job: a resume with other tiles is refused, and so
    # is one whose checkpoint was saved again under the same path
    assert main(["scan", str(folder), "--out", str(out), "--backend", "classifier", "--model", str(pattern_ckpt),
                 "--incremental", "--max-tiles", "16"]) == 2
    assert "classifier" in capsys.readouterr().err
    saved = (pattern_ckpt / "config.json").read_text()
    try:
        _relabel(pattern_ckpt, ("real", "ai"))
        assert main(["scan", str(folder), "--out", str(out), "--backend", "classifier", "--model", str(pattern_ckpt),
                     "--incremental"]) == 2
        assert "model_sha256" in capsys.readouterr().err
    finally:
        (pattern_ckpt / "config.json").write_text(saved)


# ---- checkpoints refused before any image is read ----------------------------------------------

def _strip(path: Path, prefix: str) -> None:
    """Rewrite a safetensors file without the tensors whose names start with `prefix`."""
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(path))
    save_file({k: v for k, v in tensors.items() if not k.startswith(prefix)}, str(path), metadata={"format": "pt"})


def _backbone(folder: Path) -> None:
    from transformers import ViTConfig, ViTModel
    ViTModel(ViTConfig(image_size=SIDE, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(folder)


BROKEN = {
    "unmappable": (lambda f: build("vit", f, labels=("LABEL_0", "LABEL_1")), "'LABEL_0', 'LABEL_1'"),
    "imagenet": (lambda f: build("vit", f, labels=("tench", "goldfish")), "cannot tell which classes"),
    "no_preprocessor": (lambda f: (build("vit", f), (f / "preprocessor_config.json").unlink()),
                        "missing preprocessor_config.json"),
    "no_config": (lambda f: (build("vit", f), (f / "config.json").unlink()), "missing config.json"),
    "pickled": (lambda f: (build("vit", f), (f / "model.safetensors").rename(f / "pytorch_model.bin")),
                "pickled weights are never loaded"),
    "truncated": (lambda f: (build("vit", f), (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:-100])), "truncated"),
    "no_head": (lambda f: (build("vit", f), _strip(f / "model.safetensors", "classifier.")), "lack"),
    "backbone": (lambda f: (build("vit", f), _backbone(f)), "no classification head"),
    "head_size": (lambda f: (build("vit", f), _relabel(f, ("real", "fake", "ai"))), "do not fit config.json"),
    "a_file": (lambda f: build("vit", f / "ckpt"), "needs a checkpoint folder"),
}


def _relabel(folder: Path, labels) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = dict(enumerate(labels))
    cfg["label2id"] = {n: i for i, n in enumerate(labels)}
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_unusable_checkpoint_is_refused_before_any_image_is_read(tmp_path, capfd, case):
    make, says = BROKEN[case]
    folder = tmp_path / case
    make(folder)
    capfd.readouterr()   # what building the checkpoint printed
    model = folder / "ckpt" / "model.safetensors" if case == "a_file" else folder
    out = tmp_path / "res"
    assert main(["scan", "--out", str(out), "--backend", "classifier", "--model", str(model)]) == 2
    err = capfd.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err      # one line: no loader report tables
    assert not out.exists() or not any(out.iterdir())


def test_classifier_flags_and_model(tmp_path, capsys, random_ckpts):
    out = str(tmp_path / "res")
    assert main(["scan", "--out", out, "--max-tiles", "16"]) == 2
    assert "--max-tiles applies to --backend classifier only" in capsys.readouterr().err
    for wrong in ("compact", "vlm"):   # a classifier checkpoint given to another backend: which one it is
        assert main(["scan", "--out", out, "--backend", wrong, "--model", str(random_ckpts["vit"])]) == 2
        assert "it looks like a Hugging Face image classifier: --backend classifier" in capsys.readouterr().err
    assert main(["scan", "--out", out, "--backend", "classifier"]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["scan", "--out", out, "--backend", "classifier", "--model", str(random_ckpts["vit"]),
                 "--generated-labels", "gan"]) == 2
    assert "'real', 'fake'" in capsys.readouterr().err


@pytest.mark.slow
def test_classifier_checkpoint_from_s3(s3, pattern_ckpt, tmp_path, monkeypatch):
    from jobs.models import ModelError, check_model, fetch_model
    from jobs.storage import StorageConfig
    monkeypatch.setenv("ZOOMIN_CACHE", str(tmp_path / "cache"))
    bucket, storage = s3.bucket("clf"), StorageConfig(endpoint_url=s3.endpoint)
    for f in pattern_ckpt.iterdir():
        s3.put(bucket, f"detector/{f.name}", f.read_bytes())
    found = check_model(f"s3://{bucket}/detector/", storage, "classifier")
    assert found == {"input_side": SIDE, "labels": "generated = fake; real = real"}
    local, fetched = fetch_model(f"s3://{bucket}/detector/", storage)
    assert fetched and ClassifierBackend(local).labels.generated == (1,)
    # labels that cannot be mapped are refused from the bucket too, naming them
    config = json.loads((pattern_ckpt / "config.json").read_text())
    config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1"}
    for f in pattern_ckpt.iterdir():
        s3.put(bucket, f"unnamed/{f.name}", json.dumps(config).encode() if f.name == "config.json" else f.read_bytes())
    with pytest.raises(ModelError, match="'LABEL_0', 'LABEL_1'"):
        check_model(f"s3://{bucket}/unnamed/", storage, "classifier")
    assert check_model(f"s3://{bucket}/unnamed/", storage, "classifier", ("LABEL_1",))["input_side"] == SIDE


def test_non_finite_outputs_are_error_rows(tmp_path):
    folder = build("vit", tmp_path / "broken", labels=("real", "fake"))
    _fixed_head(folder, [float("nan"), 0.0])
    inputs = [ImageInput(f"{i}.png", _png(photos(("coffee",))[0][i * 50:i * 50 + 200, :300])) for i in range(2)]
    rows = run_chain(load_backend("classifier", str(folder)), inputs)
    assert [r.status for r in rows] == ["model_error"] * 2
    assert all("non-finite" in r.error and r.verdict is None for r in rows)


def test_the_scan_view_keeps_a_panoramas_short_side(random_ckpts):
    from zoomin_core.decode import fit, prepare
    assert fit(256, 3000, 1008, 224) == (224, 2625) and fit(4000, 3000, 1008, 224) == (1008, 756)
    assert fit(100, 20000, 1008, 224) == (40, 8064)    # at most 8 x the view side, and never enlarged
    pano = np.asarray(Image.fromarray(photos(("coffee",))[0]).resize((3000, 256)))
    p = prepare(ImageInput("pano.png", _png(pano)), DecodeConfig(view_max_side=144, view_min_side=SIDE))
    assert p.view.size == (375, 32)
    row = run_chain(ClassifierBackend(str(random_ckpts["vit"])), [ImageInput("pano.png", _png(pano))],
                    ExamineConfig(stages="scan", decode=DecodeConfig(view_max_side=144, view_min_side=SIDE)))[0]
    assert "(256 px of the original each)" in row.explanation, row.explanation
