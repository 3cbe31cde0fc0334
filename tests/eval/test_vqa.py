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
    from webssl_cli.eval import mllm, vqa_train
    cell, log, kill_after = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    real_generate, real_train = mllm.MLLM.generate, vqa_train.train_stage
    calls = []
    def generate(self, patches, prompts, max_new_tokens=16):
        out = real_generate(self, patches, prompts, max_new_tokens)
        calls.append(len(prompts))
        with open(log, "a") as f:
            f.write(json.dumps({"generated": len(prompts), "blind": patches is None}) + "\\n")
        if kill_after and len(calls) >= kill_after:
            # the answers of this batch are returned but never written: lost work, as in a real kill
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    def train_stage(model, examples, features, *a, **k):
        with open(log, "a") as f:
            f.write(json.dumps({"trained": 1, "blind": features is None}) + "\\n")
        return real_train(model, examples, features, *a, **k)
    mllm.MLLM.generate = generate
    vqa_train.train_stage = train_stage
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
    assert not any(e["blind"] for e in first)  # killed before the blind twin started
    assert len(done_before) == sum(e.get("generated", 0) for e in first[:-1])  # 2 batches written

    assert _run_child(tmp_path, cell, log2, kill_after=0) == 0
    second = [json.loads(line) for line in log2.read_text().splitlines()]
    # the trained MLLM came from the cache; only the blind twin (stage 2 alone) trained now
    assert [e["blind"] for e in second if "trained" in e] == [True]
    out = json.loads((cell / "eval" / "vqa.json").read_text())
    total = out["details"]["n_test_questions"]
    enc_gen = sum(e["generated"] for e in second if "generated" in e and not e["blind"])
    assert enc_gen == total - len(done_before)  # only the rest
    assert sum(e["generated"] for e in second if "generated" in e and e["blind"]) == total
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


def test_blind_sequences_have_no_image_tokens() -> None:
    """Without patches the sequence is [BOS] question "answer:" answer [EOS]: no visual
    positions at all (not zeroed ones), and the adapter is never called."""
    import torch

    from webssl_cli.eval.mllm import MLLM, tiny_llama
    from webssl_cli.eval.tokenizer import train_word_tokenizer

    tok = train_word_tokenizer(["what colour is it answer: red blue"])
    torch.manual_seed(0)
    model = MLLM(tiny_llama(len(tok), 16, 1, 2, 64), tok, vis_dim=8, tokens=4).eval()
    prompts, answers = ["what colour is it", "what"], ["red", "blue"]
    calls: list[int] = []
    model.adapter.register_forward_hook(lambda *_: calls.append(1))
    emb, mask, lab = model._layout(None, prompts, answers, left_pad=False)
    ids = [2] + list(tok("what colour is it answer: red", add_special_tokens=False).input_ids) + [3]
    assert emb.shape[1] == len(ids) and not calls
    assert torch.equal(emb[0], model.lm.get_input_embeddings()(torch.tensor(ids)))
    assert lab[0].tolist()[-2:] == ids[-2:] and mask[1].sum() == len(ids) - 3
    with_img, _, _ = model._layout(torch.randn(2, 16, 8), prompts, answers, left_pad=False)
    assert with_img.shape[1] == len(ids) + 4 and calls
    assert model.generate(None, prompts, max_new_tokens=2) == model.generate(
        None, prompts, max_new_tokens=2, use_hf=True
    )


