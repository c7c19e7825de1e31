"""The VLM answer parser on a corpus of well-formed and malformed outputs."""
import pytest

from zoomin_core.vlm_parse import Unparseable, parse_answer, parse_verdict

W, H = 200, 100


@pytest.mark.parametrize("text, verdict, boxes", [
    # well formed
    ("Smooth skin. <boxes>[[10, 20, 50, 60]]</boxes> <verdict>generated</verdict>", "generated", [(10, 20, 50, 60)]),
    # prose and a code fence around the JSON, no boxes tag
    ("Look here:\n```json\n[[1, 2, 30, 40], [50, 50, 90, 95]]\n```\nso <verdict>real</verdict>", "real",
     [(1, 2, 30, 40), (50, 50, 90, 95)]),
    # Qwen grounding objects
    ('[{"bbox_2d": [5, 5, 25, 25], "label": "hand"}] <verdict>fake</verdict>', "generated", [(5, 5, 25, 25)]),
    # inverted corners are swapped; out-of-bounds clamped; zero-area dropped; duplicates merged
    ("<boxes>[[60, 80, 20, 10], [-5, -5, 300, 120], [7, 7, 7, 30], [20, 10, 60, 80]]</boxes><verdict>real</verdict>",
     "real", [(20, 10, 60, 80), (0, 0, 200, 100)]),
    # repeated verdict tags: the last one counts
    ("<verdict>real</verdict> on reflection <verdict>generated</verdict>", "generated", []),
    # truncated: no closing tags
    ("texture repeats <boxes>[[10, 10, 40, 40]]</boxes> <verdict>Generated", "generated", [(10, 10, 40, 40)]),
    # truncated inside the box list: the complete box survives
    ("<verdict>real</verdict> <boxes>[[10, 10, 40, 40], [50, 5", "real", [(10, 10, 40, 40)]),
    # boxes as a JSON object, capitalised verdict word, bold markup
    ('{"boxes": [[0, 0, 10, 10]]} <verdict>**REAL**</verdict>', "real", [(0, 0, 10, 10)]),
    # non-numeric junk in boxes is ignored
    ('<boxes>[["a", 1, 2, 3], [1, 1, 9, 9]]</boxes><verdict>real</verdict>', "real", [(1, 1, 9, 9)]),
])
def test_parses_what_models_write(text, verdict, boxes):
    a = parse_answer(text, W, H, want_boxes=True)
    assert a.verdict == verdict
    assert a.boxes == [tuple(float(x) for x in b) for b in boxes]
    assert "<" not in a.explanation and "[[" not in a.explanation


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   \n", "empty"),
    ("The image looks real to me.", "no <verdict>"),
    ("<verdict>maybe</verdict>", "no <verdict>"),
    ("<boxes>[[1,2,3,4]]</boxes> <verdict>", "no <verdict>"),
    ("\ufffd\x00 random bytes <verd", "no <verdict>"),
])
def test_unusable_output_is_unparseable_with_reason(text, reason):
    with pytest.raises(Unparseable) as e:
        parse_answer(text, W, H, want_boxes=True)
    assert reason in e.value.reason


def test_truncation_is_named_and_explanation_kept():
    with pytest.raises(Unparseable, match="token limit"):
        parse_answer("The hands look odd and", W, H, want_boxes=True, truncated=True)
    a = parse_answer("The left hand has six fingers. <verdict>generated</verdict>", W, H, want_boxes=False)
    assert a.explanation == "The left hand has six fingers" and a.boxes == []
    assert parse_verdict("nothing") is None


def test_boxes_in_a_unit_frame_are_kept():
    # LLaVA writes boxes as fractions of the image: a box is small in numbers, not in area
    a = parse_answer("x <boxes>[[0.25, 0.25, 0.75, 0.625]]</boxes> <verdict>generated</verdict>", 1, 1, want_boxes=True)
    assert a.boxes == [(0.25, 0.25, 0.75, 0.625)]
    assert parse_answer("<boxes>[[0.2, 0.2, 0.2005, 0.5]]</boxes> <verdict>real</verdict>", 1, 1, True).boxes == []
