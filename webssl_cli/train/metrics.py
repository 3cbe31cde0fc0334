"""What a training run writes besides checkpoints: metrics.jsonl, the train stage's status and
the exported teacher backbone. Only rank 0 writes; the other ranks' ``RunLog`` is silent.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from webssl_cli.rundir import CellDir, atomic_write_bytes, atomic_write_text, now_iso
from webssl_cli.specs.registry import ModelSpec

Progress = Callable[[dict[str, Any]], None]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(ln).get("step", 0) <= last_step:
                kept.append(ln)
        except ValueError:  # a line cut by a kill mid-write
            continue
    atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def write_backbone(path: Path, spec: ModelSpec, state: dict[str, torch.Tensor]) -> None:
    """train/teacher_backbone.pt: {"model", "spec", "state_dict"} (what evaluation loads)."""
    state = {k: v.detach().cpu() for k, v in state.items()}
    buf = io.BytesIO()
    torch.save({"model": spec.name, "spec": dataclasses.asdict(spec), "state_dict": state}, buf)
    atomic_write_bytes(path, buf.getvalue())


class RunLog:
    """metrics.jsonl lines every ``every`` steps (with images/s since the last line), the
    progress callback every step, and the train stage's status."""

    def __init__(self, run: CellDir, batch_size: int, iterations: int, every: int,
                 main: bool, progress: Progress | None) -> None:  # fmt: skip
        self.run, self.batch, self.iterations, self.every = run, batch_size, iterations, every
        self.main, self.progress = main, progress if main else None
        self.last: dict[str, Any] = {}
        self._file: Any = None
        self._t, self._n = time.perf_counter(), 0

    def status(self, **fields: Any) -> None:
        if self.main:
            self.run.update_stage("train", **fields)

    def start(self, step: int, **fields: Any) -> None:
        """Truncate metrics.jsonl to ``step`` (the resumed checkpoint's) and open it."""
        if self.main:
            truncate_metrics(self.run.metrics_jsonl, step)
            self.run.train_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.run.metrics_jsonl, "a", encoding="utf-8")  # noqa: SIM115
        self.status(state="running", samples_target=self.iterations * self.batch,
                    iterations=self.iterations, step=step, samples_seen=step * self.batch,
                    host=socket.gethostname(), started=now_iso(), **fields)  # fmt: skip
        self._t, self._n = time.perf_counter(), 0

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.iterations

    def step(self, step: int, metrics: dict[str, Any], extra: Callable[[], dict[str, Any]]) -> None:
        """After step ``step``: ``extra()`` (collective: every rank calls it on a due step) adds
        rarely computed fields to the line."""
        self._n += self.batch
        if self.due(step):
            now = time.perf_counter()
            metrics["images_per_s"] = self._n / max(now - self._t, 1e-9)
            self._t, self._n = now, 0
            self.last = {"step": step, "samples_seen": step * self.batch, "time": time.time(),
                         **metrics, **extra()}  # fmt: skip
            if self._file is not None:
                self._file.write(json.dumps(self.last) + "\n")
                self._file.flush()
        if self.progress is not None:
            self.progress({"step": step, "iterations": self.iterations,
                           "samples_seen": step * self.batch, **metrics})  # fmt: skip

    def checkpointed(self, step: int) -> None:
        self.status(step=step, samples_seen=step * self.batch,
                    images_per_s=self.last.get("images_per_s"))  # fmt: skip

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
