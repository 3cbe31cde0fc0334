"""The three ways a job runs: ``local`` (default), ``slurm`` and ``debug``, all through submitit.

- ``local``: submitit's LocalExecutor, one process per job on this machine; the runner keeps
  at most ``max_parallel`` of them running and submits a stage once its inputs are done
  (LocalExecutor has no dependencies of its own).
- ``slurm``: submitit's SlurmExecutor; the DAG is expressed with ``afterok`` dependencies and
  arrays, so ``study run`` submits everything and returns.
- ``debug``: in-process, in order, for tracebacks (submitit's DebugExecutor without the
  ``pdb.post_mortem()`` it would open on an exception).

This module turns a profile's resources into submitit parameters (``slurm_parameters`` is what
the golden-file tests pin down) and builds executors. It imports no torch.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError
from submitit.local.debug import DebugExecutor, DebugJob

from webssl_cli.errors import UserError
from webssl_cli.launch.profiles import Profile, Resources, check_safe

STAGE_KINDS = ("filter", "train", "eval")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
_DEPENDENCY = re.compile(
    r"^(afterok|afterany|afternotok)(:[0-9_]+)+(,(afterok|afterany|afternotok)(:[0-9_]+)+)*$"
)


def stage_resources(
    profile: Profile, kind: str, model: str | None = None, placement: str | None = None
) -> Resources:
    """A job's resources; for an evaluation, ``placement`` is its VQA placement (None: a
    probe), which decides whether it runs the profile's tasks or one."""
    if kind == "train":
        return profile.train_resources(model or "default")
    if kind == "filter":
        return profile.filter
    if kind == "eval":
        return profile.eval_resources(placement)
    raise ValueError(f"unknown stage kind {kind!r}")


