"""`zoomin scan --estimate`: the job timed on a sample of the source, nothing written; the
projection's arithmetic; its flags."""
import re

import pyarrow as pa
import pytest

from jobs.args import duration
from jobs.cli import main
from jobs.estimate import Estimate, Timing, actor_bound, sample_units, steady
from tests.conftest import jpeg_bytes


def test_steady_rate_and_start_up_from_arrivals():
    # 4 s before anything, then a block of 10 rows every 0.5 s: 20 images/s, 4 s of start-up
    arrivals = [(4.0 + 0.5 * (i + 1), 10 * (i + 1)) for i in range(20)]
    rate, startup, measured = steady(arrivals, arrivals[-1][0])
    assert measured and rate == pytest.approx(20.0) and startup == pytest.approx(4.0)
    # too few blocks (two arriving together read as 1,600 images/s once): the whole run's rate
    assert steady([(2.0, 50)], 2.0) == (25.0, 0.0, False)
    assert steady([(9.0, 10), (9.01, 20)], 10.0) == (2.0, 0.0, False)
    # two workers, each a block of 10 rows every second, in step: 20 images/s, not more
    pairs = [(4.0 + (i // 2) + 1 + 0.01 * (i % 2), 10 * (i + 1)) for i in range(20)]
    rate, startup, measured = steady(pairs, pairs[-1][0])
    assert measured and rate == pytest.approx(20.0, rel=0.02) and startup == pytest.approx(4.0, abs=0.5)
    # the same, the first tenth ending on the first block of a pair (read as 21.2 from it to the last)
    rate, _, _ = steady(pairs[2:], pairs[-1][0])
    assert rate == pytest.approx(20.0, rel=0.02)
    e = Estimate("d", 20, 20, 20, 1, "p", 1.0, Timing(20, 0.0, 2.0, 10.0, steady=False, blocks=2))
    assert "too few for a steady rate" in e.text() and "  steady rate:" not in e.text()


def test_model_actors_bound_the_rate():
    # two actors, 256 images: the zoom actors busy 4 s in all (64 images/s each at most); decode
    # tasks are not actors and bound nothing here
    stages = {"read_and_prepare": (1.0, 0.8), "Scanner": (2.0, 2.0), "Zoomer": (4.0, 3.9)}
    assert actor_bound(stages, 2, 256) == pytest.approx(128.0)
    assert actor_bound({"read_and_prepare": (1.0, 1.0)}, 2, 256) is None


def test_a_sample_spreads_over_the_listing():
    units = pa.table({"uri": [f"k{i:03d}" for i in range(100)]})
    picked = sample_units(units, 10).column("uri").to_pylist()
    assert picked == [f"k{i:03d}" for i in range(0, 100, 10)]
    assert sample_units(units, 500).num_rows == 100


def test_nodes_for_a_deadline():
    e = Estimate("s3://a/", units=10**6, sampled=512, images=10**6, nodes=2, plan="p", ray_start_s=5.0,
                 job=Timing(images=512, startup_s=5.0, rate=100.0, seconds=10.0), deadline_s=3600.0)
    # 50 images/s per node over the 3590 s left: 1e6 / (50 * 3590) = 5.6 -> 6 nodes
    assert e.nodes_for(3600.0) == 6
    assert e.nodes_for(9.0) is None        # start-up alone is longer
    assert not e.meets_deadline            # 6 nodes needed, 2 here: `--estimate` exits 1
    assert Estimate(**{**e.__dict__, "deadline_s": 40000.0}).meets_deadline
    assert e.whole_s == pytest.approx(10.0 + 10**4)
    text = e.text()
    assert "6 node(s) like these" in text and "100.0 images/s (50.0 per node)" in text and "2:46:50" in text


def test_duration_flag():
    assert duration("8h") == 28800 and duration("1h30m") == 5400 and duration("90") == 90
    assert duration("45m") == 2700 and duration("2.5h") == 9000 and duration("1h30m5s") == 5405
    for bad in ("soon", "", "0", "h", "1h30", "8 h"):   # 1h30: minutes or seconds? say which
        with pytest.raises(Exception, match="duration|longer than zero"):
            duration(bad)


def test_estimate_flags_are_checked(tmp_path, capsys):
    assert main(["scan", str(tmp_path)]) == 2
    assert "give --out" in capsys.readouterr().err
    assert main(["scan", str(tmp_path), "--out", str(tmp_path / "o"), "--deadline", "8h"]) == 2
    assert "go with --estimate" in capsys.readouterr().err
    assert main(["scan", str(tmp_path), "--estimate", "--overwrite"]) == 2
    assert "writes nothing" in capsys.readouterr().err
    assert main(["scan", str(tmp_path), "--estimate", "--deadline", "tomorrow"]) == 2
    assert "takes a duration" in capsys.readouterr().err


def _photos(folder, n):
    from tests.tiny_classifier import photos
    folder.mkdir()
    pics = photos(["astronaut", "coffee", "chelsea", "rocket", "china", "flower"])
    for i in range(n):
        p = pics[i % len(pics)]
        y, x = (i * 37) % (p.shape[0] - 200), (i * 53) % (p.shape[1] - 256)
        (folder / f"p{i:02d}.jpg").write_bytes(jpeg_bytes(p[y:y + 200, x:x + 256]))


@pytest.mark.slow
def test_estimate_times_a_sample_on_the_cluster_and_writes_nothing(ray_local, tmp_path, capsys):
    src = tmp_path / "photos"
    _photos(src, 30)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    # model calls of 2 images: enough blocks come back from 31 images to read a steady rate
    assert main(["scan", str(src), "--estimate", "--estimate-sample", "31", "--deadline", "1h", "--no-progress",
                 "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "timed 31 of 31 object(s) (31 image(s))" in out
    rate = float(re.search(r"steady rate: +([\d.]+) images/s", out).group(1))
    startup = float(re.search(r"then ([\d.]+) s to the first results", out).group(1))
    assert rate > 0 and startup >= 0
    assert "not ok in the sample: decode_error 1" in out      # the broken file is counted, not lost
    assert re.search(r"--deadline 1:00:00: 1 node\(s\) like these", out)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before   # nothing written
    # a deadline this cluster cannot meet: exit status 1, for scripts
    assert main(["scan", str(src), "--estimate", "--deadline", "1s", "--no-progress"]) == 1
    need = re.search(r"--deadline 0:00:01: (.*)", capsys.readouterr().out).group(1)
    assert need == "start-up alone takes longer" or int(need.split()[0]) > 1
    # --out is checked as the scan would check it, and left as it was
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    assert main(["scan", str(src), "--estimate", "--out", str(tmp_path / "busy"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "busy" in err and "notes.txt" not in err and (tmp_path / "busy" / "notes.txt").exists()
    assert main(["scan", str(src), "--estimate", "--out", str(tmp_path / "new"), "--no-progress",
                 "--estimate-sample", "12"]) == 0
    assert "the scan would start a new run there" in capsys.readouterr().out and not (tmp_path / "new").exists()

    # a cascade: the first tier is timed alone too, and the second tier's share is reported
    assert main(["scan", str(src), "--estimate", "--estimate-sample", "20", "--cascade", "compact,fake",
                 "--escalate", "0:0.99", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "timed 20 of 31 object(s)" in out and "first tier alone:" in out
    share = int(re.search(r"the second tier took (\d+)% of the sample \((\d+) image", out).group(1))
    assert share > 0
