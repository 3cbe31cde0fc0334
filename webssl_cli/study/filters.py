"""A study's data sources (absolute shard patterns; synthetic ones under the output
directory) and its distinct filter stages, shared by every cell that trains on their output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webssl_cli.study import grid as G
from webssl_cli.study.loaded import FilterJob
from webssl_cli.study.schema import Study
from webssl_cli.study.settings import resolve_path

FILTER_VERSION = 1


def resolve_sources(study: Study, output_dir: Path) -> dict[str, dict[str, Any]]:
    """name -> {"shards": absolute pattern, "synthesize": settings or None}."""
    sources: dict[str, dict[str, Any]] = {}
    for name, src in study.data.sources.items():
        if src.shards is not None:
            pattern = resolve_path(src.shards)
        else:
            assert src.synthesize is not None  # the schema guarantees one of the two
            last = -(-src.synthesize.n // src.synthesize.shard_size) - 1
            pattern = str(output_dir / "data" / name / f"shard-{{000000..{last:06d}}}.tar")
        sources[name] = {
            "shards": pattern,
            "synthesize": src.synthesize.model_dump(mode="json") if src.synthesize else None,
        }
    return sources


def filter_stages(
    study: Study, sources: dict[str, dict[str, Any]], used: set[str], output_dir: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, FilterJob], dict[str, FilterJob | None]]:
    """(definition of every filter, the distinct filter jobs by key, the job of each filter
    name or None). Only filters that some cell in ``used`` trains on and that filter get a job."""
    filter_defs: dict[str, dict[str, Any]] = {}
    for name, flt in study.data.filters.items():
        src = study.data.sources[flt.source]
        filter_defs[name] = {
            "source": flt.source,
            "source_def": src.shards
            if src.shards is not None
            else {"synthesize": sources[flt.source]["synthesize"]},
            "filter": flt.filter,
            "classifier": flt.classifier if flt.filter != "none" else None,
            "vlm_path": flt.vlm_path if flt.filter != "none" and flt.classifier == "vlm" else None,
        }
    filters: dict[str, FilterJob] = {}
    job_of_filter: dict[str, FilterJob | None] = {}
    for name, fdef in filter_defs.items():
        if fdef["filter"] == "none" or name not in used:
            job_of_filter[name] = None
            continue
        key = f"{fdef['source']}-{fdef['filter']}-{fdef['classifier']}-v{FILTER_VERSION}-{G.short_hash(fdef, 6)}"
        job = FilterJob(
            key,
            name,
            fdef["source"],
            sources[fdef["source"]]["shards"],
            fdef["filter"],
            fdef["classifier"],
            fdef["vlm_path"],
            output_dir / "filters" / key,
        )
        filters.setdefault(key, job)
        job_of_filter[name] = job
    return filter_defs, filters, job_of_filter
