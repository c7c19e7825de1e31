"""Every file in cluster/ parses, has the fields its tool expects, and runs real zoomin commands."""
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from jobs.args import build_parser

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
RAYJOB_SPEC = {"entrypoint", "runtimeEnvYAML", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
               "activeDeadlineSeconds", "rayClusterSpec", "submitterPodTemplate", "jobId", "suspend",
               "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "backoffLimit", "submissionMode"}
CLUSTER_SPEC = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec",
                "workerGroupSpecs", "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions"}


def _zoomin_command(cmd: str) -> None:
    argv = shlex.split(cmd.replace("RUN_MONTH", "2026-11").replace("$(date -u +%Y-%m)", "2026-11"))
    assert argv[0] == "zoomin", cmd
    build_parser().parse_args(argv[1:])  # SystemExit on an unknown command or flag


def _check_rayjob(doc: dict) -> None:
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    _zoomin_command(spec["entrypoint"])
    rc = spec["rayClusterSpec"]
    assert set(rc) <= CLUSTER_SPEC, set(rc) - CLUSTER_SPEC
    assert rc["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    groups = rc["workerGroupSpecs"]
    for g in groups:
        assert {"groupName", "replicas", "minReplicas", "maxReplicas", "template"} <= set(g)
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        for c in g["template"]["spec"]["containers"]:
            assert c["resources"]["limits"] and c["image"]
            assert any("secretRef" in e for e in c.get("envFrom", [])), "S3 credentials from a Secret"
    gpus = [g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpus and len(gpus) < len(groups)  # a GPU group for the model and a CPU group for decoding


def test_rayjob_manifest():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / "rayjob-scan.yaml").read_text()))
    assert len(docs) == 1
    _check_rayjob(docs[0])


def test_nightly_cronjob_creates_a_dated_incremental_rayjob():
    docs = {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "kuberay" / "nightly-cronjob.yaml").read_text())}
    assert {"CronJob", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"} <= set(docs)
    cron = docs["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert "kubectl create" in " ".join(pod["containers"][0]["args"])
    rayjob = yaml.safe_load(docs["ConfigMap"]["data"]["rayjob.yaml"])
    _check_rayjob(rayjob)
    assert "--incremental" in rayjob["spec"]["entrypoint"] and "RUN_MONTH" in rayjob["spec"]["entrypoint"]
    assert any(r["resources"] == ["rayjobs"] and "create" in r["verbs"] for r in docs["Role"]["rules"])


def test_aws_launcher_config_matches_rays_schema():
    import ray.autoscaler
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / "aws" / "cluster.yaml").read_text())
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and types["head"]["resources"] == {"CPU": 0}
    assert "g" in types["gpu_worker"]["node_config"]["InstanceType"][0]
    assert types["gpu_worker"]["min_workers"] <= types["gpu_worker"]["max_workers"] <= cfg["max_workers"]
    for cmd in cfg["setup_commands"]:
        if cmd.startswith("zoomin"):
            assert cmd.split()[1] == "--help"
    header = (CLUSTER / "aws" / "cluster.yaml").read_text().splitlines()
    submits = [ln.split("#", 1)[1].strip() for ln in header if "zoomin submit" in ln]
    for s in submits:
        build_parser().parse_args(shlex.split(s)[1:])


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_dockerfile_installs_torch_first_and_everything_at_build_time(variant):
    text = (CLUSTER / "Dockerfile").read_text()
    assert "FROM base-${VARIANT}" in text and f"AS base-{variant}" in text
    torch_at = text.index("${TORCH_SPEC}")
    assert torch_at < text.index('pip install --no-cache-dir ".[ray,s3,vlm]"')
    assert "TORCH_SPEC=\"torch==2.13.0\"" in text


def test_readme_commands_are_real():
    for line in (CLUSTER / "README.md").read_text().splitlines():
        if line.startswith("zoomin submit"):
            argv = shlex.split(line)
            a = build_parser().parse_args(argv[1:])
            build_parser().parse_args(a.job[1:])
