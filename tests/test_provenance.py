"""Provenance marks: read from metadata in the decode step, deciding `generated` without the
models when the file says so; never deciding from a capture claim; never costing a row."""
import io
import json

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from zoomin_core import ImageInput, load_backend, run_chain
from zoomin_core.decode import prepare
from zoomin_core.provenance import CAPTURE, COMPOSITE, GENERATED, read
from zoomin_core.schema import RESULT_SCHEMA, rows_to_table
from zoomin_core.stages import ExamineConfig
from tests.conftest import textured

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def xmp(term: str, form: str = "attribute") -> str:
    value = DST + term
    body = (f'<rdf:Description Iptc4xmpExt:DigitalSourceType="{value}"/>' if form == "attribute" else
            f"<rdf:Description><Iptc4xmpExt:DigitalSourceType>{value}</Iptc4xmpExt:DigitalSourceType></rdf:Description>")
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            f'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">{body}</rdf:RDF></x:xmpmeta>')


def jpeg(pixels: np.ndarray, xmp_text: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90, **({"xmp": xmp_text.encode()} if xmp_text else {}))
    return buf.getvalue()


def png(pixels: np.ndarray, **chunks: str) -> bytes:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_itxt(key.replace("_xmp", "XML:com.adobe.xmp"), value) if key == "_xmp" else info.add_text(key, value)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


PIXELS = textured(320, 240, seed=4)
A1111 = "a cat, highly detailed\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: sd15"
COMFY = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}}})


@pytest.mark.parametrize("data, signal, says", [
    (jpeg(PIXELS, xmp("trainedAlgorithmicMedia")), "iptc_xmp", GENERATED),
    (jpeg(PIXELS, xmp("compositeWithTrainedAlgorithmicMedia", "element")), "iptc_xmp", COMPOSITE),
    (jpeg(PIXELS, xmp("digitalCapture")), "iptc_xmp", CAPTURE),
    (png(PIXELS, _xmp=xmp("trainedAlgorithmicMedia")), "iptc_xmp", GENERATED),
    (png(PIXELS, parameters=A1111), "png_a1111", GENERATED),
    (png(PIXELS, prompt=COMFY, workflow='{"nodes": []}'), "png_comfyui", GENERATED),
    (png(PIXELS, invokeai_metadata='{"positive_prompt": "a cat", "steps": 30}'), "png_invokeai", GENERATED),
    (png(PIXELS, Software="NovelAI", Source="Stable Diffusion XL 8BA2AF87"), "png_novelai", GENERATED),
])
def test_each_mark_is_read_with_what_it_claims(data, signal, says):
    marks = prepare(ImageInput("x", data)).provenance
    assert [(m.signal, m.says) for m in marks] == [(signal, says)], marks


def test_look_alikes_and_broken_metadata_claim_nothing_and_cost_no_row():
    # a "parameters" chunk that is not a generator's, an unknown source type, broken XMP
    assert read({"parameters": "exposure 1/250, f/8"}) == ()
    assert [m.says for m in read({"xmp": xmp("someFutureTerm")})] == ["unknown"]
    assert read({"xmp": b"\xff\xfe<x:xmpmeta DigitalSourceType=\"unterminated"}) == ()
    assert read({"prompt": "{not json", "workflow": b"\x00\x01" * 1000}) == ()
    assert read({"xmp": "<a>" * 100_000}) == ()
    p = prepare(ImageInput("x", png(PIXELS, parameters="\x00" * 200_000, prompt="x" * 500_000)))
    assert p.status == "ok" and p.provenance == ()


def test_real_photos_carry_no_deciding_mark():
    from skimage import data
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()[..., :3]).save(buf, format="PNG")
        for blob in (buf.getvalue(), jpeg(getattr(data, name)()[..., :3])):
            assert not any(m.says in ("generated", "composite") for m in prepare(ImageInput(name, blob)).provenance)


class Counting:
    """The fake backend, counting the images its models see."""

    def __init__(self):
        self.inner, self.seen = load_backend("fake"), 0
        self.name, self.model_id = self.inner.name, self.inner.model_id

    def scan(self, views):
        self.seen += len(views)
        return self.inner.scan(views)

    def zoom(self, items):
        return self.inner.zoom(items)


def test_a_generated_mark_decides_without_the_models_and_examine_all_adds_boxes():
    marked = png(PIXELS, parameters=A1111)
    stripped = jpeg(PIXELS)   # the same pixels re-encoded: the mark is gone, the models decide
    capture = jpeg(PIXELS, xmp("digitalCapture"))
    backend = Counting()
    rows = run_chain(backend, [ImageInput("marked.png", marked), ImageInput("stripped.jpg", stripped),
                               ImageInput("capture.jpg", capture)])
    assert backend.seen == 2
    m, s, c = rows
    assert (m.verdict, m.score, m.decided_by, m.boxes) == ("generated", 1.0, "provenance", ())
    assert "decided by provenance" in m.rationale and "Steps: 20" in m.rationale and m.initial_verdict is None
    assert s.provenance == () and s.decided_by == "fake"
    assert c.decided_by == "fake" and [x.says for x in c.provenance] == ["capture"]   # recorded, never decides
    backend = Counting()
    (m2,) = run_chain(backend, [ImageInput("marked.png", marked)], ExamineConfig(examine_all=True))
    assert backend.seen == 1 and m2.boxes and (m2.verdict, m2.score, m2.decided_by) == ("generated", 1.0, "provenance")
    assert "The pixels, examined too" in m2.rationale
    table = rows_to_table([m, s, c, m2])
    assert table.schema.equals(RESULT_SCHEMA)
    assert table.column("provenance").to_pylist()[0][0]["signal"] == "png_a1111"
    assert table.column("decided_by").to_pylist() == ["provenance", "fake", "fake", "provenance"]


@pytest.mark.ray
@pytest.mark.slow
def test_marks_travel_through_the_ray_job(ray_local, tmp_path):
    from jobs.cli import main
    from jobs.sinks import read_results
    src = tmp_path / "src"
    src.mkdir()
    (src / "marked.png").write_bytes(png(PIXELS, prompt=COMFY))
    (src / "plain.jpg").write_bytes(jpeg(PIXELS))
    for split in ("off", "on"):
        out = tmp_path / f"out-{split}"
        assert main(["scan", str(src), "--out", str(out), "--backend", "fake", "--no-progress",
                     "--split-stages", split]) == 0
        rows = {r["uri"].rsplit("/", 1)[-1]: r for r in read_results(out).to_pylist()}
        assert rows["marked.png"]["decided_by"] == "provenance" and rows["marked.png"]["verdict"] == "generated"
        assert rows["marked.png"]["provenance"][0]["signal"] == "png_comfyui"
        assert rows["plain.jpg"]["decided_by"] == "fake" and rows["plain.jpg"]["provenance"] == []
    # --examine-all: the models judge the marked image too (the fake one calls it real); the mark
    # decides, and the summary does not count that as the zoom overturning the first look
    out = tmp_path / "out-all"
    assert main(["scan", str(src), "--out", str(out), "--backend", "fake", "--no-progress", "--examine-all"]) == 0
    rows = read_results(out).to_pylist()
    row = next(r for r in rows if r["uri"].endswith("marked.png"))
    assert row["initial_verdict"] == "real" and row["verdict"] == "generated" and row["decided_by"] == "provenance"
    by_zoom = sum(r["initial_verdict"] != r["verdict"] for r in rows if r["decided_by"] != "provenance")
    assert json.loads((out / "_run.json").read_text())["flipped"] == by_zoom
