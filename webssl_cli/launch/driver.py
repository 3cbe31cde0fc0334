"""The detached local driver: carries a local run on after `study run` (without --wait) returns.

``spawn_driver`` starts ``python -m webssl_cli.launch.detached SPEC`` in a new session (its
log: ``<study>/.launch/driver.log``); that process runs ``run_study`` with ``--wait``
semantics and writes ``<study>/.launch/driver.pid`` so that a second `study run` sees the run
in progress. This module knows only the options, not the runner (which imports it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from webssl_cli.launch.lock import LOCK_FD_ENV, PID_NAME, write_pid_file
from webssl_cli.launch.options import opts_json
from webssl_cli.rundir import atomic_write_text


def spawn_driver(run: Any, study_path: str | Path, opts: Any, lock_fd: int) -> int:
    """Start a detached local driver that carries the run on after this command returns.

    The child inherits ``lock_fd``, the open file that holds the study's lock: the lock passes
    to it without a gap in which another run could take the study.
    """
    study_dir = run.study_dir
    launch = study_dir / ".launch"
    launch.mkdir(parents=True, exist_ok=True)
    args = {
        **opts_json(opts),
        "study": str(Path(study_path).absolute()),
        "executor": "local",
        "wait": True,
        "force": False,
        "progress": False,
        "post_hooks": True,
    }
    spec = launch / "driver.json"
    atomic_write_text(spec, json.dumps(args, indent=2) + "\n")
    log = open(launch / "driver.log", "ab")  # noqa: SIM115 (handed to the child)
    proc = subprocess.Popen(
        [sys.executable, "-m", "webssl_cli.launch.detached", str(spec)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=(lock_fd,),
        env={**os.environ, "WEBSSL_DRIVER": "1", LOCK_FD_ENV: str(lock_fd)},
    )
    log.close()
    # The child writes the pid file itself; write it here too so that a second `study run`
    # right away sees the run in progress.
    write_pid_file(launch / PID_NAME, proc.pid)
    return proc.pid
