"""Reading published benchmark files: every failure is a one-line UserError naming the file."""

from __future__ import annotations

import base64
import binascii
import csv
import json
import sys
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.eval.benchmarks import Question
from webssl_cli.eval.metrics import BENCHMARK_CATEGORY, LETTERS


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise UserError(f"{path}: not JSON ({exc})") from exc


def read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise UserError(f"{path}:{n}: not a JSON line ({exc})") from exc
    return rows


def read_table(path: Path, delimiter: str) -> list[dict[str, str]]:
    """A CSV/TSV file as rows keyed by its header."""
    csv.field_size_limit(sys.maxsize)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter=delimiter))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except csv.Error as exc:
        raise UserError(
            f"{path}: not a {'TSV' if delimiter == chr(9) else 'CSV'} file ({exc})"
        ) from exc


def require(path: Path, row: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    """A row must carry ``keys``: else name the file, the row and the missing field."""
    missing = [k for k in keys if k not in row]
    if missing:
        raise UserError(
            f"{path}: {where}: missing field(s) {', '.join(missing)}; "
            "is this the benchmark's published file?"
        )


def image_file(path: Path, source: Path) -> str:
    """An image the layout refers to, which must exist as a file."""
    if not path.is_file():
        raise UserError(f"{source}: image {path} is missing; give the benchmark's image folder")
    return str(path.resolve())


def write_image(data: str | bytes, out: Path, source: Path) -> str:
    """An embedded image (base64 text or raw bytes) written once to ``out``."""
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UserError(f"{source}: image for {out.stem} is not base64 ({exc})") from exc
    if not data:
        raise UserError(f"{source}: image for {out.stem} is empty")
    if not out.exists():
        from webssl_cli.rundir import atomic_write_bytes

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, data)
    return str(out.resolve())


def question(
    qid: str,
    benchmark: str,
    image: str,
    text: str,
    answers: list[str],
    metric: str,
    choices: list[str] | None = None,
    group: str | None = None,
    **meta: Any,
) -> Question:
    return Question(
        f"{benchmark}-{qid}",
        benchmark,
        BENCHMARK_CATEGORY.get(benchmark),
        image,
        text,
        answers,
        metric,
        choices,
        group,
        {k: v for k, v in meta.items() if v is not None},
    )


def letter_of(answer: str, n_choices: int, source: Path, where: str) -> str:
    """The correct option's letter from "B", "(B)" or "(b)"."""
    text = answer.strip().strip("()").strip().upper()
    if len(text) != 1 or text not in LETTERS[:n_choices]:
        raise UserError(f"{source}: {where}: answer {answer!r} is not one of the option letters")
    return text


def parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no *.parquet files")
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            rows.extend(pq.read_table(f).to_pylist())
        except (OSError, pa.ArrowException) as exc:
            raise UserError(f"{f}: not a parquet file ({exc})") from exc
    return rows


def image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return value if isinstance(value, bytes) and value else None
