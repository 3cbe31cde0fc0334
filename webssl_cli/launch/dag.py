"""The stage DAG of a study: filter jobs -> a training job per cell -> an eval job per cell and task;
an adaptation cell's training job also depends on its base cell's training job.

Each node knows where its status lives, what it depends on, and how to build its submitit
callables. On SLURM the edges become ``afterok`` dependencies and a filter over many shards
becomes job arrays (throttled, split at the cluster's MaxArraySize) followed by a merge job;
the local runner walks the same edges itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.launch.jobs import EvalJob, FilterJob, TrainJob
from webssl_cli.rundir import CellDir


@dataclass
class Node:
    key: str  # "filter:<key>", "<uid>:train", "<uid>:eval/<name>"
    kind: str  # filter | train | eval
    status_dir: Path  # the directory whose status.json holds this stage
    stage: str  # the stage name in that status.json
    deps: list[str] = field(default_factory=list)
    cell: str | None = None
    model: str | None = None
    eval_name: str | None = None
    filter_args: dict[str, Any] = field(default_factory=dict)
    placement: str | None = None  # a VQA evaluation's placement (its job's ranks); else None

    @property
    def job_name(self) -> str:
        if self.kind == "filter":
            return f"webssl-filter-{self.status_dir.name}"[:120]
        return f"webssl-{self.cell}-{self.stage.replace('/', '-')}"

    def outputs_present(self) -> bool:
        """A stage recorded done whose outputs were deleted must run again."""
        if self.kind == "train":
            cd = CellDir(self.status_dir)
            return cd.train_dir.is_dir() and (
                cd.backbone_export.exists()
                or any(cd.checkpoints_dir.glob("*"))
                or cd.metrics_jsonl.exists()
            )
        if self.kind == "eval":
            assert self.eval_name is not None
            return CellDir(self.status_dir).eval_json(self.eval_name).exists()
        return (self.status_dir / "stats.json").exists() or (
            self.status_dir / "keep.parquet"
        ).exists()

    def spec_hash(self) -> str:
        """Hash of what this stage reads (cell.json or the filter's settings): a failed stage
        whose inputs were edited gets a fresh set of attempts."""
        import hashlib
        import json

        if self.kind == "filter":
            text = json.dumps(self.filter_args, sort_keys=True)
        else:
            try:
                text = CellDir(self.status_dir).cell_json.read_text(encoding="utf-8")
            except OSError:
                text = ""
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def callable(self, shard_ids: list[int] | None = None) -> Any:
        if self.kind == "train":
            return TrainJob(str(self.status_dir))
        if self.kind == "eval":
            assert self.eval_name is not None
            return EvalJob(str(self.status_dir), self.eval_name)
        return FilterJob(out_dir=str(self.status_dir), shard_ids=shard_ids, **self.filter_args)

    def clear_outputs(self) -> None:
        """For --force: remove what a finished stage produced, so that it runs from scratch."""
        import shutil

        if self.kind == "train":
            shutil.rmtree(CellDir(self.status_dir).train_dir, ignore_errors=True)
        elif self.kind == "eval":
            assert self.eval_name is not None
            CellDir(self.status_dir).eval_json(self.eval_name).unlink(missing_ok=True)
        else:
            for p in self.status_dir.glob("*"):
                if p.name not in ("status.json", "status.json.bak", ".status.lock"):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(
                        missing_ok=True
                    )


def build_dag(loaded: Any) -> list[Node]:
    """Nodes in topological order (filters, then per cell: train, evals)."""
    nodes: list[Node] = []
    for key, job in loaded.filters.items():
        nodes.append(
            Node(
                key=f"filter:{key}",
                kind="filter",
                status_dir=Path(job.out_dir),
                stage="filter",
                filter_args={
                    "source_pattern": job.source_pattern,
                    "filter": job.filter,
                    "classifier": job.classifier,
                    "vlm_path": job.vlm_path,
                },
            )
        )
    # Adaptation cells (resolution above the base's) after every base cell: their training
    # continues from the base cell's final checkpoint (afterok on SLURM, after it locally).
    ordered = [c for c in loaded.cells if not getattr(c, "adapt", None)]
    ordered += [c for c in loaded.cells if getattr(c, "adapt", None)]
    for cell in ordered:
        cdir = CellDir.of(loaded.output_dir, cell.uid).root
        fjob = loaded.filter_for(cell)
        deps = [f"filter:{fjob.key}"] if fjob is not None else []
        if getattr(cell, "adapt", None):
            deps.append(f"{cell.adapt['from']}:train")
        train = Node(f"{cell.uid}:train", "train", cdir, "train", deps, cell.uid, cell.model)
        nodes.append(train)
        for ev in cell.spec.evals:
            name = ev.stage_name
            nodes.append(
                Node(
                    f"{cell.uid}:eval/{name}",
                    "eval",
                    cdir,
                    f"eval/{name}",
                    [train.key],
                    cell.uid,
                    cell.model,
                    name,
                    placement=getattr(ev, "placement", None),
                )
            )
    return nodes


def shard_groups(n_shards: int, per_task: int) -> list[list[int]]:
    """Shard ids split into array tasks of at most ``per_task`` shards each."""
    per_task = max(1, per_task)
    return [list(range(i, min(n_shards, i + per_task))) for i in range(0, n_shards, per_task)]


def array_chunks(n_tasks: int, max_array_size: int) -> list[range]:
    """Task indices split into arrays no larger than the cluster's MaxArraySize."""
    size = max(1, max_array_size)
    return [range(i, min(n_tasks, i + size)) for i in range(0, n_tasks, size)]
