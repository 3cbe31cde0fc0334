"""`study run --dry-run`: the DAG and, for SLURM, the sbatch scripts, with nothing submitted.

Reads status files and nothing else: no cell, lock, pid file or code snapshot is written, so a
dry run is safe next to a run in progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webssl_cli.launch.dag import build_dag
from webssl_cli.launch.executors import sbatch_text, slurm_parameters
from webssl_cli.launch.selection import select_nodes
from webssl_cli.rundir import CellDir


def dry_run(
    loaded: Any, profile: Any, executor: str, opts: Any, echo: Callable[[str], None]
) -> int:
    """Print every stage (state, inputs, whether a run would submit it) and, for SLURM, the
    sbatch script of each stage it would submit. Returns how many stages it would submit."""
    nodes = build_dag(loaded)
    selected = select_nodes(loaded, nodes, opts.only)
    echo(
        f"dry run ({executor}, profile {profile.name}): {len(nodes)} stage(s); nothing is submitted"
    )
    todo = []
    for node in nodes:
        entry = CellDir(node.status_dir).stage_status_or_corrupt(node.stage)
        state = str(entry.get("state", "pending"))
        if node.key not in selected:
            plan = "not selected"
        elif state in ("done", "diverged") and node.outputs_present() and not opts.force:
            plan = "done"
        elif state in ("queued", "running"):
            plan = "in flight, left alone"
        elif state == "corrupt":
            plan = "unreadable status, skipped"
        else:
            plan = "would submit"
            todo.append(node)
        after = ", ".join(node.deps) if node.deps else "-"
        echo(f"  {node.key}  [{node.kind}]  state={state}  after: {after}  -> {plan}")
    if executor == "slurm":
        for node in todo:
            params = slurm_parameters(
                profile, node.kind, node.model, node.job_name, placement=node.placement
            )
            deps = ", ".join(node.deps)
            echo(f"# ---- {node.key}" + (f" (afterok on the jobs of: {deps})" if deps else ""))
            folder = str(loaded.output_dir / ".launch" / "submitit" / "<run>")
            echo(sbatch_text(params, folder=folder).rstrip("\n"))
    echo(f"dry run: {len(todo)} stage(s) would be submitted")
    return len(todo)
