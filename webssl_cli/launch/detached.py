"""The detached local driver process: ``python -m webssl_cli.launch.detached SPEC``, started by
``driver.spawn_driver``; it carries a local run on with ``--wait`` semantics after `study run`
has returned, logging to ``<study>/.launch/driver.log``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from webssl_cli.errors import UserError
from webssl_cli.launch.options import RunOptions
from webssl_cli.launch.runner import run_study
from webssl_cli.rundir import now_iso


def drive(spec_path: str) -> int:
    """Run the study described by the JSON file ``spec_path``; the exit code of the process."""
    args = json.loads(Path(spec_path).read_text())
    study = args.pop("study")
    args.pop("executor", None)
    opts = RunOptions(**{k: v for k, v in args.items() if k in RunOptions.__dataclass_fields__})
    opts.executor = "local"

    def echo(msg: str) -> None:
        print(f"[{now_iso()}] {msg}", flush=True)

    try:
        run_study(study, opts, echo)
    except UserError as exc:
        echo(f"error: {exc.message}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(drive(sys.argv[1]))