def test_blind_twin_shared_by_two_cells_same_training_and_outcomes(
    tmp_path: Path, synth_shards: str, make_cell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cells of one study with different encoders: the blind twin trains once (stage 2 with
    the encoder's settings, examples in the same order, the same initial LM), the second cell
    reuses it; the per-question outcomes average to the reported scores."""
    import torch

    from webssl_cli.eval import vqa_train
    from webssl_cli.eval.run import run_eval
    from webssl_cli.outcomes import read_outcomes

    real_train = vqa_train.train_stage
    log: list[dict[str, Any]] = []

    def train_stage(
        model: Any, examples: Any, features: Any, params: Any, place: Any, **kw: Any
    ) -> float:
        trains_lm = any(p is q for p in params for q in model.lm.parameters())
        init = {k: v.clone() for k, v in model.lm.state_dict().items()} if trains_lm else None
        log.append({"blind": features is None, "examples": list(examples), "kw": kw, "lm": init})
        return float(real_train(model, examples, features, params, place, **kw))

    monkeypatch.setattr(vqa_train, "train_stage", train_stage)
    study = tmp_path / "study"
    a = make_cell(study, synth_shards, [TINY], seed=0)
    # a second cell (another encoder) beside the first in the study's cells/ directory
    b = make_cell(tmp_path / "other", synth_shards, [TINY], seed=1).rename(a.parent / "def456")
    out_a, out_b = run_eval(a, "vqa"), run_eval(b, "vqa")

    blind = [e for e in log if e["blind"]]
    assert len(blind) == 1  # computed once for the two cells
    assert len([e for e in log if not e["blind"]]) == 4  # two stages per encoder
    enc_stage2 = next(e for e in log if not e["blind"] and e["lm"] is not None)
    assert blind[0]["examples"] == enc_stage2["examples"] and blind[0]["kw"] == enc_stage2["kw"]
    assert all(torch.equal(blind[0]["lm"][k], v) for k, v in enc_stage2["lm"].items())
    shared = list((study / "shared" / "vqa-blind").glob("*/result.json"))
    assert len(shared) == 1 and (a / "eval" / "vqa.cache" / "blind.json").exists()

    for cell, out in ((a, out_a), (b, out_b)):
        rows = {(r.get("variant", "encoder"), r["benchmark"]): r["value"] for r in out["results"]}
        assert {v for v, _ in rows} == {"encoder", "blind"}
        means: dict[tuple[str, str], list[float]] = {}
        for o in read_outcomes(cell / "eval" / "vqa.examples.jsonl"):
            means.setdefault((o.variant, o.benchmark), []).append(o.value)
        assert set(means) == set(rows)
        for k, vals in means.items():
            assert sum(vals) / len(vals) == pytest.approx(rows[k], abs=1e-12)
    blind_a = [r for r in out_a["results"] if r.get("variant") == "blind"]
    assert blind_a == [r for r in out_b["results"] if r.get("variant") == "blind"]


def test_blind_twin_lock_computes_once_under_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent jobs on one key: one computes (holding the file lock), the others wait and
    read its result."""
    import threading
    import time

    from webssl_cli.eval import vqa
    from webssl_cli.specs.evals import VqaEval

    calls: list[int] = []

    def fake(
        root: Path, cfg: Any, features: Any, s1: Any, s2: Any, test: Any, timings: Any,
        ranks: Any,
    ) -> dict[str, Any]:  # fmt: skip
        calls.append(1)
        time.sleep(0.3)
        return {"predictions": {"q": "yes"}, "losses": {}, "stage1_steps": 0, "stage2_steps": 1}

    monkeypatch.setattr(vqa.vqa_train, "train_and_answer", fake)
    cfg = VqaEval()
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: results.append(vqa.blind_twin(tmp_path / "k", cfg, [], [], [])))
        for _ in range(3)
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 3
    assert all(r["predictions"] == {"q": "yes"} for r in results)


def test_synthetic_questions_per_image() -> None:
    """Several colour and position questions per image, with stable distinct ids; the first
    colour question is about the large shape; position answers follow the boxes."""
    from webssl_cli.eval.synth_vqa import questions_for

    meta = {
        "key": "k1", "kind": "natural", "width": 96, "height": 96, "has_text": False,
        "objects": [
            {"bbox": [0, 0, 10, 10], "color": "red", "shape": "circle"},
            {"bbox": [80, 0, 95, 10], "color": "blue", "shape": "square"},
            {"bbox": [20, 20, 70, 70], "color": "green", "shape": "star"},
        ],
    }  # fmt: skip
    one = [q for q in questions_for(meta, 1) if q.benchmark == "synth-color"]
    assert [(q.id, q.answers) for q in one] == [("synth-color/k1", ["green"])]
    qs = questions_for(meta, 2)
    color = [q for q in qs if q.benchmark == "synth-color"]
    assert [q.id for q in color] == ["synth-color/k1", "synth-color/k1/1"]
    assert color[0].answers == ["green"] and color[1].answers[0] in ("red", "blue")
    pos = [q for q in qs if q.benchmark == "synth-position"]
    assert len(pos) == 2 and len({q.id for q in qs}) == len(qs)
    x = {o["shape"]: (o["bbox"][0] + o["bbox"][2]) / 2 for o in meta["objects"]}  # type: ignore[index]
    for q in pos:
        a, b = (w for w in q.question.rstrip("?").split() if w in x)
        assert q.answers == ["left" if x[a] < x[b] else "right"]


def test_stage1_lm_and_stage2_captions_train_the_twin_alike(
    tmp_path: Path, synth_shards: str, make_cell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The small-LM recipe: stage 1 trains adapter + LM on the captions and the blind twin's LM
    on the same captions in the same order (no visual tokens); stage 2 mixes the captions in."""
    from webssl_cli.eval import vqa_train
    from webssl_cli.eval.run import run_eval

    real_train = vqa_train.train_stage
    log: list[dict[str, Any]] = []

    def train_stage(
        model: Any, examples: Any, features: Any, params: Any, place: Any, **kw: Any
    ) -> float:
        ids = {id(p) for p in params}
        log.append({
            "blind": features is None, "examples": list(examples), "kw": kw,
            "lm": all(id(p) in ids for p in model.lm.parameters()),
            "adapter": all(id(p) in ids for p in model.adapter.parameters()),
        })  # fmt: skip
        return float(real_train(model, examples, features, params, place, **kw))

    monkeypatch.setattr(vqa_train, "train_stage", train_stage)
    cfg = {**TINY, "stage1_lm": True, "stage2_captions": True, "stage2_steps": None}
    cell = make_cell(tmp_path / "study", synth_shards, [cfg])
    out = run_eval(cell, "vqa")
    enc = [e for e in log if not e["blind"]]
    blind = [e for e in log if e["blind"]]
    assert len(enc) == 2 and len(blind) == 2
    assert enc[0]["lm"] and enc[0]["adapter"] and blind[0]["lm"] and not blind[0]["adapter"]
    assert blind[0]["examples"] == enc[0]["examples"] and blind[0]["kw"] == enc[0]["kw"]
    captions = enc[0]["examples"]
    assert captions and all(p == "Describe the image briefly." for _, p, _ in captions)
    stage2 = enc[1]["examples"]
    assert stage2[-len(captions) :] == captions and len(stage2) > len(captions)
    assert blind[1]["examples"] == stage2
    # one epoch of the mixed examples by default
    assert enc[1]["kw"]["steps"] == -(-len(stage2) // cfg["stage2_batch"])
    assert out["details"]["blind"]["losses"]["stage1"] is not None
