"""What a `study run` is asked to do and what it reports back (shared by the runner, its
state machine and the detached local driver)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Echo = Callable[[str], None]


@dataclass
class RunOptions:
    executor: str | None = None
    profile: str | None = None
    wait: bool = False
    force: bool = False
    only: list[str] = field(default_factory=list)
    max_parallel: int | None = None
    retries: int = 1
    overrides: list[str] = field(default_factory=list)
    poll_s: float = 2.0
    progress: bool = True
    post_hooks: bool = True
    dry_run: bool = False


@dataclass
class RunReport:
    executor: str = "local"
    study_dir: Path = Path()
    submitted: list[str] = field(default_factory=list)  # node keys, every submission
    left_running: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # failed, retry limit reached
    blocked: list[str] = field(default_factory=list)  # an input failed for good
    driver_pid: int | None = None
    followed: int = 0  # stages found in flight and followed to the end (--wait)

    @property
    def nothing_to_do(self) -> bool:
        return not self.submitted and not self.left_running and self.driver_pid is None


def opts_json(opts: RunOptions) -> dict[str, Any]:
    d = asdict(opts)
    return {k: v for k, v in d.items() if k not in ("progress", "dry_run")}
