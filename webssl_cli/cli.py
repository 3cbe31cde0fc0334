"""The ``webssl`` command: a Typer app wiring the command groups. Parsing only.

Each package registers its own commands through a ``register(app)`` function in its
``commands`` module; those modules keep heavy imports (torch, transformers, matplotlib) inside
the command bodies so that ``webssl --help`` and ``webssl study plan`` stay fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="webssl",
    help="Scaling studies of language-free visual representation learning (Web-SSL / Web-DINO).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain output: errors stay one line ("Error: <file>:<line>: <field>: ..."), not a box.
    rich_markup_mode=None,
)

_GROUPS: dict[str, str] = {
    "study": "Study files: validate, plan, run, status, cancel, logs.",
    "data": "Data: synthetic corpus, sharding, statistics, light/heavy text filters.",
    "eval": "Evaluations of a trained encoder: kNN and linear probes, MLLM/VQA.",
    "results": "The results database: ingest run directories, query, import reference results.",
}

# (group or "" for the root app, module) — a module may register into a group or the root.
_REGISTRARS: list[tuple[str, str]] = [
    ("study", "webssl_cli.study.commands"),
    ("study", "webssl_cli.launch.commands"),
    ("data", "webssl_cli.data.commands"),
    ("", "webssl_cli.train.commands"),
    ("eval", "webssl_cli.eval.commands"),
    ("results", "webssl_cli.results.commands"),
    ("", "webssl_cli.report.commands"),
]


def _build() -> None:
    groups = {
        name: typer.Typer(help=text, no_args_is_help=True, rich_markup_mode=None)
        for name, text in _GROUPS.items()
    }
    for group, module_name in _REGISTRARS:
        module = importlib.import_module(module_name)
        module.register(groups[group] if group else app)
    for name, sub in groups.items():
        if sub.registered_commands or sub.registered_groups:
            app.add_typer(sub, name=name)


_build()


# The machine, not the input: a full disk, a quota, a read-only or lost file system. Said on
# one line with the file and the system's reason, instead of a traceback that hides it.
_SYSTEM_ERRNOS = {"ENOSPC", "EDQUOT", "EROFS", "EIO", "EACCES", "EPERM", "ESTALE", "EMFILE"}


def main() -> None:
    import errno
    import sys

    try:
        app()
    except OSError as exc:
        if errno.errorcode.get(exc.errno or 0) not in _SYSTEM_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"Error: {where}{exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
