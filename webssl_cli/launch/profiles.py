"""Cluster profiles: where and how a study's jobs run (partition, GPUs per model size, limits).

A profile is a YAML file parsed into a frozen, closed model, like a study file: unknown keys
fail with the file, line and dotted field. Profiles live in ``slurm/<name>.yaml`` (the repo's
``slurm/`` folder, ``./slurm`` or the folders in ``$WEBSSL_PROFILES``), or a path is given.
The name ``local`` always exists: a built-in profile for the embedded local executor.

Nothing from a profile reaches a shell unchecked: every string that ends up in the sbatch
file is matched against a conservative pattern here (submitit shell-quotes values as well).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from webssl_cli.errors import UserError, did_you_mean
from webssl_cli.specs.base import Frozen

# A plain value that may reach sbatch (partition, account, qos, constraint, gres, ...).
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:@%/+=\-\[\]|&!]*$")
# Constraint expressions legitimately use & | ! [ ]; they are shell-quoted by submitit.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# One extra sbatch option: `--flag` or `--flag=value`, nothing a shell would interpret.
_SBATCH_LINE = re.compile(r"^--[a-z][a-z0-9\-]*(=[A-Za-z0-9_.,:@%/+=\-]+)?$")
# A setup line is a command run before the job (e.g. `module load cuda/12.4`): words made of
# safe characters only. No ; & | ` $ ( ) < > quotes, globs or newlines.
_SETUP_LINE = re.compile(r"^[A-Za-z0-9_.,:@%/+=\- ]+$")
SHELL_HINT = "only letters, digits and _ . , : @ % / + = - are allowed"


def check_safe(value: str, what: str, pattern: re.Pattern[str] = _SAFE_NAME) -> str:
    """Return ``value`` when it cannot inject shell into an sbatch file, else raise ValueError."""
    if not pattern.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} contains characters a shell would interpret; {SHELL_HINT}"
        )
    return value


class GpuSpec(Frozen):
    name: str = "none"
    """GPU model, for the plan (e.g. H100-SXM)."""
    peak_tflops: float = Field(default=0.0, ge=0)
    """Dense bf16 peak TFLOP/s of one GPU (H100/H200 SXM: 989); the plan's GPU-hours use it."""
    memory_gb: float = Field(default=0.0, ge=0)
    """Memory of one GPU in GB (the plan warns when a model does not fit)."""


class NodeSpec(Frozen):
    gpus: int = Field(default=0, ge=0)
    """GPUs per node the cluster has: no job may ask for more per node."""
    cpus: int = Field(default=128, ge=1)
    """CPU cores per node."""
    mem_gb: float = Field(default=1024.0, gt=0)
    """Memory per node in GB."""


class Resources(Frozen):
    nodes: int = Field(default=1, ge=1)
    """Nodes per job (training only: >1 means multi-node torch.distributed)."""
    gpus_per_node: int = Field(default=0, ge=0)
    """GPUs per node; one task (process) per GPU, or one task when 0."""
    tasks_per_node: int | None = Field(default=None, ge=1)
    """Processes (torch.distributed ranks) per node; None: one per GPU, or one without GPUs.
    Set it without GPUs for CPU ranks (gloo), e.g. to try multi-rank training on a CPU cluster;
    with GPUs it must equal gpus_per_node (one process per GPU). Training and VQA evaluations
    use several; a filter, a probe and a VQA evaluation with ``placement: single`` run one."""
    cpus_per_task: int = Field(default=1, ge=1)
    """CPU cores per task (data-loading workers + 1)."""
    mem_gb: float | None = Field(default=None, gt=0)
    """Memory per node in GB; None leaves the cluster default."""
    time_min: int = Field(default=60, ge=1)
    """Wall-clock limit per attempt in minutes (a timed-out training job checkpoints and requeues)."""

    @model_validator(mode="after")
    def _one_task_per_gpu(self) -> Resources:
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ValueError(
                f"tasks_per_node = {self.tasks_per_node} with gpus_per_node = {self.gpus_per_node}: "
                f"training runs one process per GPU; drop tasks_per_node or set it to {self.gpus_per_node}"
            )
        return self

    @property
    def tasks(self) -> int:
        """Tasks (processes) per node: tasks_per_node, else one per GPU, else one."""
        return self.tasks_per_node or max(1, self.gpus_per_node)


