"""Progress as a terminal and a log read it: images done of the total, rate, time left."""
import io
import time

from jobs.progress import Progress, line


def test_line_reads_done_total_rate_and_time_left():
    assert line(120, 480, 9.8, 65) == "120/480 images (25%), 9.8 images/s, 0:37 left, 1:05 elapsed"
    assert line(5, None, 2.0, 3) == "5 images, 2.0 images/s, 0:03 elapsed"   # shards: no total
    assert line(0, 10, None, 30) == "0/10 images (0%), 0:30 elapsed"          # no rate before a commit
    assert "1:00:00 left" in line(0, 36000, 10.0, 1)


def test_a_log_gets_a_line_every_interval_and_one_at_the_end():
    done = {"n": 0}

    def count():
        done["n"] += 4
        return min(done["n"], 40)
    log = io.StringIO()
    with Progress(count, 40, every=0.2, stream=log, tty=False, poll_s=0.05):
        time.sleep(0.7)
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 6 and all(ln.startswith("zoomin: progress: ") for ln in lines)
    assert lines[-1].startswith("zoomin: progress: 40/40 images (100%)")
    assert "images/s" in lines[-2]


def test_a_terminal_line_is_redrawn_in_place_and_ends_with_a_newline():
    term = io.StringIO()
    with Progress(lambda: 3, 9, stream=term, tty=True, poll_s=0.05):
        time.sleep(0.2)
    text = term.getvalue()
    assert text.count("\r\033[K") >= 2 and text.endswith("\n") and text.count("\n") == 1
    assert "3/9 images (33%)" in text


def test_a_failing_count_does_not_stop_the_scan():
    def count():
        raise OSError("listing failed")
    log = io.StringIO()
    with Progress(count, 5, every=0.05, stream=log, tty=False, poll_s=0.02):
        time.sleep(0.1)
    assert "0/5 images" in log.getvalue()
