"""What loading a study gives: the study, its cells and the distinct filter stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.specs.cell import CellSpec
from webssl_cli.study import grid as G
from webssl_cli.study.schema import Study
from webssl_cli.study.yamlfile import SourceMap


@dataclass(frozen=True)
class FilterJob:
    """One distinct data-filter stage, shared by every cell that trains on its output."""

    key: str
    name: str  # the study's filter name (the data_filter axis value)
    source: str
    source_pattern: str
    filter: str
    classifier: str
    vlm_path: str | None
    out_dir: Path


@dataclass
class LoadedStudy:
    path: Path
    study: Study
    output_dir: Path
    cells: list[G.Cell]
    sources: dict[
        str, dict[str, Any]
    ]  # name -> {"shards": absolute pattern, "synthesize": {...} | None}
    filters: dict[str, FilterJob]  # key -> job, only filters that some cell uses and that filter
    evals: list[dict[str, Any]]  # the study's eval configs, JSON form
    source_map: SourceMap = field(repr=False)

    def cell_spec(self, cell: G.Cell) -> CellSpec:
        return cell.spec

    def filter_for(self, cell: G.Cell) -> FilterJob | None:
        return self.filter_for_name(cell.data_filter)

    def filter_for_name(self, data_filter: str) -> FilterJob | None:
        for job in self.filters.values():
            if job.name == data_filter:
                return job
        return None

    @property
    def eval_names(self) -> list[str]:
        return [e["name"] or e["task"] for e in self.evals]
