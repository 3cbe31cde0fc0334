"""Packing user data into webdataset shards of a target size, with stable sample keys.

Sources: a folder of images (ImageFolder style: a first-level subfolder is the class), the tar
shards img2dataset writes (``<key>.jpg`` + ``<key>.json``/``.txt``), or its Parquet output (a
binary image column plus scalar columns). Keys are stable: the relative path for folders
(``cats/img_001``, dots and separators made safe), the original key for tar and Parquet. Bad
images are skipped and counted; samples keep their order, so re-packing gives the same shards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from webssl_cli.data.shards import (
    IMAGE_EXTS,
    Problems,
    decode_image,
    iter_samples,
    shard_name,
    write_shard,
)
from webssl_cli.errors import UserError
from webssl_cli.rundir import atomic_write_json

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_PARQUET_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img")


def safe_key(text: str) -> str:
    """A webdataset-safe key (no dots, no separators) that stays readable."""
    return _UNSAFE.sub("_", text).strip("_") or "sample"


def _from_folder(root: Path, problems: Problems) -> Iterator[tuple[str, dict[str, bytes]]]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    classes = sorted(
        {p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1}
    )
    seen: set[str] = set()
    for p in files:
        ext = p.suffix.lower().lstrip(".")
        if ext not in IMAGE_EXTS:
            if ext not in ("json", "txt"):
                problems.add("non_image_member", str(p))
            continue
        rel = p.relative_to(root)
        key = safe_key(str(rel.with_suffix("")))
        if key in seen:  # a.jpg and a.png: keep both, told apart by extension
            key = safe_key(str(rel))
        seen.add(key)
        data = p.read_bytes()
        members: dict[str, bytes] = {("jpg" if ext == "jpeg" else ext): data}
        meta: dict[str, Any] = {"key": key, "path": str(rel)}
        side = p.with_suffix(".json")
        if side.exists():
            try:
                meta.update(json.loads(side.read_text()))
            except (ValueError, UnicodeDecodeError):
                problems.add("bad_sidecar", str(side))
        if len(rel.parts) > 1:
            meta.setdefault("class_name", rel.parts[0])
            meta.setdefault("class", classes.index(rel.parts[0]))
        if p.with_suffix(".txt").exists():
            members["txt"] = p.with_suffix(".txt").read_bytes()
        members["json"] = json.dumps(meta, sort_keys=True).encode()
        yield key, members


def _from_tars(paths: list[Path], problems: Problems) -> Iterator[tuple[str, dict[str, bytes]]]:
    for path in paths:
        for s in iter_samples(path, problems):
            yield safe_key(s.key), s.members


def _from_parquet(paths: list[Path], problems: Problems) -> Iterator[tuple[str, dict[str, bytes]]]:
    import pyarrow.parquet as pq

    for path in paths:
        try:
            table = pq.read_table(path)
        except Exception:  # pyarrow raises several types for a bad file
            problems.add("unreadable_shard", str(path))
            continue
        names = table.column_names
        image_col = next((c for c in _PARQUET_IMAGE_COLUMNS if c in names), None)
        if image_col is None:
            raise UserError(
                f"{path}: no image column; expected one of {', '.join(_PARQUET_IMAGE_COLUMNS)}"
            )
        ext = "jpg" if image_col in ("jpg", "jpeg", "image", "img") else image_col
        for i, row in enumerate(table.to_pylist()):
            data = row.pop(image_col)
            key = safe_key(str(row.get("key") or f"{path.stem}_{i:09d}"))
            if not isinstance(data, bytes | bytearray) or not data:
                problems.add("no_image", f"{path}:{key}")
                continue
            meta = {
                k: v for k, v in row.items() if isinstance(v, str | int | float | bool) or v is None
            }
            yield (
                key,
                {ext: bytes(data), "json": json.dumps(meta, sort_keys=True, default=str).encode()},
            )


def pack(
    src: str | Path, out: str | Path, shard_size: int = 1000, check: bool = True
) -> dict[str, Any]:
    """Pack ``src`` into ``out/shard-000000.tar``...; returns counts (also written to pack.json)."""
    src, out = Path(src), Path(out)
    if shard_size < 1:
        raise UserError(f"--shard-size: {shard_size} must be at least 1")
    if not src.exists():
        raise UserError(f"{src}: no such file or directory")
    problems = Problems()
    if src.is_dir():
        tars = sorted(src.glob("*.tar"))
        parquets = sorted(src.glob("*.parquet"))
        if tars:
            samples = _from_tars(tars, problems)
        elif parquets:
            samples = _from_parquet(parquets, problems)
        else:
            samples = _from_folder(src, problems)
    elif src.suffix == ".tar":
        samples = _from_tars([src], problems)
    elif src.suffix == ".parquet":
        samples = _from_parquet([src], problems)
    else:
        raise UserError(f"{src}: expected an image folder, a .tar shard or a .parquet file")
    written: list[str] = []
    buf: list[tuple[str, dict[str, bytes]]] = []
    n = 0
    keys: set[str] = set()

    def flush() -> None:
        if buf:
            written.append(str(write_shard(out / shard_name(len(written)), buf)))
            buf.clear()

    for key, members in samples:
        image = next((members[e] for e in IMAGE_EXTS if e in members), None)
        if check and decode_image(image) is None:
            problems.add("undecodable", key)
            continue
        if key in keys:
            problems.add("duplicate_key", key)
            continue
        keys.add(key)
        buf.append((key, members))
        n += 1
        if len(buf) == shard_size:
            flush()
    flush()
    if n == 0:
        raise UserError(f"{src}: no usable images found (skipped: {problems.as_dict() or 'none'})")
    result = {"source": str(src), "samples": n, "shards": written, "skipped": problems.as_dict()}
    atomic_write_json(out / "pack.json", result)
    return result