class Profile(Frozen):
    name: str = "local"
    """Profile name (the file name without .yaml)."""
    description: str = ""
    partition: str | None = None
    """SLURM partition (None: the cluster's default partition)."""
    account: str | None = None
    """SLURM account to charge."""
    qos: str | None = None
    """SLURM quality of service."""
    constraint: str | None = None
    """SLURM node constraint, e.g. 'h100'."""
    node: NodeSpec = NodeSpec()
    """What one node of the cluster has."""
    max_nodes: int = Field(default=1, ge=1)
    """Most nodes one job may use."""
    gpu: GpuSpec = GpuSpec()
    """The GPU, for the plan."""
    train: dict[str, Resources] = {"default": Resources()}
    """Training resources per model size (registry name, or 'default' for any other size)."""
    filter: Resources = Resources(time_min=60)
    """Resources of one filter array task (a shard group)."""
    eval: Resources = Resources(time_min=60)
    """Resources of one evaluation job. A VQA evaluation whose placement spreads (auto, ddp,
    fsdp) runs one rank per task of them; the probes and ``placement: single`` run one task on
    one node with at most one GPU."""
    sbatch_extra: list[str] = []
    """Extra sbatch options, each '--flag' or '--flag=value' (checked: no shell metacharacters)."""
    setup: list[str] = []
    """Commands run in the job script before the job (e.g. 'module load cuda/12.4'); plain words only."""
    max_timeouts: int = Field(default=20, ge=0)
    """How often one training job may time out or be preempted and requeue itself."""
    signal_delay_s: int = Field(default=120, ge=10)
    """Seconds before the time limit at which SLURM sends USR2 (checkpoint, then requeue)."""
    array_throttle: int = Field(default=64, ge=1)
    """Most tasks of one job array running at once (sbatch --array=...%N)."""
    filter_shards_per_task: int = Field(default=16, ge=1)
    """Shards one filter array task handles; a filter over more shards becomes a job array."""
    max_array_size: int = Field(default=1001, ge=2)
    """The cluster's MaxArraySize: larger arrays are split into several."""
    max_parallel: int = Field(default=2, ge=1)
    """Local executor: most jobs running at once on this machine."""
    python: str | None = None
    """Python command on the compute nodes (None: this interpreter)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where jobs compute: 'auto' (CUDA when a GPU is visible, else CPU), 'cpu' or 'cuda';
    jobs receive it as WEBSSL_DEVICE."""
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    """Autocast precision of jobs: 'auto' (bf16 on CUDA, fp32 on CPU), 'bf16' or 'fp32'; jobs
    receive it as WEBSSL_DTYPE. A study's explicit train.dtype wins over it for training."""

    @field_validator("partition", "account", "qos")
    @classmethod
    def _plain(cls, v: str | None) -> str | None:
        return None if v is None else check_safe(v, "value")

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, v: str | None) -> str | None:
        return None if v is None else check_safe(v, "constraint", _SAFE_VALUE)

    @field_validator("sbatch_extra")
    @classmethod
    def _sbatch(cls, v: list[str]) -> list[str]:
        for line in v:
            if not _SBATCH_LINE.fullmatch(line):
                raise ValueError(
                    f"sbatch option {line!r} is not '--flag' or '--flag=value' of plain characters; {SHELL_HINT}"
                )
        return v

    @field_validator("setup")
    @classmethod
    def _setup(cls, v: list[str]) -> list[str]:
        for line in v:
            check_safe(line, "setup line", _SETUP_LINE)
        return v

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        return None if v is None else check_safe(v, "python", _SETUP_LINE)

    @field_validator("train")
    @classmethod
    def _sizes(cls, v: dict[str, Resources]) -> dict[str, Resources]:
        from webssl_cli.specs.registry import MODELS, resolve_model_name

        out: dict[str, Resources] = {}
        for key, res in v.items():
            if key == "default":
                out[key] = res
                continue
            try:
                out[resolve_model_name(key)] = res
            except Exception:
                raise ValueError(
                    f"unknown model size {key!r}{did_you_mean(key, list(MODELS))}; valid: default, {', '.join(MODELS)}"
                ) from None
        return out

    @model_validator(mode="after")
    def _fits(self) -> Profile:
        stages: list[tuple[str, Resources]] = [(f"train.{k}", r) for k, r in self.train.items()]
        stages += [("filter", self.filter), ("eval", self.eval)]
        for where, res in stages:
            if where == "filter" and res.tasks_per_node not in (None, 1):
                raise ValueError(
                    f"{where}.tasks_per_node = {res.tasks_per_node}: only training and "
                    f"evaluation run several processes per node; remove it"
                )
            if res.gpus_per_node > self.node.gpus:
                raise ValueError(
                    f"{where}.gpus_per_node = {res.gpus_per_node} but a node has {self.node.gpus} GPUs "
                    f"(node.gpus); ask for at most {self.node.gpus} per node and use more nodes"
                )
            if res.nodes > self.max_nodes:
                raise ValueError(
                    f"{where}.nodes = {res.nodes} exceeds max_nodes = {self.max_nodes}"
                )
            if res.cpus_per_task * res.tasks > self.node.cpus:
                raise ValueError(
                    f"{where}: {res.cpus_per_task} CPUs per task x {res.tasks} tasks "
                    f"exceeds node.cpus = {self.node.cpus}"
                )
        return self

    def job_env(self) -> dict[str, str]:
        """Environment variables every job of this profile runs with (the device module reads
        them); a setting left at 'auto' sets nothing, so the job's own environment decides."""
        env = {"WEBSSL_DEVICE": self.device, "WEBSSL_DTYPE": self.dtype}
        return {k: v for k, v in env.items() if v != "auto"}

    def eval_resources(self, placement: str | None) -> Resources:
        """Resources of the evaluation job of a VQA evaluation with ``placement`` (None: a
        probe): the profile's ``eval``, reduced to one task for one-rank evaluations."""
        from webssl_cli.study.vqa_cost import eval_world

        res = self.eval
        if eval_world(placement, res.nodes * res.tasks) > 1:
            return res
        return res.model_copy(
            update={"nodes": 1, "tasks_per_node": None, "gpus_per_node": min(1, res.gpus_per_node)}
        )

    def train_resources(self, model: str) -> Resources:
        """Resources of the training job for a model size (its own entry, else 'default')."""
        from webssl_cli.specs.registry import resolve_model_name

        with contextlib.suppress(Exception):
            model = resolve_model_name(model)
        return self.train.get(model, self.train.get("default", Resources()))


