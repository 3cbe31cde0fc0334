"""What a study is doing: the `study status` table and the live view of `study run --wait`.

Both read the run directory (status files) and check queued/running stages against the
scheduler with timeouts (``state.py``), so neither can hang on a job SLURM lost.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.launch import state as S
from webssl_cli.rundir import CellDir, read_json


@dataclass
class Row:
    cell: str  # uid, or "filter" for a filter stage
    axes: str
    stage: str
    state: str
    attempts: int
    samples_seen: int | None
    samples_target: int | None
    images_per_s: float | None
    eta_s: float | None
    job: str | None
    error: str | None


def study_dir_of(arg: str | Path) -> Path:
    """STUDY may be the study directory or the study file (then its output_dir)."""
    p = Path(arg)
    if p.is_dir():
        if not (p / "study.json").exists() and not (p / "cells").is_dir():
            raise UserError(
                f"{p}: not a study directory (no study.json); give the study file or its output_dir"
            )
        return p.absolute()
    if p.is_file():
        from webssl_cli.study.loader import load_study

        out: Path = load_study(p).output_dir
        if not out.is_dir():
            raise UserError(
                f"{p}: the study has not been run yet ({out} does not exist); `webssl study run {p}`"
            )
        return out
    raise UserError(f"{p}: no such study file or directory")


def stage_targets(study_dir: Path) -> list[tuple[str, str, Path, str]]:
    """(cell uid or 'filter', axes text, status dir, stage) for every stage of the study."""
    out: list[tuple[str, str, Path, str]] = []
    try:
        record = read_json(study_dir / "study.json")
    except (OSError, ValueError):
        record = {}
    for key, f in (record.get("filters") or {}).items():
        out.append(("filter", key, Path(f.get("out_dir") or study_dir / "filters" / key), "filter"))
    uids = record.get("cells") or sorted(
        p.name for p in (study_dir / "cells").glob("*") if p.is_dir()
    )
    for uid in uids:
        cd = CellDir.of(study_dir, uid)
        try:
            spec = cd.read_cell()
        except UserError:  # an unreadable cell.json: its train stage still has a log
            out.append((uid, "", cd.root, "train"))
            continue
        axes = " ".join(f"{k}={v}" for k, v in spec.axes.items())
        out.append((uid, axes, cd.root, "train"))
        for ev in spec.evals:
            out.append((uid, axes, cd.root, f"eval/{ev.stage_name}"))
    return out


def _eta(entry: dict[str, Any]) -> float | None:
    seen, target, rate = (
        entry.get("samples_seen"),
        entry.get("samples_target"),
        entry.get("images_per_s"),
    )
    if entry.get("state") != "running" or not seen or not target or not rate:
        return None
    return max(0.0, (float(target) - float(seen)) / float(rate))


def _error(state: str, entry: dict[str, Any], obs: S.Observed) -> str | None:
    if state == "unknown":
        return obs.error
    return entry.get("error") if state in ("failed", "cancelled", "diverged", "corrupt") else None


def collect(study_dir: Path) -> list[Row]:
    targets = stage_targets(study_dir)
    entries = [CellDir(d).stage_status_or_corrupt(stage) for _, _, d, stage in targets]
    slurm = (
        S.SlurmStates(S.slurm_ids(entries))
        if any(e.get("executor") == "slurm" for e in entries)
        else None
    )
    # While a run holds the study, it alone writes what it finds: from outside, a local job
    # between fork and exec, or a stage claimed a moment before its job id is recorded, looks
    # lost, and writing that back would make the run submit the stage a second time.
    from webssl_cli.launch.lock import StudyLock

    outsider = StudyLock.busy(study_dir) and S.driver_pid(study_dir) != os.getpid()
    rows = []
    for (cell, axes, d, stage), entry in zip(targets, entries, strict=True):
        obs = S.observe(entry, slurm, study_dir)
        if outsider and obs.state == "lost":
            obs = S.Observed(str(entry.get("state", "pending")), None, "file")
        elif not outsider:
            entry = S.reconcile(d, stage, entry, obs)
        state = (
            obs.state
            if obs.state in ("queued", "running", "unknown")
            else entry.get("state", "pending")
        )
        rows.append(
            Row(
                cell=cell,
                axes=axes,
                stage=stage,
                state=state,
                attempts=int(entry.get("attempts") or 0),
                samples_seen=entry.get("samples_seen"),
                samples_target=entry.get("samples_target"),
                images_per_s=entry.get("images_per_s"),
                eta_s=_eta(entry),
                job=entry.get("job"),
                error=_error(state, entry, obs),
            )
        )
    return rows


def _human(n: float | None) -> str:
    if n is None:
        return ""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def _duration(s: float | None) -> str:
    if s is None:
        return ""
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def totals(rows: list[Row]) -> dict[str, Any]:
    cells: dict[str, list[str]] = {}
    for r in rows:
        if r.cell != "filter":
            cells.setdefault(r.cell, []).append(r.state)
    out: dict[str, Any] = {
        "cells": len(cells),
        "done": 0,
        "running": 0,
        "queued": 0,
        "failed": 0,
        "pending": 0,
    }
    for states in cells.values():
        if all(s in ("done", "diverged") for s in states):
            out["done"] += 1
        elif any(s in ("failed", "cancelled", "corrupt") for s in states) and not any(
            s in ("running", "queued") for s in states
        ):
            out["failed"] += 1
        elif any(s == "running" for s in states):
            out["running"] += 1
        elif any(s == "queued" for s in states):
            out["queued"] += 1
        else:
            out["pending"] += 1
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r.state] = by_state.get(r.state, 0) + 1
    out["stages"] = by_state
    etas = [r.eta_s for r in rows if r.eta_s is not None]
    out["eta_s"] = max(etas) if etas else None
    return out


def render(rows: list[Row]) -> str:
    from tabulate import tabulate

    table = [
        [
            r.cell,
            r.axes,
            r.stage,
            r.state,
            r.attempts or "",
            f"{_human(r.samples_seen)}/{_human(r.samples_target)}" if r.samples_target else "",
            f"{r.images_per_s:.1f}" if r.images_per_s else "",
            _duration(r.eta_s),
            (r.error or "")[:100],
        ]
        for r in rows
    ]
    t = totals(rows)
    text = tabulate(
        table, headers=["cell", "axes", "stage", "state", "att", "samples", "img/s", "ETA", "error"]
    )
    summary = (
        f"cells: {t['done']}/{t['cells']} done, {t['running']} running, {t['queued']} queued, "
        f"{t['failed']} failed, {t['pending']} pending"
    )
    if t["eta_s"] is not None:
        summary += f"; ETA of running training {_duration(t['eta_s'])}"
    return text + "\n" + summary


def as_json(rows: list[Row]) -> dict[str, Any]:
    return {"stages": [asdict(r) for r in rows], "totals": totals(rows)}


class Progress:
    """The live view of `study run --wait`: one line per change (cells done/running/queued, the
    current stage of each running cell, ETA); a terminal gets it redrawn in place."""

    def __init__(self, run: Any, enabled: bool = True, echo: Any = print) -> None:
        self.run = run
        self.enabled = enabled
        self.echo = echo
        self.last = ""
        self.t0 = time.time()
        self.tty = enabled and sys.stdout.isatty()

    def line(self, decisions: dict[str, Any]) -> str:
        cells: dict[str, list[tuple[str, str]]] = {}
        for node in self.run.nodes:
            if node.cell is None or node.key not in self.run.selected:
                continue
            d = decisions.get(node.key)
            st = (
                "done"
                if d and d.action == "done"
                else (d.entry.get("observed") or d.entry.get("state") or "pending")
                if d
                else "pending"
            )
            if d and d.action in ("dead", "blocked"):
                st = "failed"
            cells.setdefault(node.cell, []).append((node.stage, st))
        done = sum(all(s in ("done", "diverged") for _, s in v) for v in cells.values())
        failed = sum(
            any(s == "failed" for _, s in v) and not any(s in ("running",) for _, s in v)
            for v in cells.values()
        )
        running = [
            (c, next(stage for stage, s in v if s == "running"))
            for c, v in cells.items()
            if any(s == "running" for _, s in v)
        ]
        queued = len(cells) - done - failed - len(running)
        elapsed = time.time() - self.t0
        eta = ""
        if 0 < done < len(cells):
            eta = f", ETA ~{_duration(elapsed / done * (len(cells) - done))}"
        cur = ", ".join(f"{c}:{s}" for c, s in running[:4]) + (" ..." if len(running) > 4 else "")
        return (
            f"cells {done}/{len(cells)} done, {len(running)} running, {max(0, queued)} queued, {failed} failed"
            f" [{_duration(elapsed)}{eta}]" + (f" running: {cur}" if cur else "")
        )

    def update(self, decisions: dict[str, Any]) -> None:
        if not self.enabled:
            return
        text = self.line(decisions)
        key = text.split(" [")[0] + text.split("]")[-1]
        if self.tty:
            sys.stdout.write("\r\033[K" + text)
            sys.stdout.flush()
        elif key != self.last:
            stamp = _dt.datetime.now().strftime("%H:%M:%S")
            self.echo(f"[{stamp}] {text}")
        self.last = key

    def close(self) -> None:
        if self.tty and self.last:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.last = ""
