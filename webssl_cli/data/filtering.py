"""The light/heavy filter stage: classify every sample of a source, keep-list + filtered shards.

Layout of a filter directory (``<study-dir>/filters/<key>/``, key = ``filter_key(...)``)::

    manifest.json              source pattern, its shard list, filter, classifier, version
    done/shard-000003.json     per-shard marker, written last: counts, skipped, timings
    parts/shard-000003.parquet per-shard keep rows (key, score, decision, classifier, version, shard)
    shards/shard-000003.tar    the kept samples of source shard 3, what the trainer reads
    keep.parquet               all parts, written once every shard is done
    stats.json                 {"kept", "total", "fraction", "skipped", ...}; its presence = complete

Work is per shard, so a SLURM array task (or a ``--workers`` process) takes any subset of
shard indices; shards with a done marker are never redone, and a shard killed midway is redone
from scratch (its outputs are written atomically and its marker last). Processes that run
disjoint subsets at the same time are safe: the final merge takes a lock and happens once.
"""

from __future__ import annotations

import fcntl
import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from webssl_cli.data.classifiers import VERSIONS, Classifier, check_choice, make_classifier
from webssl_cli.data.shards import (
    Problems,
    Sample,
    decode_image,
    iter_samples,
    list_shards,
    shard_bytes,
    shard_name,
)
from webssl_cli.errors import UserError
from webssl_cli.rundir import atomic_write_bytes, atomic_write_json, now_iso, read_json

__all__ = [
    "filter_key",
    "filter_stats",
    "filtered_sources",
    "list_shards",
    "run_filter_shards",
]

BATCH = 32
_CLASSIFIERS: dict[tuple[str, str | None], Classifier] = {}  # one model per process


def filter_key(source_name: str, filter: str, classifier: str) -> str:
    """``<source>-<filter>-<classifier>-v<version>``: cells that share it share the output."""
    check_choice(filter, classifier)
    safe = "".join(c if c.isalnum() or c in "_." else "_" for c in source_name) or "source"
    return f"{safe}-{filter}-{classifier}-v{VERSIONS[classifier]}"


def _classifier(name: str, vlm_path: str | None, threads: int) -> Classifier:
    key = (name, vlm_path)
    if key not in _CLASSIFIERS:
        _CLASSIFIERS[key] = make_classifier(name, vlm_path=vlm_path, threads=threads)
    return _CLASSIFIERS[key]


def _manifest(
    out_dir: Path, source_pattern: str, shards: list[str], filter: str, classifier: str
) -> dict[str, Any]:
    """Write the manifest on first use; afterwards it must match (a directory is one filter)."""
    want = {
        "source": source_pattern,
        "shards": [str(Path(s).resolve()) for s in shards],
        "filter": filter,
        "classifier": classifier,
        "version": VERSIONS[classifier],
    }
    path = out_dir / "manifest.json"
    if path.exists():
        have = read_json(path)
        diff = [k for k in want if have.get(k) != want[k]]
        if diff:
            raise UserError(
                f"{path}: this filter directory was made for another {diff[0]} "
                f"({have.get(diff[0])!r}, not {want[diff[0]]!r}); use a new --out directory or delete it"
            )
        return dict(have)
    atomic_write_json(path, {**want, "created": now_iso()})
    return want


