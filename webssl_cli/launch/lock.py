"""One driver per study: an exclusive lock on ``<study>/.launch/study.lock`` and a pid file
that identifies its holder beyond the pid.

The lock is an ``flock`` on an open file, so it is released when its holder exits however it
exits (kill -9 included) and never has to be cleaned up. `study run` takes it before writing
anything and holds it for the whole run; a detached local driver inherits the open file from
the `study run` that starts it (the lock never lapses in between).

A pid alone is not an identity: pids are reused. The pid file records the process's start
time (``/proc/<pid>/stat`` field 22, in clock ticks since boot) and its command line; a
process whose start time differs is another process, and nobody signals it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from webssl_cli.rundir import atomic_write_text

LOCK_NAME = "study.lock"
PID_NAME = "driver.pid"
LOCK_FD_ENV = "WEBSSL_STUDY_LOCK_FD"  # an inherited, already locked descriptor (the driver)


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        if fields[0] in ("Z", "X"):
            return None
        return int(fields[19])  # field 22 of the whole line; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def process_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def write_pid_file(path: Path, pid: int | None = None) -> None:
    """Record ``pid`` (this process by default) with its start time and command line."""
    pid = os.getpid() if pid is None else pid
    record = {"pid": pid, "start": process_start(pid), "cmd": process_cmdline(pid)[:500]}
    atomic_write_text(path, json.dumps(record) + "\n")


def live_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` if that very process still runs, else None.

    A record without a start time (the older ``<pid> webssl`` line) is trusted only while the
    process's command line still names webssl, and never to be some other program.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    record: Any
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict):
        try:
            pid = int(record["pid"])
            start = record.get("start")
        except (KeyError, TypeError, ValueError):
            return None
        if pid <= 0:
            return None
        now = process_start(pid)
        if now is None or start is None or int(start) != now:
            return None
        return pid
    try:
        pid = int(text.split()[0])
    except (IndexError, ValueError):
        return None
    if pid <= 0 or process_start(pid) is None or "webssl" not in process_cmdline(pid):
        return None
    return pid


class StudyLock:
    """The held lock of one study (``acquire`` returns None while another process holds it)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def acquire(cls, study_dir: Path) -> StudyLock | None:
        launch = study_dir / ".launch"
        launch.mkdir(parents=True, exist_ok=True)
        path = launch / LOCK_NAME
        inherited = cls._inherited(path)
        if inherited is not None:
            return inherited
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    @classmethod
    def _inherited(cls, path: Path) -> StudyLock | None:
        raw = os.environ.get(LOCK_FD_ENV)
        if not raw or not raw.isdigit():
            return None
        fd = int(raw)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            return None
        if not same:
            return None
        os.environ.pop(LOCK_FD_ENV, None)  # the stages this driver starts do not hold it
        # The lock belongs to the open file we share with our parent: this re-asserts it.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.set_inheritable(fd, False)
        return cls(fd, path)

    @staticmethod
    def busy(study_dir: Path) -> bool:
        """Another process holds the lock of this study (a run in progress)."""
        path = study_dir / ".launch" / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
