"""`zoomin finetune DATASET --base CKPT --out CKPT_OUT`: supervised fine-tuning of both queries on
Ray Train's TorchTrainer (DDP; gloo on CPU workers, NCCL on GPUs).

Each worker loads the base checkpoint (fetched once per node, as for scans), builds the training
inputs of its share of the annotated examples (`zoomin_core.finetune`: the queries exactly as the
`vlm` backend asks them, only the answers learned) and trains LoRA adapters (peft) or, with
--full, every weight. Checkpoints (the trainable weights, the optimiser, the step) go to
--checkpoints every --checkpoint-every steps; the same command run again after a kill resumes
from the latest one. At the end the adapters are merged and rank 0 writes a checkpoint folder
`zoomin scan --backend vlm --model CKPT_OUT` loads, with the prompts it learned to answer.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .storage import StorageConfig, filesystem, is_remote, retrying

log = logging.getLogger(__name__)
STATE = "zoomin_state.json"
RECORD = "zoomin_finetune.json"


class FinetuneError(Exception):
    """A finetune that cannot start: said in one line before any worker is launched."""


@dataclass(frozen=True)
class FinetuneConfig:
    dataset: str                      # `zoomin annotate`'s output: Parquet files of Examples
    base: str                         # base checkpoint folder, local or s3://
    out: str                          # the fine-tuned checkpoint folder, local or s3://
    full: bool = False                # every weight (default: LoRA adapters, merged at the end)
    lora_rank: int = 16
    epochs: float = 3.0
    steps: Optional[int] = None       # optimiser steps; overrides --epochs
    lr: Optional[float] = None        # default: 2e-4 (LoRA) or 2e-5 (--full)
    warmup: float = 0.05              # share of the steps over which the rate rises; then a cosine fall to 0
    batch_size: int = 4               # queries per optimiser step per worker (accumulated)
    workers: int = 1
    gpus_per_worker: float = 0.0
    checkpoint_every: int = 50
    checkpoints: Optional[str] = None  # default: $ZOOMIN_CACHE/finetune
    max_tokens: int = 4096
    seed: int = 0
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def learning_rate(self) -> float:
        return self.lr or (2e-5 if self.full else 2e-4)

    def run_name(self) -> str:
        """The same command names the same run: its checkpoints are found again."""
        key = json.dumps([self.dataset, self.base, self.out, self.full, self.lora_rank, self.epochs, self.steps,
                          self.learning_rate, self.warmup, self.batch_size, self.workers, self.seed])
        return "finetune-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _examples(dataset: str, storage: StorageConfig) -> list[dict]:
    from .annotate import AnnotateError, read_dataset
    try:
        every = read_dataset(dataset, storage)
    except AnnotateError as e:
        raise FinetuneError(str(e)) from None
    rows = [r for r in every if r.get("status") == "ok"]
    if not rows:
        counts = Counter(r.get("status") for r in every)
        raise FinetuneError(f"{dataset}: none of its examples is usable ("
                            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                            + "; `dropped` rows are the teacher's answers its filters refused: see summary.json)")
    return rows


def _read(uri: str, storage: StorageConfig) -> bytes:
    fs, path = filesystem(uri, storage)
    return retrying(lambda: fs.cat_file(path), storage)


def _worker(c: dict) -> None:
    """The training loop of one Ray Train worker."""
    import random

    import ray.train
    import ray.train.torch
    import torch

    from zoomin_core.annotate import Example
    from zoomin_core.backends.vlm import VLMBackend
    from zoomin_core.finetune import ExampleError, queries

    from .models import fetch_model
    cfg = FinetuneConfig(**{**c["cfg"], "storage": StorageConfig(**c["cfg"]["storage"])})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    base = fetch_model(cfg.base, cfg.storage)[0]
    backend = VLMBackend(base, device=str(device), dtype="bfloat16" if device.type == "cuda" else "float32",
                         prompts=c.get("prompts"))
    # this worker's share of the examples; each becomes two queries (scan, zoom)
    mine, skipped = [], 0
    for row in c["rows"][rank::world]:
        ex = Example(**{k: (tuple(tuple(b) for b in v) if k in ("true_boxes", "boxes") else v)
                        for k, v in row.items() if k in Example.__dataclass_fields__})
        try:
            mine += queries(backend, ex, _read(ex.uri, cfg.storage), max_tokens=cfg.max_tokens)
        except (ExampleError, OSError) as e:
            skipped += 1
            log.warning("skipped %s: %s", ex.uri, e)
    if not mine:
        raise RuntimeError(f"worker {rank}: none of its {len(c['rows'][rank::world])} examples could be used")
    model = backend.model
    if not cfg.full:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank,
                                                 target_modules="all-linear", lora_dropout=0.0))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    step = 0
    # this run's own latest checkpoint (Ray Train hands it back after a worker failure), else
    # the one an earlier, killed run of the same command left
    # (Ray's own record can lag the folders: a Ctrl-C during the report of a checkpoint left it
    # on disk, whole, but unregistered. The later of the two wins.)
    ckpt = ray.train.get_checkpoint()
    if c.get("resume") and _step_of(c["resume"]) > (_step_of(ckpt.path) if ckpt else -1):
        ckpt = ray.train.Checkpoint.from_directory(c["resume"])
    if ckpt:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "trainable.pt", map_location=device)
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in state:
                        p.copy_(state[n])
            opt.load_state_dict(torch.load(Path(d) / "optimizer.pt", map_location=device))
            step = json.loads((Path(d) / STATE).read_text())["step"]
            print(f"zoomin finetune: worker {rank} resumed at step {step} of {c['cfg']['steps'] or 'the epochs'} "
                  f"({len(names)} trainable tensors)", flush=True)
    ddp = ray.train.torch.prepare_model(model)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * c["n_queries"] / (world * cfg.batch_size)))
    order = random.Random(f"{cfg.seed}-{rank}-{step}")   # a resumed run draws on, not the same queries again
    ddp.train()
    every, t0, first = max(1, total // 20), time.monotonic(), step   # progress: about 20 lines a run
    while step < total:
        for group in opt.param_groups:
            group["lr"] = rate(step, total, cfg.learning_rate, cfg.warmup)
        opt.zero_grad()
        loss_sum = 0.0
        for _ in range(cfg.batch_size):
            q = mine[order.randrange(len(mine))]
            inputs = {k: v.to(device) for k, v in q.inputs.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(backend.dtype)
            loss = ddp(**inputs, labels=q.labels.to(device)).loss / cfg.batch_size
            loss.backward()
            loss_sum += float(loss.detach())
        opt.step()
        step += 1
        last = step == total
        metrics = {"step": step, "loss": loss_sum, "lr": opt.param_groups[0]["lr"], "of": total, "skipped": skipped,
                   "steps_per_s": (step - first) / (time.monotonic() - t0)}
        if rank == 0 and (step % every == 0 or last):
            print(f"zoomin finetune: step {step}/{total}  loss {loss_sum:.4f}  lr {metrics['lr']:.2e}  "
                  f"{metrics['steps_per_s']:.2f} steps/s", flush=True)
        if step % cfg.checkpoint_every and not last:
            if step % 10 == 0:   # Ray Train logs every report: every 10 steps is enough to follow
                ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                torch.save({n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
                           Path(d) / "trainable.pt")
                torch.save(opt.state_dict(), Path(d) / "optimizer.pt")
                (Path(d) / STATE).write_text(json.dumps({"step": step, "of": total}))
                if last:   # the merged model, as the final checkpoint's contents
                    final = model.merge_and_unload() if not cfg.full else model
                    final.save_pretrained(Path(d) / "model", safe_serialization=True)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)


def rate(step: int, total: int, peak: float, warmup: float) -> float:
    """The learning rate of optimiser step `step` (0-based): a linear rise over the warm-up, then a cosine
    fall to 0 at the last step. A function of the step alone, so a resumed run goes on where it was."""
    warm = int(warmup * total)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _step_of(folder: str) -> int:
    """The step of a whole checkpoint folder; -1 when it is not one (or not whole)."""
    d = Path(folder)
    try:
        if not all((d / f).is_file() and (d / f).stat().st_size for f in ("trainable.pt", "optimizer.pt")):
            return -1
        return int(json.loads((d / STATE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def _latest(storage_path: str, name: str):
    """The folder of the latest checkpoint an earlier run of this command left (None: start afresh)."""
    root = Path(storage_path) / name
    found = [(_step_of(str(d)), str(d)) for d in (root.glob("checkpoint_*") if root.is_dir() else [])]
    found = [f for f in found if f[0] >= 0]
    return max(found)[1] if found else None


def finetune(cfg: FinetuneConfig, prompts: Optional[str] = None, address: Optional[str] = None) -> dict:
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from zoomin_core.backends.vlm import PROMPTS_IN_CHECKPOINT, load_prompts

    from .models import check_model_for
    rows = _examples(cfg.dataset, cfg.storage)
    check_model_for("--base", cfg.base, cfg.storage)
    prompt_doc = load_prompts(prompts)
    if not cfg.full:
        import importlib.util
        if importlib.util.find_spec("peft") is None:
            raise FinetuneError("LoRA needs peft (the finetune extra): bash scripts/setup.sh ray,finetune, or --full")
    if not is_remote(cfg.out) and Path(cfg.out).exists() and any(Path(cfg.out).iterdir()) \
            and not (Path(cfg.out) / RECORD).exists():
        raise FinetuneError(f"--out {cfg.out}: a folder with other files in it; give a new folder (an earlier "
                            "`zoomin finetune` output is replaced)")
    storage_path = cfg.checkpoints or str(Path(os.environ.get("ZOOMIN_CACHE", Path.home() / ".cache" / "zoomin"))
                                          / "finetune")
    if is_remote(storage_path):
        raise FinetuneError("--checkpoints must be a local or shared folder")
    name = cfg.run_name()
    resume = _latest(storage_path, name)
    if not ray.is_initialized():   # a cluster of its own unless --address names one (as `zoomin scan`)
        ray.init(address=address or "local", include_dashboard=False)
    state = asdict(cfg)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"cfg": state, "rows": rows, "n_queries": 2 * len(rows), "prompts": prompts,
                           "resume": resume},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.gpus_per_worker > 0,
                                     resources_per_worker={"CPU": 1, **({"GPU": cfg.gpus_per_worker}
                                                                         if cfg.gpus_per_worker else {})}),
        torch_config=TorchConfig(backend="nccl" if cfg.gpus_per_worker > 0 else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    result = trainer.fit()
    if result.error:
        raise FinetuneError(f"training failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        model_dir = Path(d) / "model"
        if not model_dir.is_dir():
            raise FinetuneError("training ended without writing the model")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ckpt"
            shutil.copytree(model_dir, out)
            base = Path(_local_base(cfg))
            for f in base.iterdir():   # processor, tokenizer and chat template: the base's own
                if f.is_file() and not f.name.endswith(".safetensors") and f.name not in (
                        "config.json", "generation_config.json", "model.safetensors.index.json") \
                        and not (out / f.name).exists():
                    shutil.copy2(f, out / f.name)
            (out / PROMPTS_IN_CHECKPOINT).write_text(json.dumps(prompt_doc, indent=1))
            record = {"base": cfg.base, "dataset": cfg.dataset, "examples": len(rows), "prompts": prompt_doc["version"],
                      "mode": "full" if cfg.full else f"lora r{cfg.lora_rank} (merged)",
                      "steps": json.loads((Path(d) / STATE).read_text())["step"], "lr": cfg.learning_rate, "warmup": cfg.warmup,
                      "batch_size": cfg.batch_size, "workers": cfg.workers, "loss": result.metrics.get("loss"),
                      "steps_per_s": result.metrics.get("steps_per_s")}
            (out / RECORD).write_text(json.dumps(record, indent=1))
            _publish(out, cfg.out, cfg.storage)
    return record


def _local_base(cfg: FinetuneConfig) -> str:
    from .models import fetch_model
    return fetch_model(cfg.base, cfg.storage)[0]


def _publish(folder: Path, out: str, storage: StorageConfig) -> None:
    """Copy the finished checkpoint to --out (local or object storage)."""
    if not is_remote(out):
        dst = Path(out)
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(folder, dst)
        return
    fs, path = filesystem(out, storage)
    for f in folder.iterdir():
        retrying(lambda f=f: fs.put_file(str(f), f"{path.rstrip('/')}/{f.name}"), storage)
