"""The study file's schema: frozen, closed pydantic models (unknown keys fail).

A study is one YAML file: model size x samples seen x data filter (x any train/eval setting
as a dotted path), expanded into cells by ``grid.py``. Field docstrings are the reference.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from webssl_cli.specs.base import Frozen
from webssl_cli.specs.evals import EvalConfig

# Names become directory components (filters/<key>, eval/<name>.json): slugs only, so no
# name in a study can escape the output directory.
SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
FILTERS = ("none", "light", "heavy")
CLASSIFIERS = ("ocr", "vlm", "label")


class SynthSpec(Frozen):
    n: int = Field(3000, ge=1, le=10_000_000)
    """Images to generate."""
    seed: int = 0
    shard_size: int = Field(500, ge=1, le=1_000_000)
    """Samples per shard."""
    image_size: int = Field(128, ge=32, le=2048)
    """Longest side of the generated images, in pixels."""
    mix: dict[str, float] | None = None
    """Fractions per kind (natural, scene_text, chart, document, table); None: the default mix."""
    dense: bool = False
    """Scenes with per-pixel class masks and metric depth (``webssl data synth --dense``), for
    the segmentation and depth evaluations, or to train on."""

    @model_validator(mode="after")
    def _dense_has_no_mix(self) -> SynthSpec:
        if self.dense and self.mix is not None:
            raise ValueError("`mix` is for the web-like corpus; dense scenes have one kind")
        return self


class DataSource(Frozen):
    shards: str | None = None
    """Webdataset shard pattern (brace expansion, local path or ``pipe:`` command). Relative
    paths are relative to the working directory. None with ``synthesize``: generated under
    ``<output_dir>/data/<source>/``."""
    synthesize: SynthSpec | None = None
    """Generate a synthetic corpus here when the shards do not exist yet."""

    @model_validator(mode="after")
    def _needs_something(self) -> DataSource:
        if self.shards is None and self.synthesize is None:
            raise ValueError("give `shards` (a webdataset pattern) or `synthesize` (or both)")
        return self


class DataFilterSpec(Frozen):
    source: str
    """The data source (a key of ``data.sources``) this filter reads."""
    filter: Literal["none", "light", "heavy"] = "none"
    """'none' (all data), 'light' (images with readable text), 'heavy' (charts, tables, documents)."""
    classifier: Literal["ocr", "vlm", "label"] = "ocr"
    """'ocr' (offline text detector), 'vlm' (SmolVLM-class model from ``vlm_path``), 'label' (ground truth)."""
    vlm_path: str | None = None
    """Local directory of the vision-language model (classifier 'vlm')."""


class DataSection(Frozen):
    sources: dict[str, DataSource]
    """Named data sources."""
    filters: dict[str, DataFilterSpec]
    """Named data filters: the values of the ``data_filter`` axis."""
    allow_pipe: bool = False
    """Allow ``pipe:CMD`` shard sources. Such a source runs CMD through the shell in every job
    that reads it, so a study file that uses one is code; it is refused unless this is true."""

    @model_validator(mode="after")
    def _pipes_opted_in(self) -> DataSection:
        for name, src in self.sources.items():
            if (
                src.shards is not None
                and src.shards.lstrip().startswith("pipe:")
                and not self.allow_pipe
            ):
                raise ValueError(
                    f"sources.{name}.shards is a pipe: command, which runs through the shell; "
                    "set data.allow_pipe: true if this study may run it"
                )
        return self

    @field_validator("sources", "filters")
    @classmethod
    def _slug_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        import re

        for name in value:
            if not re.fullmatch(SLUG, str(name)):
                raise ValueError(
                    f"name {name!r} is not a plain name (letters, digits, '_', '.', '-'); "
                    "it is used as a directory and must not escape the output directory"
                )
        return value


class Study(Frozen):
    name: str = Field(pattern=SLUG)
    """Study name: letters, digits, '_', '.', '-' (it names directories)."""
    description: str = ""
    """Free text (cosmetic: does not change cell uids)."""
    output_dir: str | None = None
    """Where cells, filters, results and reports go (default ``runs/<name>``, relative to the
    working directory). Cosmetic: does not change cell uids."""
    cluster: str = "local"
    """Cluster profile: a name in ``slurm/`` (e.g. ``local``, ``example-h100``) or a YAML path.
    Cosmetic: does not change cell uids."""
    executor: Literal["local", "slurm", "debug"] | None = None
    """Executor override; None: the profile's."""
    data: DataSection
    preset: str = "webdino"
    """Training preset (``webdino``: the paper's recipe; ``smoke``: CPU; ``test``)."""
    train: dict[str, Any] = {}
    """Overrides of the preset, nested or as dotted keys (``crops.global_size: 64``)."""
    grid: dict[str, Any]
    """Axes: ``model``, ``samples_seen``, ``data_filter``, optionally ``resolution`` (image side;
    above the base resolution a cell adapts the base cell) and any ``train.<field>``,
    ``eval.<name>.<field>`` or ``seed`` setting; each a list of values (or one value)."""
    zip: list[list[str]] = []
    """Groups of axes that vary together (equal lengths) instead of as a product."""
    include: list[dict[str, Any]] = []
    """Partial cells: extend the matching cells with extra settings, or add a cell (all axes given)."""
    exclude: list[dict[str, Any]] = []
    """Partial cells: remove every cell that matches (each entry must match at least one)."""
    evals: list[EvalConfig] = []
    """Evaluations run on every cell's final teacher."""
    adapt: dict[str, Any] = {}
    """Overrides of the preset's high-resolution adaptation recipe (cells whose ``resolution``
    is above the base's): ``iterations`` and any ``train`` field, nested or dotted."""
    seed: int = 0
    """Base seed of every cell (an axis may vary it)."""
    max_cells: int = Field(100_000, ge=1)
    """Most cells the grid may expand to (checked before expanding). Cosmetic: does not change
    cell uids; raise it for a study that really is that large."""
    comment: str | None = None
    """Free text (cosmetic)."""