def slurm_parameters(
    profile: Profile,
    kind: str,
    model: str | None = None,
    job_name: str = "webssl",
    dependency: str | None = None,
    placement: str | None = None,
) -> dict[str, Any]:
    """submitit SlurmExecutor parameters of one job of ``kind`` (filter | train | eval).

    One task per GPU (torch.distributed ranks come from SLURM_PROCID), one task when the job
    has no GPU, or the profile's ``tasks_per_node`` (CPU ranks); an evaluation runs them when
    its VQA ``placement`` spreads, else one (``Profile.eval_resources``). Values are checked
    against shell metacharacters here and quoted by submitit.
    """
    res = stage_resources(profile, kind, model, placement)
    check_safe(job_name, "job name")
    tasks = res.tasks
    params: dict[str, Any] = {
        "job_name": job_name,
        "nodes": res.nodes,
        "ntasks_per_node": tasks,
        "cpus_per_task": res.cpus_per_task,
        "time": res.time_min,
        "signal_delay_s": min(profile.signal_delay_s, max(10, res.time_min * 60 // 4)),
        "array_parallelism": profile.array_throttle,
        "stderr_to_stdout": True,
        "wckey": "webssl",
    }
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.mem_gb is not None:
        params["mem"] = (
            f"{int(res.mem_gb)}GB"
            if res.mem_gb == int(res.mem_gb)
            else f"{int(res.mem_gb * 1024)}MB"
        )
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(profile, key)
        if value is not None:
            params[key] = value
    additional: dict[str, Any] = {}
    if dependency:
        check_safe(dependency, "dependency", _DEPENDENCY)
        params["dependency"] = dependency
        # A dependent job whose input failed is cancelled rather than left pending forever.
        additional["kill-on-invalid-dep"] = "yes"
    if kind == "train":
        # A requeued job keeps its id, its dependents and its log (submitit appends).
        additional["requeue"] = True
    for line in profile.sbatch_extra:
        key, _, value = line[2:].partition("=")
        additional[key] = value if value else True
    if additional:
        params["additional_parameters"] = additional
    if profile.setup:
        params["setup"] = list(profile.setup)
    return params


def sbatch_text(
    params: dict[str, Any], folder: str = "<folder>", command: str = "<command>"
) -> str:
    """The sbatch file submitit would write for ``params`` (for golden files and `--dry-run`)."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=command, folder=folder, **params)


def local_gpus() -> int:
    """GPUs visible on this machine (nvidia-smi, with a timeout); 0 when there is none."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def check_local_resources(profile: Profile, models: list[str]) -> None:
    """A local run cannot use more GPUs than this machine has: say so before submitting."""
    have = local_gpus()
    for model in sorted(set(models)):
        res = profile.train_resources(model)
        need = res.gpus_per_node * res.nodes
        if need > have or res.nodes > 1:
            raise UserError(
                f"profile {profile.name!r}: training {model} asks for {res.nodes} node(s) x "
                f"{res.gpus_per_node} GPU(s) but the local executor has one node with {have} GPU(s); "
                f"use --executor slurm or a profile that fits this machine"
            )


def slurm_available(timeout_s: float = 5.0) -> bool:
    """`scontrol ping` answers UP within the timeout."""
    if shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "UP" in out.stdout


class QuietDebugJob(DebugJob):  # type: ignore[type-arg]
    """DebugJob that raises instead of opening ``pdb.post_mortem()`` (tests, scripts, CI)."""

    def results(self) -> list[Any]:
        self._check_not_cancelled()
        if self._submission.done():
            return [self._submission._result]
        return [self._submission.result()]


class QuietDebugExecutor(DebugExecutor):
    job_class = QuietDebugJob

    def _internal_process_submissions(self, delayed_submissions: list[Any]) -> list[Any]:
        return [QuietDebugJob(self.folder, ds) for ds in delayed_submissions]


def make_executor(
    name: str,
    folder: Path,
    profile: Profile,
    kind: str,
    model: str | None = None,
    job_name: str = "webssl",
    dependency: str | None = None,
    placement: str | None = None,
) -> submitit.Executor:
    """An executor for one job (or one array) of ``kind`` on ``name`` (local | slurm | debug);
    ``placement``: an evaluation's VQA placement (``stage_resources``)."""
    folder.mkdir(parents=True, exist_ok=True)
    res = stage_resources(profile, kind, model, placement)
    if name == "debug":
        return QuietDebugExecutor(folder)
    if name == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=profile.max_timeouts)
        # No time limit on this machine: a local job runs until it is done (a week is the
        # controller's bound). USR2 sent to the job still checkpoints and requeues it.
        # Training and a spreading VQA evaluation run one process per rank, as on SLURM
        # (ranks from SUBMITIT_LOCAL_*).
        ex.update_parameters(
            timeout_min=LOCAL_TIMEOUT_MIN,
            gpus_per_node=res.gpus_per_node,
            tasks_per_node=res.tasks if kind in ("train", "eval") else 1,
            signal_delay_s=60,
        )
        return ex
    if name == "slurm":
        sex = submitit.SlurmExecutor(
            folder, max_num_timeout=profile.max_timeouts, python=profile.python
        )
        sex.update_parameters(
            **slurm_parameters(profile, kind, model, job_name, dependency, placement)
        )
        return sex
    raise UserError(f"--executor: unknown executor {name!r}; valid: local, slurm, debug")


def job_failed_error(job: Any) -> str | None:
    """The one-line reason a finished submitit job failed, or None (never blocks on SLURM)."""
    try:
        exc = job.exception()
    except UncompletedJobError as e:
        return str(e).splitlines()[0] if str(e) else "job did not complete"
    except Exception as e:  # a job whose pickle vanished, ...
        return f"{type(e).__name__}: {e}".splitlines()[0]
    if exc is None:
        return None
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


@contextlib.contextmanager
def submission_env(code_dir: Path | None) -> Iterator[None]:
    """Submit from a clean environment: no SLURM_*/SUBMITIT_* variables of an enclosing job
    (a nested sbatch would inherit its allocation), cwd and PYTHONPATH on the code snapshot so
    that jobs import the snapshot, not the working tree (``python -m`` puts cwd first)."""
    saved = dict(os.environ)
    cwd = os.getcwd()
    try:
        for key in list(os.environ):
            if key.startswith(("SLURM_", "SLURMD_", "SBATCH_", "SRUN_", "SUBMITIT_")):
                del os.environ[key]
        if code_dir is not None:
            old = saved.get("PYTHONPATH", "")
            os.environ["PYTHONPATH"] = str(code_dir) + (os.pathsep + old if old else "")
            os.environ["WEBSSL_CODE_SNAPSHOT"] = str(code_dir)
            os.chdir(code_dir)
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