def _batches(samples: Iterator[Sample], problems: Problems) -> Iterator[list[tuple[Sample, Any]]]:
    batch: list[tuple[Sample, Any]] = []
    for s in samples:
        rgb = decode_image(s.image_bytes)
        if rgb is None:
            problems.add("undecodable", f"{s.shard}:{s.key}")
            continue
        batch.append((s, rgb))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _parquet_bytes(rows: dict[str, list[Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "key": pa.array(rows["key"], pa.string()),
            "score": pa.array(rows["score"], pa.float64()),
            "decision": pa.array(rows["decision"], pa.bool_()),
            "classifier": pa.array(rows["classifier"], pa.string()),
            "version": pa.array(rows["version"], pa.string()),
            "shard": pa.array(rows["shard"], pa.int32()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _process_shard(
    index: int, path: str, filter: str, clf: Classifier, out_dir: Path
) -> dict[str, Any]:
    """Classify one shard; write its part, its filtered shard, then its done marker."""
    t0, c0 = time.perf_counter(), time.process_time()
    problems = Problems()
    rows: dict[str, list[Any]] = {
        k: [] for k in ("key", "score", "decision", "classifier", "version", "shard")
    }
    kept: list[tuple[str, dict[str, bytes]]] = []
    for batch in _batches(iter_samples(path, problems), problems):
        results = clf.classify([rgb for _, rgb in batch], [s.meta() for s, _ in batch], filter)
        for (s, _), (score, keep) in zip(batch, results, strict=True):
            rows["key"].append(s.key)
            rows["score"].append(float(score))
            rows["decision"].append(bool(keep))
            if keep:
                kept.append((s.key, s.members))
    n = len(rows["key"])
    rows["classifier"] = [clf.name] * n
    rows["version"] = [clf.version] * n
    rows["shard"] = [index] * n
    name = shard_name(index)
    atomic_write_bytes(out_dir / "parts" / name.replace(".tar", ".parquet"), _parquet_bytes(rows))
    atomic_write_bytes(out_dir / "shards" / name, shard_bytes(kept))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    marker = {
        "shard": index,
        "source": path,
        "total": n,
        "kept": len(kept),
        "skipped": problems.as_dict(),
        "skipped_examples": problems.examples,
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "ended": now_iso(),
    }
    atomic_write_json(out_dir / "done" / name.replace(".tar", ".json"), marker)
    return marker


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_MARKER_KEYS = ("total", "kept", "skipped")


def _done_markers(out_dir: Path, n_shards: int) -> dict[int, dict[str, Any]]:
    """The done markers that read back whole; a damaged one (truncated, not JSON, missing its
    counts) does not count as done, so that its shard is classified again."""
    out = {}
    for i in range(n_shards):
        p = out_dir / "done" / shard_name(i).replace(".tar", ".json")
        if not p.exists():
            continue
        try:
            marker = read_json(p)
        except (OSError, ValueError):
            continue
        if (
            isinstance(marker, dict)
            and all(k in marker for k in _MARKER_KEYS)
            and isinstance(marker["skipped"], dict)
            and all(isinstance(marker[k], int) for k in ("total", "kept"))
        ):
            out[i] = marker
    return out


def _read_part(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        marker = path.parent.parent / "done" / path.name.replace(".parquet", ".json")
        raise UserError(
            f"{path}: unreadable keep-list part ({' '.join(str(exc).split())[:120]}); "
            f"delete {marker} to classify that shard again"
        ) from None


def _finalise(out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Merge parts into keep.parquet and write stats.json once every shard is done."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(manifest["shards"])
    with _lock(out_dir / ".finalise.lock"):
        if (out_dir / "stats.json").exists():
            return dict(read_json(out_dir / "stats.json"))
        markers = _done_markers(out_dir, n)
        if len(markers) < n:
            return None
        parts = [
            _read_part(out_dir / "parts" / shard_name(i).replace(".tar", ".parquet"))
            for i in range(n)
        ]
        buf = io.BytesIO()
        pq.write_table(pa.concat_tables(parts), buf)
        atomic_write_bytes(out_dir / "keep.parquet", buf.getvalue())
        total = sum(m["total"] for m in markers.values())
        kept = sum(m["kept"] for m in markers.values())
        skipped: dict[str, int] = {}
        for m in markers.values():
            for k, v in m["skipped"].items():
                skipped[k] = skipped.get(k, 0) + int(v)
        cpu = sum(m.get("cpu_seconds", 0.0) for m in markers.values())
        stats = {
            "complete": True,
            "kept": kept,
            "total": total,
            "fraction": kept / total if total else 0.0,
            "skipped": dict(sorted(skipped.items())),
            "source": manifest["source"],
            "filter": manifest["filter"],
            "classifier": manifest["classifier"],
            "version": manifest["version"],
            "shards": n,
            "kept_shards": sum(1 for m in markers.values() if m["kept"] > 0),
            "images_per_cpu_s": round(total / cpu, 2) if cpu > 0 else None,
            "finished": now_iso(),
        }
        atomic_write_json(out_dir / "stats.json", stats)
        return stats


def run_filter_shards(
    source_pattern: str,
    filter: str,
    classifier: str,
    out_dir: Path,
    shard_ids: list[int] | None = None,
    vlm_path: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Filter the given shard indices of a source (all when None) into ``out_dir``.

    Returns ``{"processed": [...], "already_done": [...], "complete": bool, "stats": {...}|None,
    "out_dir": str}``. Finalises keep.parquet and stats.json when the last shard is done, and
    returns at once from a complete directory (the cache).
    """
    check_choice(filter, classifier)
    out_dir = Path(out_dir)
    shards = list_shards(source_pattern)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(out_dir, source_pattern, shards, filter, classifier)
    ids = list(range(len(shards))) if shard_ids is None else list(shard_ids)
    bad = [i for i in ids if not 0 <= i < len(shards)]
    if bad:
        raise UserError(
            f"shard index {bad[0]} is out of range; the source has {len(shards)} shards (0..{len(shards) - 1})"
        )
    result: dict[str, Any] = {"processed": [], "already_done": [], "out_dir": str(out_dir)}
    if (out_dir / "stats.json").exists():
        result.update(
            complete=True, stats=read_json(out_dir / "stats.json"), cached=True, already_done=ids
        )
        return result
    done = _done_markers(out_dir, len(shards))
    todo = [i for i in ids if i not in done]
    result["already_done"] = [i for i in ids if i in done]
    if todo:
        clf = _classifier(classifier, vlm_path, threads)
        for i in todo:
            _process_shard(i, shards[i], filter, clf, out_dir)
            result["processed"].append(i)
    stats = _finalise(out_dir, manifest)
    result.update(complete=stats is not None, stats=stats, cached=False)
    return result


def filter_stats(filter_dir: Path) -> dict[str, Any]:
    """stats.json of a complete filter directory, or progress so far for an unfinished one."""
    filter_dir = Path(filter_dir)
    if (filter_dir / "stats.json").exists():
        return dict(read_json(filter_dir / "stats.json"))
    if not (filter_dir / "manifest.json").exists():
        raise UserError(
            f"{filter_dir}: not a filter directory (no manifest.json); run `webssl data filter` first"
        )
    manifest = read_json(filter_dir / "manifest.json")
    markers = _done_markers(filter_dir, len(manifest["shards"]))
    total = sum(m["total"] for m in markers.values())
    kept = sum(m["kept"] for m in markers.values())
    return {
        "complete": False,
        "shards": len(manifest["shards"]),
        "shards_done": len(markers),
        "kept": kept,
        "total": total,
        "fraction": kept / total if total else 0.0,
        "filter": manifest["filter"],
        "classifier": manifest["classifier"],
    }


def filtered_sources(filter_dir: Path) -> list[str]:
    """The filtered shards the trainer's loader reads (those that kept at least one sample).

    Raises UserError when the filter is unfinished or kept nothing.
    """
    filter_dir = Path(filter_dir)
    stats = filter_stats(filter_dir)
    if stats.get("complete") is False:
        raise UserError(
            f"{filter_dir}: the filter is unfinished ({stats['shards_done']}/{stats['shards']} shards); "
            "run `webssl data filter` again to finish it"
        )
    manifest = read_json(filter_dir / "manifest.json")
    markers = _done_markers(filter_dir, len(manifest["shards"]))
    paths = [
        str(filter_dir / "shards" / shard_name(i))
        for i in sorted(markers)
        if markers[i]["kept"] > 0
    ]
    if not paths:
        raise UserError(f"{filter_dir}: the filter kept no samples; nothing to train on")
    return paths
