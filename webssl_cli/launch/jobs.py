"""The callables submitit runs: one filter task, the training of a cell, one evaluation.

Each job reads its inputs from the run directory and records its state in the status file of
that directory (``running`` at start; ``done`` / ``diverged`` / ``failed`` with the one-line
error at the end). The stage implementations import torch inside; this module does not.

Preemption and timeouts: SLURM sends USR2 to every task before the time limit (and
``scancel --signal=USR2`` does the same by hand). In its step loop the trainer saves on every
rank at the next step boundary (``train.loop``); then, on rank 0, submitit calls
``checkpoint()`` of the ``Checkpointable`` job, which returns the ``DelayedSubmission`` to run
again, and requeues the job under the same id. The trainer resumes
exactly from its newest checkpoint, so the requeued job continues the same run (and, thanks to
its periodic checkpoints, a SIGTERM or a lost node loses at most one interval).
``checkpoint()`` may run inside a signal handler, perhaps while the trainer holds the status
lock: it writes a marker file, never status.json; the next attempt turns it into status.

Seam for tests: ``$WEBSSL_STAGE_IMPL`` may name a Python file defining ``train_cell``,
``run_eval`` and/or ``run_filter_shards`` with the real signatures; those replace the real
stages (in the submitting process and in jobs, which inherit the environment).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import submitit

from webssl_cli.rundir import CellDir, atomic_write_json, now_iso, read_json

STAGE_IMPL_ENV = "WEBSSL_STAGE_IMPL"
PREEMPTED = "preempted"  # what the trainer returns after a checkpoint on request (USR2)
_REAL = {
    "train_cell": "webssl_cli.train.loop",
    "run_eval": "webssl_cli.eval.run",
    "run_filter_shards": "webssl_cli.data.filtering",
    "list_shards": "webssl_cli.data.shards",
}


def _load_file(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("webssl_stage_impl", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{STAGE_IMPL_ENV}={path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_impl(name: str) -> Callable[..., Any]:
    """The implementation of stage function ``name``: the test seam if it defines it, else the real one."""
    override = os.environ.get(STAGE_IMPL_ENV)
    if override:
        module = _load_file(override)
        if hasattr(module, name):
            fn: Callable[..., Any] = getattr(module, name)
            return fn
    fn = getattr(importlib.import_module(_REAL[name]), name)
    return fn


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the first non-empty line of the message)."""
    msg = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text[:500]


def _job_context() -> dict[str, Any]:
    try:
        env = submitit.JobEnvironment()
        return {"job_id": env.job_id, "rank": env.global_rank}
    except RuntimeError:  # not inside a submitit job (called directly)
        return {"job_id": None, "rank": 0}


def _requeue_marker(cell_dir: CellDir, stage: str) -> Path:
    return cell_dir.logs_dir / f"{stage.replace('/', '-')}.requeued.json"


def run_stage(status_dir: Path, stage: str, body: Callable[[], Any]) -> Any:
    """Run ``body`` as ``stage`` of ``status_dir``, recording running / done / failed.

    Only rank 0 writes status; every rank runs ``body`` (torch.distributed needs all of them).
    """
    cd = CellDir(status_dir)
    ctx = _job_context()
    lead = ctx["rank"] == 0
    if lead:
        fields: dict[str, Any] = {
            "state": "running",
            "started": now_iso(),
            "host": socket.gethostname(),
            "error": None,
        }
        marker = _requeue_marker(cd, stage)
        if marker.exists():  # this attempt follows a preemption/timeout requeue
            with contextlib.suppress(OSError, ValueError):
                fields["requeues"] = int(read_json(marker).get("requeues", 0))
        cd.update_stage(stage, **fields)
    t0 = time.time()
    try:
        result = body()
    except BaseException as exc:
        if lead:
            marker = _requeue_marker(cd, stage)
            if isinstance(exc, SystemExit) and marker.exists() and marker.stat().st_mtime >= t0 - 1:
                # submitit's USR2 handler checkpointed and requeued the job, then exited: the
                # stage goes on in the next attempt (a trainer that records every exception
                # as `failed` must not make it look finished).
                cd.update_stage(
                    stage,
                    state="queued",
                    error=None,
                    note="requeued after USR2 (preemption or time limit)",
                )
            elif (
                isinstance(exc, KeyboardInterrupt)
                or cd.stage_status(stage).get("state") == "cancelled"
            ):
                # SIGINT is how a local job is cancelled; `study cancel` already said so.
                cd.update_stage(stage, state="cancelled", ended=now_iso())
            else:
                cd.update_stage(stage, state="failed", error=error_line(exc), ended=now_iso())
                _append_log(cd, stage, traceback.format_exc())
        raise
    if lead:
        state = result if result in ("done", "diverged") else "done"
        current = cd.stage_status(stage)
        # The trainer may have written its own final fields (diverged_at, ...): keep them.
        cd.update_stage(
            stage,
            state=current.get("state") if current.get("state") == "diverged" else state,
            ended=now_iso(),
        )
        _requeue_marker(cd, stage).unlink(missing_ok=True)
    return result


