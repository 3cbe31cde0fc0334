"""Parsing and validating the small run-directory files (cell.json, status.json, eval/*.json,
filters/*/stats.json) into rows. A file that is not valid JSON, or not the contract's shape,
raises ``BadFile``: ingest reports it and leaves its cell as it was."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any


class BadFile(ValueError):
    """A file that cannot be ingested (corrupt, half-written, or not the contract's shape)."""


def load_json(path: Path) -> tuple[Any, str]:
    data = path.read_bytes()
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadFile(f"not valid JSON ({exc})") from None
    return obj, hashlib.sha256(data).hexdigest()


def _need(obj: Any, key: str, types: type | tuple[type, ...], optional: bool = False) -> Any:
    if not isinstance(obj, dict):
        raise BadFile("expected a JSON object")
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
        raise BadFile(f"field {key!r} missing or not {_type_names(types)}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    return "/".join(t.__name__ for t in _as_tuple(types))


def parse_cell(obj: Any, uid: str) -> dict[str, Any]:
    """A cell_specs row from cell.json, validated as a ``CellSpec`` (older layouts migrated).

    The cell's facts (parameters, iterations, FLOPs, the filter's kind and key) are read from
    the file: ingest never re-prices a cell or guesses a filter from its name."""
    from webssl_cli.errors import UserError
    from webssl_cli.specs.cell import parse_cell as parse_cell_spec

    try:
        cell = parse_cell_spec(obj, "cell.json")
    except UserError as exc:
        raise BadFile(str(exc.message).removeprefix("cell.json: ")) from None
    if cell.uid != uid:
        raise BadFile(f"uid {cell.uid!r} does not match its directory {uid!r}")
    return {
        "uid": uid,
        "study": cell.study or "",
        "model": cell.model,
        "samples_seen": cell.samples_seen,
        "data_filter": cell.data_filter,
        "classifier": cell.data.classifier,
        "params": cell.facts.params,
        "flops_per_sample": cell.facts.flops_per_sample,
        "flops": cell.facts.flops,
        "seed": cell.seed,
        "axes": json.dumps(cell.axes, sort_keys=True),
        "spec": json.dumps(cell.model_dump(mode="json"), sort_keys=True),
        "method": cell.method,
        "filter_kind": cell.data.filter,
        "filter_key": cell.data.filter_key,
        "iterations": cell.facts.iterations,
    }


def _opt_int(v: Any) -> int | None:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    # A BIGINT column: a count beyond it (or inf/NaN) makes the file bad, not the ingest.
    if isinstance(v, float) and not math.isfinite(v) or not -(2**63) < v < 2**63:
        raise BadFile(f"{v!r} is not an integer in range")
    return int(v)


def _opt_float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def parse_status(obj: Any, uid: str) -> list[dict[str, Any]]:
    stages = _need(obj, "stages", dict)
    rows = []
    for stage, st in sorted(stages.items()):
        if not isinstance(st, dict):
            raise BadFile(f"stage {stage!r} is not an object")
        job_ids = st.get("job_ids") or []
        if not isinstance(job_ids, list):
            job_ids = [job_ids]
        job_ids = [str(j) for j in job_ids]
        rows.append(
            {
                "uid": uid,
                "stage": str(stage),
                "state": _opt_str(st.get("state")),
                "attempts": _opt_int(st.get("attempts")),
                "job_ids": job_ids,
                "last_job_id": job_ids[-1] if job_ids else None,
                "host": _opt_str(st.get("host")),
                "started": _opt_str(st.get("started")),
                "ended": _opt_str(st.get("ended")),
                "error": _opt_str(st.get("error")),
                "samples_seen": _opt_int(st.get("samples_seen")),
                "step": _opt_int(st.get("step")),
                "images_per_s": _opt_float(st.get("images_per_s")),
            }
        )
    return rows


def parse_eval(obj: Any, uid: str, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    results = _need(obj, "results", list)
    task = _opt_str(obj.get("task")) or name
    rows = []
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not isinstance(r.get("benchmark"), str):
            raise BadFile(f"results[{i}] has no string 'benchmark'")
        value = r.get("value")
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise BadFile(f"results[{i}].value is not a number")
        rows.append(
            {
                "uid": uid,
                "eval_name": name,
                "task": task,
                "benchmark": r["benchmark"],
                "category": _opt_str(r.get("category")),
                "metric": _opt_str(r.get("metric")),
                "value": None if value is None else float(value),
                "variant": _variant(r.get("variant"), f"results[{i}].variant"),
            }
        )
    cats = obj.get("categories") or {}
    if not isinstance(cats, dict):
        raise BadFile("field 'categories' is not an object")
    by_variant = obj.get("categories_by_variant") or {}
    if not isinstance(by_variant, dict) or not all(
        isinstance(v, dict) for v in by_variant.values()
    ):
        raise BadFile("field 'categories_by_variant' is not an object of objects")
    cat_rows = [
        {"uid": uid, "eval_name": name, "category": str(k), "value": _opt_float(v),
         "variant": variant}
        for variant, group in [("encoder", cats)] + sorted(
            (_variant(k, f"categories_by_variant.{k}"), v) for k, v in by_variant.items())
        for k, v in sorted(group.items())
    ]  # fmt: skip
    return rows, cat_rows


def _variant(v: Any, where: str) -> str:
    from webssl_cli.outcomes import VARIANTS

    if v is None:
        return "encoder"
    if v not in VARIANTS:
        raise BadFile(f"{where}: unknown variant {v!r} (valid: {', '.join(VARIANTS)})")
    return str(v)


def parse_diagnostics(obj: Any, uid: str, name: str) -> list[dict[str, Any]]:
    """Numbers under ``details.features`` (the encoder's) and ``details.features_by_variant``
    (baselines'): effective rank, per-dimension std of the features an eval computed."""
    details = obj.get("details") if isinstance(obj, dict) else None
    if not isinstance(details, dict):
        return []
    groups: list[tuple[str, Any]] = [("encoder", details.get("features"))]
    extra = details.get("features_by_variant")
    if isinstance(extra, dict):
        groups += sorted(extra.items())
    return [
        {"uid": uid, "eval_name": name, "variant": str(variant), "name": str(k), "value": float(v)}
        for variant, feats in groups
        if isinstance(feats, dict)
        for k, v in sorted(feats.items())
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def parse_filter_stats(obj: Any, key: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BadFile("expected a JSON object")
    return {
        "filter_key": key,
        "kept": _opt_int(obj.get("kept")),
        "total": _opt_int(obj.get("total")),
        "fraction": _opt_float(obj.get("fraction")),
        "skipped": json.dumps(obj.get("skipped"), sort_keys=True),
    }
