"""`zoomin submit`: run a `zoomin` command as a job on a running Ray cluster, through Ray's Jobs
API (the ordinary `JobSubmissionClient`).

    zoomin submit --address http://HEAD:8265 --follow -- scan s3://archive/ --out s3://results/run1/

The runtime environment carries this project's two packages (`zoomin_core`, `jobs`) as
`py_modules`, so the cluster runs the submitter's version; the cluster's image provides the
dependencies (torch, ray, pyarrow, ...: see cluster/). Paths in the command are read on the
cluster: use object-store URIs or paths every node mounts.
"""
from __future__ import annotations

import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(Exception):
    pass


def entrypoint(command: list[str]) -> str:
    """The shell command the job runs: `python -m jobs.cli ...`, validated here first."""
    from .cli import build_parser
    if not command or command[0] == "submit":
        raise SubmitError("give the zoomin command to run after '--', e.g. -- scan s3://bucket/ --out s3://out/")
    try:
        build_parser().parse_args(command)
    except SystemExit:
        raise SubmitError(f"not a valid zoomin command: {shlex.join(command)}") from None
    return "python -m jobs.cli " + shlex.join(command)


def runtime_env(env_vars: dict[str, str]) -> dict:
    root = Path(__file__).resolve().parent.parent
    return {"py_modules": [str(root / "zoomin_core"), str(root / "jobs")],
            "env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", **env_vars}}


def submit(address: str, command: list[str], follow: bool = False, wait: bool = False,
           submission_id: Optional[str] = None, env_vars: Optional[dict] = None,
           poll_s: float = 2.0) -> int:
    from ray.job_submission import JobSubmissionClient
    ep = entrypoint(command)
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
