"""The VQA evaluation end to end on a tiny setting, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

TINY = {
    "task": "vqa", "tokens": 4, "lm_width": 32, "lm_layers": 1, "lm_heads": 2, "adapter_depth": 2,
    "stage1_steps": 2, "stage1_batch": 8, "stage1_lr": 1e-3, "stage2_steps": 4, "stage2_batch": 8,
    "stage2_lr": 1e-3, "max_questions": 4, "max_new_tokens": 3, "batch_size": 8, "max_images": 120,
}  # fmt: skip

# Runs run_eval in a child process whose generation SIGKILLs the process after ``kill_after``
# batches (no cleanup, no exception handlers: what a preempted job sees), and records how many
# questions each generate call answered.
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from webssl_cli.eval import mllm, vqa
    cell, log, kill_after = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    real_generate, real_train = mllm.MLLM.generate, vqa.train_stage
    calls = []
    def generate(self, patches, prompts, max_new_tokens=16):
        out = real_generate(self, patches, prompts, max_new_tokens)
        calls.append(len(prompts))
        with open(log, "a") as f:
            f.write(json.dumps({"generated": len(prompts)}) + "\\n")
        if kill_after and len(calls) >= kill_after:
            # the answers of this batch are returned but never written: lost work, as in a real kill
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    def train_stage(*a, **k):
        with open(log, "a") as f:
            f.write(json.dumps({"trained": 1}) + "\\n")
        return real_train(*a, **k)
    mllm.MLLM.generate = generate
    vqa.train_stage = train_stage
    from webssl_cli.eval.run import run_eval
    run_eval(cell, "vqa")
    """
)


def _run_child(tmp_path: Path, cell: Path, log: Path, kill_after: int) -> int:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script), str(cell), str(log), str(kill_after)], env=env, timeout=300
    ).returncode


def test_vqa_killed_midway_resumes_without_recomputing(
    tmp_path: Path, synth_shards: str, make_cell: Any
) -> None:
    cell = make_cell(tmp_path, synth_shards, [TINY])
    log1, log2 = tmp_path / "run1.jsonl", tmp_path / "run2.jsonl"
    rc = _run_child(tmp_path, cell, log1, kill_after=3)
    assert rc == -signal.SIGKILL
    assert not (cell / "eval" / "vqa.json").exists()
    preds = cell / "eval" / "vqa.cache" / "predictions.jsonl"
    done_before = {json.loads(line)["id"] for line in preds.read_text().splitlines()}
    first = [json.loads(line) for line in log1.read_text().splitlines()]
    assert sum(1 for e in first if "trained" in e) == 2  # both stages ran once
    assert len(done_before) == sum(e.get("generated", 0) for e in first[:-1])  # 2 batches written

    assert _run_child(tmp_path, cell, log2, kill_after=0) == 0
    second = [json.loads(line) for line in log2.read_text().splitlines()]
    assert not any("trained" in e for e in second)  # the trained MLLM came from the cache
    out = json.loads((cell / "eval" / "vqa.json").read_text())
    total = out["details"]["n_test_questions"]
    assert sum(e["generated"] for e in second) == total - len(done_before)  # only the rest
    assert out["details"]["generated_this_run"] == total - len(done_before)
    ids = [json.loads(line)["id"] for line in preds.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == total


def test_vqa_eval_contract(tmp_path: Path, synth_shards: str, make_cell: Any) -> None:
    from webssl_cli.eval.run import run_eval
    from webssl_cli.eval.synth_vqa import BENCHMARKS

    cell = make_cell(tmp_path, synth_shards, [{**TINY, "name": "vqa-tiny"}])
    out = run_eval(cell, "vqa-tiny")
    doc = json.loads((cell / "eval" / "vqa-tiny.json").read_text())
    assert doc["task"] == "vqa" and doc["name"] == "vqa-tiny"
    benches = {r["benchmark"] for r in doc["results"]}
    assert benches <= set(BENCHMARKS) and len(benches) >= 9
    assert set(doc["categories"]) == {
        "General",
        "Knowledge",
        "OCR & Chart",
        "Vision-Centric",
        "Average",
    }
    assert all(0.0 <= r["value"] <= 1.0 for r in doc["results"])
    assert out["settings"]["tokens"] == 4
    # a second run reuses every cached answer
    again = run_eval(cell, "vqa-tiny")
    assert again["details"]["generated_this_run"] == 0
    assert again["results"] == out["results"]


def test_greedy_loop_matches_transformers_generate() -> None:
    import torch

    from webssl_cli.eval.mllm import MLLM, tiny_llama
    from webssl_cli.eval.tokenizer import train_word_tokenizer

    tok = train_word_tokenizer(
        [f"what is shape {i} answer: word{i % 7} w{i % 3}" for i in range(50)]
    )
    torch.manual_seed(0)
    model = MLLM(tiny_llama(len(tok), 32, 2, 2, 64), tok, vis_dim=8, tokens=4).eval()
    patches = torch.randn(3, 16, 8)
    prompts = [
        "what is shape 1",
        "what is shape 22 what is",
        "shape",
    ]  # different lengths: left padding
    ours = model.generate(patches, prompts, max_new_tokens=5)
    ref = model.generate(patches, prompts, max_new_tokens=5, use_hf=True)
    assert ours == ref and any(ours)


def test_vqa_with_local_lm_directory(tmp_path: Path, synth_shards: str, make_cell: Any) -> None:
    """``llm: <path>``: a transformers causal LM + tokenizer saved locally (here a tiny Llama)."""
    from webssl_cli.eval.mllm import tiny_llama
    from webssl_cli.eval.run import run_eval
    from webssl_cli.eval.tokenizer import train_word_tokenizer

    tok = train_word_tokenizer(
        ["what kind of image is this? answer: photo sign chart document table yes no"]
    )
    lm_dir = tmp_path / "lm"
    tiny_llama(len(tok), 32, 1, 2, 128).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    cell = make_cell(tmp_path, synth_shards, [{**TINY, "llm": str(lm_dir)}])
    out = run_eval(cell, "vqa")
    assert out["settings"]["llm"] == str(lm_dir) and len(out["results"]) >= 9
