"""Tiny stand-ins for the real stages, loaded by jobs through $WEBSSL_STAGE_IMPL.

The fake trainer mimics the real contract that the launch layer relies on: it resumes from its
newest checkpoint, checkpoints every step, writes status (samples seen / target) and exports a
final backbone whose bytes depend on every step taken, so an interrupted-and-resumed run ends
with the same bytes as an uninterrupted one only if the resume was exact.
Knobs (environment): FAKE_STEPS (default 3), FAKE_STEP_S (seconds per step, default 0),
FAKE_FAIL_MODEL (train of cells with that model raises), FAKE_RUN_LOG (a file every stage
invocation appends a line to, to count how often each stage ran).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from webssl_cli.rundir import CellDir, atomic_write_json, atomic_write_text


def _log_run(what: str) -> None:
    path = os.environ.get("FAKE_RUN_LOG")
    if path:
        with open(path, "a") as f:  # one short O_APPEND write per line: lines never interleave
            f.write(f"{what} {os.getpid()}\n")


def train_cell(cell_dir: Path) -> str:
    cd = CellDir(cell_dir)
    _log_run(f"{cd.uid}:train")
    spec = cd.read_spec()
    if spec["model"] == os.environ.get("FAKE_FAIL_MODEL"):
        raise ValueError(
            f"train.micro_batch: cannot split the batch for model {spec['model']} (fake failure)"
        )
    steps = int(os.environ.get("FAKE_STEPS", "3"))
    step_s = float(os.environ.get("FAKE_STEP_S", "0"))
    cd.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    ckpts = sorted(cd.checkpoints_dir.glob("step-*.json"))
    state = json.loads(ckpts[-1].read_text()) if ckpts else {"step": 0, "w": spec["uid"]}
    per_step = max(1, spec["samples_seen"] // steps)
    cd.update_stage(
        "train", samples_target=spec["samples_seen"], samples_seen=state["step"] * per_step
    )
    while state["step"] < steps:
        time.sleep(step_s)
        state = {
            "step": state["step"] + 1,
            "w": hashlib.sha256(f"{state['w']}:{state['step']}".encode()).hexdigest(),
        }
        atomic_write_json(cd.checkpoints_dir / f"step-{state['step']:06d}.json", state)
        with open(cd.metrics_jsonl, "a") as f:
            f.write(
                json.dumps(
                    {
                        "step": state["step"],
                        "samples_seen": state["step"] * per_step,
                        "time": time.time(),
                        "loss": 1.0 / state["step"],
                    }
                )
                + "\n"
            )
        cd.update_stage(
            "train",
            samples_seen=state["step"] * per_step,
            images_per_s=per_step / max(step_s, 1e-3),
            step=state["step"],
        )
    atomic_write_text(cd.backbone_export, state["w"])
    return "done"


def run_eval(cell_dir: Path, name: str) -> dict[str, Any]:
    cd = CellDir(cell_dir)
    _log_run(f"{cd.uid}:eval/{name}")
    weights = cd.backbone_export.read_text()
    result = {
        "task": name,
        "name": name,
        "cell": cd.uid,
        "results": [
            {
                "benchmark": "fake",
                "category": None,
                "metric": "top1",
                "value": int(weights[:4], 16) / 65535,
            }
        ],
    }
    atomic_write_json(cd.eval_json(name), result)
    return result


def run_filter_shards(
    source_pattern: str,
    filter: str,
    classifier: str,
    out_dir: Path,
    shard_ids: Any = None,
    vlm_path: Any = None,
) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _log_run(f"filter:{out.name}:{'all' if shard_ids is None else shard_ids}")
    if shard_ids is not None:
        for i in shard_ids:
            atomic_write_text(out / f"shard-{i}.done", "")
        return {"shards": list(shard_ids)}
    stats = {"kept": 1, "total": 2, "fraction": 0.5, "skipped": {}}
    atomic_write_json(out / "stats.json", stats)
    return stats


def list_shards(pattern: str) -> list[str]:
    return [f"{pattern}#{i}" for i in range(int(os.environ.get("FAKE_SHARDS", "2")))]
