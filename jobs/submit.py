"""`zoomin submit`: run a `zoomin` command as a job on a running Ray cluster, through Ray's Jobs
API (the ordinary `JobSubmissionClient`).

    zoomin submit --address http://HEAD:8265 --follow -- scan s3://archive/ --out s3://results/run1/

The runtime environment carries this project's two packages (`zoomin_core`, `jobs`) as
`py_modules`, so the cluster runs the submitter's version; the cluster's image provides the
dependencies (torch, ray, pyarrow, ...: see cluster/). Paths in the command are read on the
cluster: use object-store URIs or paths every node mounts.

Token authentication (Ray 2.60): a cluster that runs with RAY_AUTH_MODE=token (the default of
`ray start --head` when a token exists on the head, e.g. ~/.ray/auth_token) answers 401 to a
client that sends no token. Ray's client sends one only when RAY_AUTH_MODE=token in its own
environment, reading it from RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else
~/.ray/auth_token. When RAY_AUTH_MODE is unset, a token is found locally and --address is a
loopback address (the cluster of this machine, whose token ~/.ray/auth_token is), `zoomin submit`
turns token mode on for its own client, as Ray's own `ray.init()` does for a local cluster; it
never sends a token to another host unless RAY_AUTH_MODE=token says so. An authentication
failure is one line naming what to set, exit status 2. The token is never put in the job's
runtime environment.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import shlex
import sys
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(Exception):
    pass


def entrypoint(command: list[str]) -> str:
    """The shell command the job runs: `python -m jobs.cli ...`, validated here first."""
    from .args import build_parser
    if not command or command[0] == "submit":
        raise SubmitError("give the zoomin command to run after '--', e.g. -- scan s3://bucket/ --out s3://out/")
    import contextlib
    import io
    said = io.StringIO()
    try:   # the parser's own one-line reason, inside ours: one line in all
        with contextlib.redirect_stderr(said):
            build_parser().parse_args(command)
    except SystemExit:
        why = said.getvalue().strip().split(": error: ", 1)[-1]
        raise SubmitError(f"not a valid zoomin command ({shlex.join(command)}): {why}") from None
    return "python -m jobs.cli " + shlex.join(command)


def runtime_env(env_vars: dict[str, str]) -> dict:
    root = Path(__file__).resolve().parent.parent
    return {"py_modules": [str(root / "zoomin_core"), str(root / "jobs")],
            "env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", **env_vars}}


AUTH_MODE, TOKEN, TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"


def token_source() -> Optional[str]:
    """Where Ray's client would find a token here, in its own order (RAY_AUTH_TOKEN, the file
    named by RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); None: no token."""
    if os.environ.get(TOKEN, "").strip():
        return TOKEN
    named = os.environ.get(TOKEN_PATH)
    path = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    try:
        if path.read_text().strip():
            return f"{TOKEN_PATH} ({path})" if named else "~/.ray/auth_token"
    except (OSError, UnicodeDecodeError):
        pass
    return None


def is_loopback(address: str) -> bool:
    host = urllib.parse.urlsplit(address if "://" in address else f"http://{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reload_ray_config() -> None:
    """Make this process's Ray see RAY_AUTH_MODE as it is now (Ray caches its config)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass


@contextmanager
def client_auth(address: str) -> Iterator[bool]:
    """Turns Ray's token mode on for this process's client while it talks to `address`, when
    RAY_AUTH_MODE is unset, a token is found locally and `address` is on this machine; yields
    whether it did. The environment is put back afterwards."""
    if os.environ.get(AUTH_MODE) is not None or not is_loopback(address) or token_source() is None:
        yield False
        return
    os.environ[AUTH_MODE] = "token"
    _reload_ray_config()
    try:
        yield True
    finally:
        os.environ.pop(AUTH_MODE, None)
        _reload_ray_config()


def auth_error(address: str, message: str) -> str:
    """One line for Ray's AuthenticationError (its .message): what is wrong and what to set."""
    mode = os.environ.get(AUTH_MODE)
    found = token_source()
    if "Forbidden" in message or "invalid" in message.lower():
        return (f"the Ray cluster at {address} rejected the token from {found or 'this machine'}: it is not "
                f"that cluster's token; put the one `ray get-auth-token` prints on its head node in "
                f"{TOKEN} or ~/.ray/auth_token (or a file named by {TOKEN_PATH})")
    if mode is not None and mode.lower() != "token":
        state = f"{AUTH_MODE} is '{mode}'" + (f", so the token in {found} is not sent" if found else
                                               " and no token was found here")
    elif mode is None and found:  # not sent automatically: the address is not this machine
        state = f"the token in {found} is sent to another host only with {AUTH_MODE}=token"
    else:
        state = "no token was found here" if not found else "the token sent was not accepted"
    todo = "put" if (mode or "").lower() == "token" else f"set {AUTH_MODE}=token and put"
    return (f"the Ray cluster at {address} requires a token ({state}): {todo} the "
            f"cluster's token (`ray get-auth-token` on its head node prints it) in ~/.ray/auth_token, in "
            f"{TOKEN}, or in a file named by {TOKEN_PATH}")


def submit(address: str, command: list[str], follow: bool = False, wait: bool = False,
           submission_id: Optional[str] = None, env_vars: Optional[dict] = None,
           poll_s: float = 2.0) -> int:
    ep = entrypoint(command)
    from ray.exceptions import AuthenticationError
    with client_auth(address):
        try:
            return _submit(address, command, ep, follow, wait, submission_id, env_vars, poll_s)
        except AuthenticationError as e:
            raise SubmitError(auth_error(address, getattr(e, "message", "") or "")) from None


def _submit(address: str, command: list[str], ep: str, follow: bool, wait: bool,
            submission_id: Optional[str], env_vars: Optional[dict], poll_s: float) -> int:
    from ray.job_submission import JobSubmissionClient
    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SubmitError(f"cannot reach the Ray Jobs API at {address}: {e}") from None
    deadline = time.time() + 120
    while True:
        try:
            job_id = client.submit_job(entrypoint=ep, runtime_env=runtime_env(env_vars or {}),
                                       submission_id=submission_id, metadata={"zoomin": command[0]})
            break
        except RuntimeError as e:
            # A cluster that has just started answers this until its job agents are up.
            if "No available agent" not in str(e) or time.time() > deadline:
                raise SubmitError(f"the Jobs API at {address} refused the job: {e}") from None
            time.sleep(2)
    print(f"zoomin submit: job {job_id} on {address}: {ep}", flush=True)
    if follow:
        async def tail():
            async for lines in client.tail_job_logs(job_id):
                sys.stdout.write(lines)
                sys.stdout.flush()
        asyncio.run(tail())
    if follow or wait:
        while (status := str(client.get_job_status(job_id)).split(".")[-1]) not in TERMINAL:
            time.sleep(poll_s)
        info = client.get_job_info(job_id)
        print(f"zoomin submit: job {job_id} {status}" + (f": {info.message}" if info.message else ""), flush=True)
        return 0 if status == "SUCCEEDED" else 1
    return 0
