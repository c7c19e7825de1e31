"""`zoomin submit` against a cluster with Ray 2.60's token authentication, as a user meets it.

Every other test runs with RAY_AUTH_MODE=disabled; the cluster here is started with Ray's defaults
(RAY_AUTH_MODE unset; `ray start --head` then turns token mode on because a token exists in its
HOME, ~/.ray/auth_token), and `zoomin submit` runs as a separate process with or without a token.
"""
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from jobs import submit as sub
from jobs.sinks import read_results
from tests.s3_support import free_port
from tests.test_submit import stop_cluster

RAY = str(Path(sys.executable).parent / "ray")
ROOT = Path(__file__).resolve().parent.parent
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def clean_env(home: Path, **extra) -> dict:
    """This environment without any of Ray's auth settings (the runner exports
    RAY_AUTH_MODE=disabled), HOME at `home`, and the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
               PYTHONPATH=str(ROOT), **extra)
    return env


# ---- the policy, without a cluster ---------------------------------------------------------------

@pytest.fixture
def no_ray_config(monkeypatch, tmp_path):
    """Auth variables cleared, HOME empty; Ray's cached config is not touched in this process."""
    for k in AUTH_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sub, "_reload_ray_config", lambda: None)
    return tmp_path


def test_token_sources_in_rays_order(no_ray_config, monkeypatch):
    home = no_ray_config
    assert sub.token_source() is None
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("abc\n")
    assert sub.token_source() == "~/.ray/auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(home / "missing"))
    assert sub.token_source() is None  # Ray reads only the named file then
    monkeypatch.setenv("RAY_AUTH_TOKEN", "xyz")
    assert sub.token_source() == "RAY_AUTH_TOKEN"


def test_token_mode_is_turned_on_only_for_this_machine(no_ray_config, monkeypatch):
    assert [sub.is_loopback(a) for a in ("http://127.0.0.1:8265", "http://localhost:8265", "http://[::1]:8265",
                                         "127.0.0.2:8265", "http://10.0.0.5:8265", "https://head.example.com",
                                         "http://127.0.0.1.example.com:8265")] == \
        [True, True, True, True, False, False, False]
    with sub.client_auth("http://127.0.0.1:8265") as on:  # no token here
        assert not on and "RAY_AUTH_MODE" not in os.environ
    monkeypatch.setenv("RAY_AUTH_TOKEN", "xyz")
    with sub.client_auth("http://head.example.com:8265") as on:  # never sent to another host by itself
        assert not on and "RAY_AUTH_MODE" not in os.environ
    with sub.client_auth("http://127.0.0.1:8265") as on:
        assert on and os.environ["RAY_AUTH_MODE"] == "token"
    assert "RAY_AUTH_MODE" not in os.environ  # put back
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with sub.client_auth("http://127.0.0.1:8265") as on:  # an explicit choice is respected
        assert not on and os.environ["RAY_AUTH_MODE"] == "disabled"


def test_auth_errors_are_one_line_naming_what_to_set(no_ray_config, monkeypatch):
    missing = "Authentication required: Unauthorized: Missing authentication token\n\nToken authentication ..."
    msg = sub.auth_error("http://h:8265", missing)
    assert "\n" not in msg and "requires a token (no token was found here)" in msg
    assert "set RAY_AUTH_MODE=token" in msg and "~/.ray/auth_token" in msg and "RAY_AUTH_TOKEN," in msg
    monkeypatch.setenv("RAY_AUTH_TOKEN", "xyz")
    assert "the token in RAY_AUTH_TOKEN is sent to another host only with RAY_AUTH_MODE=token" in \
        sub.auth_error("http://h:8265", missing)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert "RAY_AUTH_MODE is 'disabled', so the token in RAY_AUTH_TOKEN is not sent" in \
        sub.auth_error("http://h:8265", missing)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    bad = sub.auth_error("http://h:8265", "Authentication failed: Forbidden: Invalid authentication token")
    assert "rejected the token from RAY_AUTH_TOKEN" in bad and "ray get-auth-token" in bad


# ---- a real cluster with Ray's defaults ----------------------------------------------------------

@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    home = tmp_path_factory.mktemp("head_home")
    env = clean_env(home)
    # The token a head node has once anything (ray.init(), `ray get-auth-token --generate`) made one.
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    token = (home / ".ray" / "auth_token").read_text().strip()
    dash = free_port()
    temp = tempfile.mkdtemp(prefix="rz", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        r = subprocess.run([RAY, "start", "--head", f"--port={free_port()}", "--node-ip-address=127.0.0.1",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
                            "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats",
                            f"--dashboard-agent-listen-port={free_port()}"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Token authentication is enabled" in r.stderr + r.stdout
        yield {"jobs": f"http://127.0.0.1:{dash}", "home": home, "token": token}
    finally:
        stop_cluster(temp)  # not `ray stop`: it stops every Ray cluster on the machine


def zoomin(*args, env, timeout=240):
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tiny(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (i * 100, 60, 30)).save(imgs / f"{i}.png")
    return imgs


@pytest.mark.slow
@pytest.mark.ray
def test_submit_to_a_token_cluster(token_head, tiny, tmp_path):
    url = token_head["jobs"]
    with pytest.raises(urllib.error.HTTPError) as e:  # it really demands a token
        urllib.request.urlopen(f"{url}/api/jobs/", timeout=30)
    assert e.value.code == 401
    job = ["--", "scan", str(tiny), "--out", str(tmp_path / "out"), "--backend", "fake", "--num-cpus", "1"]
    elsewhere = tmp_path / "client_home"  # a client machine without the token
    elsewhere.mkdir()

    r = zoomin("submit", "--address", url, *job, env=clean_env(elsewhere))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"zoomin submit: error: the Ray cluster at {url} requires a token")
    assert "set RAY_AUTH_MODE=token" in lines[0] and "~/.ray/auth_token" in lines[0]

    r = zoomin("submit", "--address", url, *job, env=clean_env(elsewhere, RAY_AUTH_MODE="token",
                                                                RAY_AUTH_TOKEN="not-the-token"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "rejected the token from RAY_AUTH_TOKEN" in r.stderr

    # Ray's way for a client elsewhere: RAY_AUTH_MODE=token and the token.
    r = zoomin("submit", "--address", url, "--wait", *job,
               env=clean_env(elsewhere, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token_head["token"]))
    assert r.returncode == 0 and "SUCCEEDED" in r.stdout, (r.stdout + r.stderr)[-3000:]
    assert read_results(tmp_path / "out").num_rows == 2

    # On the head node itself (loopback address, ~/.ray/auth_token there, RAY_AUTH_MODE unset):
    # zoomin turns token mode on for its own client.
    job[4] = str(tmp_path / "out2")
    r = zoomin("submit", "--address", url, *job, env=clean_env(token_head["home"]))
    assert r.returncode == 0 and "zoomin submit: job " in r.stdout, (r.stdout + r.stderr)[-3000:]
