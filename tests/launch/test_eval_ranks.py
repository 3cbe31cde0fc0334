"""What a study's jobs receive beyond the profile: the pipe opt-in, and how many ranks an
evaluation job runs (its VQA placement over the profile's eval resources)."""

from __future__ import annotations

from types import SimpleNamespace

from webssl_cli.launch.rounds import study_env


def test_jobs_learn_whether_pipes_may_run() -> None:
    allowed = SimpleNamespace(study=SimpleNamespace(data=SimpleNamespace(allow_pipe=True)))
    refused = SimpleNamespace(study=SimpleNamespace(data=SimpleNamespace(allow_pipe=False)))
    # "0" rather than nothing: a submitting shell's own WEBSSL_ALLOW_PIPE=1 does not leak in
    assert study_env(allowed) == {"WEBSSL_ALLOW_PIPE": "1"}
    assert study_env(refused) == {"WEBSSL_ALLOW_PIPE": "0"}


def test_vqa_eval_job_runs_the_profiles_tasks_when_its_placement_spreads() -> None:
    from webssl_cli.launch.executors import slurm_parameters
    from webssl_cli.launch.profiles import parse_profile

    cpu = parse_profile(
        "node: {cpus: 8}\neval: {tasks_per_node: 2, cpus_per_task: 1}\n", "p.yaml", "p"
    )
    for placement, tasks in (("auto", 2), ("ddp", 2), ("fsdp", 2), ("single", 1), (None, 1)):
        assert slurm_parameters(cpu, "eval", placement=placement)["ntasks_per_node"] == tasks
    gpu = parse_profile(
        "node: {gpus: 8}\neval: {nodes: 2, gpus_per_node: 8}\nmax_nodes: 2\n", "p.yaml", "p"
    )
    fsdp = slurm_parameters(gpu, "eval", placement="fsdp")
    assert (fsdp["nodes"], fsdp["ntasks_per_node"], fsdp["gpus_per_node"]) == (2, 8, 8)
    # a probe (or placement: single) takes one task on one node and one GPU of the eval resources
    probe = slurm_parameters(gpu, "eval")
    assert (probe["nodes"], probe["ntasks_per_node"], probe["gpus_per_node"]) == (1, 1, 1)


def test_local_executor_runs_an_eval_as_its_ranks(tmp_path) -> None:
    from webssl_cli.launch.executors import make_executor
    from webssl_cli.launch.profiles import parse_profile

    cpu = parse_profile("eval: {tasks_per_node: 2}\n", "p.yaml", "p")
    ex = make_executor("local", tmp_path, cpu, "eval", placement="auto")
    assert ex.parameters["tasks_per_node"] == 2
    ex = make_executor("local", tmp_path, cpu, "eval", placement=None)
    assert ex.parameters["tasks_per_node"] == 1


def test_plan_prices_vqa_on_the_eval_jobs_ranks() -> None:
    from webssl_cli.specs.evals import VqaEval
    from webssl_cli.study.vqa_cost import eval_world, price_vqa

    assert eval_world("auto", 8) == 8 and eval_world("single", 8) == 1 and eval_world(None, 8) == 1
    cfg = VqaEval(placement="auto", stage2_samples=1000)
    big = price_vqa(cfg, gpus=eval_world(cfg.placement, 8), gpu_memory_gb=80, peak_tflops=989,
                    mfu=0.4, shape=_llama8b())  # fmt: skip
    assert big["strategy"] == "fsdp" and big["gpus"] == 8
    one = price_vqa(cfg, gpus=eval_world("single", 8), gpu_memory_gb=80, peak_tflops=989,
                    mfu=0.4, shape=_llama8b())  # fmt: skip
    assert one["strategy"] == "single" and one["memory_bytes"] > big["memory_bytes"]


def _llama8b():  # Llama-3 8B's shape
    from webssl_cli.study.vqa_cost import LmShape

    return LmShape(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8,
                   vocab=128256, tied=False)  # fmt: skip