def _append_log(cd: CellDir, stage: str, text: str) -> None:
    try:
        cd.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(cd.logs_dir / f"{stage.replace('/', '-')}.error.log", "a", encoding="utf-8") as f:
            f.write(f"--- {now_iso()}\n{text}\n")
    except OSError:
        pass


class TrainJob(submitit.helpers.Checkpointable):
    """Train one cell; on USR2 (preemption, time limit) checkpoint and requeue itself.

    Every task of the job runs this (one per rank). While the trainer is in its step loop, it
    handles USR2 itself: every rank saves at the next step boundary (the ranks agree on the
    step with an all-reduce; a distributed checkpoint needs all of them), then hands the signal
    to submitit's handler, which on rank 0 calls ``checkpoint`` below and requeues the job once.
    A trainer that returns "preempted" without that hand-over (it could not install a signal
    handler) is requeued here, once, from rank 0; other ranks then leave. Outside the step
    loop USR2 goes straight to submitit: requeue at once, resume from the newest checkpoint.
    """

    def __init__(self, cell_dir: str) -> None:
        self.cell_dir = str(cell_dir)

    def __call__(self) -> str:
        train_cell = stage_impl("train_cell")
        cell = Path(self.cell_dir)
        submitit_usr2 = signal.getsignal(signal.SIGUSR2)

        def body() -> str:
            result: str = train_cell(cell)
            if result == PREEMPTED:
                _requeue_once(submitit_usr2)
            return result

        result: str = run_stage(cell, "train", body)
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # Called by submitit on rank 0 just before it requeues the job: count the requeue.
        # Maybe inside a signal handler while the trainer holds the status lock: a marker
        # file, never status.json.
        marker = _requeue_marker(CellDir(self.cell_dir), "train")
        try:
            count = int(read_json(marker).get("requeues", 0)) if marker.exists() else 0
            atomic_write_json(marker, {"requeues": count + 1, "at": now_iso()})
        except (OSError, ValueError):
            pass
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _requeue_once(submitit_usr2: Any) -> None:
    """After the trainer checkpointed on every rank and returned "preempted": rank 0 runs
    submitit's USR2 handler (``checkpoint()``, requeue under the same job id, exit); the other
    ranks leave, and the requeue ends the job."""
    if _job_context()["rank"] != 0:
        sys.exit(0)
    if not callable(submitit_usr2):
        raise RuntimeError(
            "training stopped on a checkpoint request, but outside a submitit job nothing "
            "requeues it; run the stage again to resume"
        )
    submitit_usr2(signal.SIGUSR2, None)  # exits (SystemExit) once the job is requeued
    raise RuntimeError("submitit did not requeue the job after the preemption checkpoint")


class EvalJob(submitit.helpers.Checkpointable):
    """One evaluation of one cell, run by every task of the job (a VQA evaluation spreads over
    them; a probe runs on rank 0). Requeued when preempted: the rerun starts the stage again,
    and a VQA evaluation resumes from what its cache holds (features, the checkpoint of the
    stage under way, the answers written)."""

    def __init__(self, cell_dir: str, name: str) -> None:
        self.cell_dir = str(cell_dir)
        self.name = name

    def __call__(self) -> dict[str, Any]:
        run_eval = stage_impl("run_eval")
        result: dict[str, Any] = run_stage(
            Path(self.cell_dir),
            f"eval/{self.name}",
            lambda: run_eval(Path(self.cell_dir), self.name),
        )
        return result


class FilterJob(submitit.helpers.Checkpointable):
    """Filter a group of shards of one source (``shard_ids=None``: all, and merge the outputs).

    Status lives in ``<study>/filters/<key>/status.json`` under stage ``filter``; array tasks
    (a group each) record only failures, the final (merging) task records done.
    """

    def __init__(
        self,
        out_dir: str,
        source_pattern: str,
        filter: str,
        classifier: str,
        shard_ids: list[int] | None = None,
        vlm_path: str | None = None,
    ) -> None:
        self.out_dir = str(out_dir)
        self.source_pattern = source_pattern
        self.filter = filter
        self.classifier = classifier
        self.shard_ids = shard_ids
        self.vlm_path = vlm_path

    def _body(self) -> dict[str, Any]:
        run_filter_shards = stage_impl("run_filter_shards")
        result: dict[str, Any] = run_filter_shards(
            self.source_pattern,
            self.filter,
            self.classifier,
            Path(self.out_dir),
            shard_ids=self.shard_ids,
            vlm_path=self.vlm_path,
        )
        return result

    def __call__(self) -> dict[str, Any]:
        if self.shard_ids is None:
            result: dict[str, Any] = run_stage(Path(self.out_dir), "filter", self._body)
            return result
        try:
            return self._body()
        except Exception as exc:
            CellDir(self.out_dir).update_stage(
                "filter", state="failed", error=error_line(exc), ended=now_iso()
            )
            raise