# ---- loading -------------------------------------------------------------------------------


def _search_dirs(extra: Path | None = None) -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("WEBSSL_PROFILES", "").split(os.pathsep) if p]
    if extra is not None:
        dirs += [extra / "slurm", extra.parent / "slurm"]
    dirs += [Path.cwd() / "slurm", Path(__file__).resolve().parents[2] / "slurm"]
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def available_profiles(near: Path | None = None) -> list[str]:
    names = {"local"}
    for d in _search_dirs(near):
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_profile(name: str, near: Path | None = None) -> Path | None:
    """The YAML file of profile ``name`` (a name or a path), or None for the built-in 'local'."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"--profile: {name}: no such file")
        return path
    check_name = _SAFE_NAME.fullmatch(name)
    for d in _search_dirs(near):
        cand = d / f"{name}.yaml"
        if check_name and cand.is_file():
            return cand
    if name == "local":
        return None
    valid = available_profiles(near)
    raise UserError(
        f"cluster profile {name!r} not found{did_you_mean(name, valid)}; valid: {', '.join(valid)} "
        f"(profiles are slurm/<name>.yaml, or give a path)"
    )


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at pydantic location ``loc``, as far as it exists."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if nxt is None:
                # An unknown key: point at the key itself.
                key = next(
                    (k for k, _ in node.value if getattr(k, "value", None) == str(part)), None
                )
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def _model_at(loc: tuple[Any, ...]) -> type[Frozen]:
    """The model class that holds the field at ``loc`` (dict keys such as model sizes skipped)."""
    model: type[Frozen] = Profile
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, Frozen):
            model = ann
        elif str(part) == "train":
            model = Resources
    return model


def parse_profile(text: str, source: str, name: str) -> Profile:
    """Parse profile YAML text; every problem is a one-line UserError naming file:line: field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise UserError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(
            f"{source}:1: a profile is a mapping of settings, not {type(data).__name__}"
        )
    data.setdefault("name", name)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        # Validators on a field report the field; model validators report the whole file.
        line = _line_of(root, loc)
        dotted = ".".join(str(p) for p in loc) or "profile"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            valid = sorted(_model_at(loc[:-1]).model_fields)
            msg = f"unknown field{did_you_mean(str(loc[-1]), valid)}; valid fields: {', '.join(valid)}"
        raise UserError(f"{source}:{line or 1}: {dotted}: {msg}") from None


def load_profile(name: str, near: Path | None = None) -> Profile:
    """Load profile ``name`` (or a path); ``local`` falls back to the built-in profile."""
    path = find_profile(name, near)
    if path is None:
        return Profile(name="local", description="built-in: this machine")
    from webssl_cli.study.yamlfile import check_yaml_aliases, check_yaml_text

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the profile as UTF-8"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the profile: {exc.strerror}") from None
    check_yaml_text(text, path, "profile")
    check_yaml_aliases(text, path)
    return parse_profile(text, str(path), path.stem)


ExecutorName = Literal["local", "slurm", "debug"]
