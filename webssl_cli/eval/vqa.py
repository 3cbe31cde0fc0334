"""The VQA evaluation of one cell: suite -> frozen features (once per image) -> stage 1 and 2
training -> greedy answers, cached per question -> per-benchmark and per-category scores.

Everything an interrupted run needs lives in ``eval/<name>.cache/``: ``settings.json`` (the
hash the cache belongs to; a different hash clears it), ``features.pt``, ``mllm.pt`` (the
trained adapter + LM), ``tokenizer/`` and ``predictions.jsonl`` (one line per answered
question, appended and fsynced batch by batch). A rerun loads what is there and answers only
the questions without a line.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from webssl_cli import device as dev
from webssl_cli.errors import UserError
from webssl_cli.eval import metrics as M
from webssl_cli.eval.benchmarks import Question, benchmark_scores, load_suite_dir
from webssl_cli.eval.features import extract, resolve_source
from webssl_cli.eval.mllm import MLLM, tiny_llama, train_stage
from webssl_cli.rundir import atomic_write_bytes, atomic_write_json
from webssl_cli.specs.evals import VqaEval

Example = tuple[str, str, str]  # (image key, prompt, answer)


def _from_conversations(convs: list[dict[str, Any]]) -> list[Example]:
    out = []
    for c in convs:
        turns = c["conversations"]
        for h, g in zip(turns[::2], turns[1::2], strict=False):
            prompt = h["value"].replace("<image>", "").strip()
            out.append((str(c["image"]), prompt, g["value"]))
    return out


def load_synthetic(
    cfg: VqaEval, spec: dict[str, Any]
) -> tuple[dict[str, bytes], list[Example], list[Example], list[Question], dict[str, float]]:
    """Images by key, stage-1 and stage-2 examples, test questions, majority baselines."""
    from webssl_cli.data.shards import iter_shards, list_shards
    from webssl_cli.eval.synth_vqa import build_suite, majority_baseline

    if cfg.dataset is not None:
        source = resolve_source(cfg.dataset, spec)
    else:
        sources = spec.get("sources") or {}
        name = next((n for n in ("synth-vqa", "synth-labelled") if n in sources), None)
        source = (
            resolve_source(name, spec)
            if name
            else str((spec.get("data") or {}).get("shards") or "")
        )
        if not source:
            raise UserError(
                "cell.json: the vqa eval needs a dataset: set evals[].dataset or a 'synth-vqa' source"
            )
    images: dict[str, bytes] = {}
    metas = []
    for s in iter_shards(list_shards(source)):
        meta = s.meta()
        if "kind" not in meta or s.image_bytes is None:
            continue
        meta.setdefault("key", s.key)
        images[str(meta["key"])] = s.image_bytes
        metas.append(meta)
        if cfg.max_images is not None and len(metas) >= cfg.max_images:
            break
    if not metas:
        raise UserError(
            f"{source}: no samples with synthetic ground truth (JSON 'kind', 'objects', ...)"
        )
    stage1, stage2, test = build_suite(
        metas, test_every=cfg.test_every, max_questions=cfg.max_questions
    )
    return (
        images,
        _from_conversations(stage1),
        _from_conversations(stage2),
        test,
        majority_baseline(stage2, test),
    )


def load_directory(
    root: Path, max_questions: int | None
) -> tuple[dict[str, bytes], list[Example], list[Example], list[Question], dict[str, float]]:
    """A benchmark directory: ``*.jsonl`` test questions and LLaVA-format ``train/stage1.json``
    and ``train/stage2.json`` (image paths relative to ``train/``)."""
    test = load_suite_dir(root)
    if max_questions is not None:
        per: dict[str, int] = {}
        test = [
            q
            for q in test
            if per.setdefault(q.benchmark, 0) < max_questions
            and not per.update({q.benchmark: per[q.benchmark] + 1})
        ]
    stages = []
    for name in ("stage1.json", "stage2.json"):
        path = root / "train" / name
        convs = json.loads(path.read_text()) if path.exists() else []
        for c in convs:
            c["image"] = str((root / "train" / c["image"]).resolve())
        stages.append(_from_conversations(convs))
    paths = {q.image for q in test} | {e[0] for s in stages for e in s}
    images = {}
    for p in paths:
        try:
            images[p] = Path(p).read_bytes()
        except OSError as exc:
            raise UserError(f"{p}: image unreadable ({exc})") from exc
    return images, stages[0], stages[1], test, {}


def _default_steps(n: int, batch: int) -> int:
    return max(1, -(-n // batch))  # one epoch, as LLaVA's stages


def run_vqa(
    cache: Path,
    cfg: VqaEval,
    encoder: Any,
    spec: dict[str, Any],
    image_size: int,
    settings_hash: str,
) -> dict[str, Any]:
    t0 = time.time()
    timings: dict[str, float] = {}
    if cfg.suite == "synthetic":
        images, stage1, stage2, test, chance = load_synthetic(cfg, spec)
    else:
        images, stage1, stage2, test, chance = load_directory(Path(cfg.suite), cfg.max_questions)
    if not test:
        raise UserError(f"vqa suite {cfg.suite!r}: no test questions")
    marker = cache / "settings.json"
    if marker.exists() and json.loads(marker.read_text()).get("settings_hash") != settings_hash:
        shutil.rmtree(cache)  # settings changed: nothing cached is valid
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"settings_hash": settings_hash})

    # 1. frozen features, once per image
    t = time.time()
    feat_path = cache / "features.pt"
    keys = sorted(images)
    if feat_path.exists():
        features = torch.load(feat_path, weights_only=True)
    else:
        f = extract(
            encoder,
            [images[k] for k in keys],
            image_size,
            batch_size=cfg.batch_size,
            keep_patches=True,
        )
        assert f.patches is not None
        features = {k: f.patches[i].clone() for i, k in enumerate(keys)}
        buf = io.BytesIO()
        torch.save(features, buf)
        atomic_write_bytes(feat_path, buf.getvalue())
    timings["features_s"] = time.time() - t

    # 2. the language model and the two training stages
    torch.manual_seed(cfg.seed)
    model_path, tok_dir = cache / "mllm.pt", cache / "tokenizer"
    if cfg.llm == "tiny":
        if tok_dir.exists():
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
        else:
            from webssl_cli.eval.tokenizer import train_word_tokenizer

            texts = [f"{p} answer: {a}" for _, p, a in stage1 + stage2] + [
                f"{q.prompt()} answer:" for q in test
            ]
            tokenizer = train_word_tokenizer(texts)
            tokenizer.save_pretrained(str(tok_dir))
        lm = tiny_llama(
            len(tokenizer), cfg.lm_width, cfg.lm_layers, cfg.lm_heads, max_len=cfg.tokens + 256
        )
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        lm_path = Path(cfg.llm)
        if not lm_path.exists():
            raise UserError(
                f"evals[].llm: {cfg.llm!r} is neither 'tiny' nor a local model directory"
            )
        tokenizer = AutoTokenizer.from_pretrained(str(lm_path))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        lm = AutoModelForCausalLM.from_pretrained(str(lm_path), attn_implementation="eager")
    vis_dim = next(iter(features.values())).shape[-1]
    model = MLLM(lm, tokenizer, vis_dim, cfg.tokens, cfg.adapter_depth).to(dev.pick_device())
    s1 = (
        cfg.stage1_steps
        if cfg.stage1_steps is not None
        else _default_steps(len(stage1), cfg.stage1_batch)
    )
    s2 = (
        cfg.stage2_steps
        if cfg.stage2_steps is not None
        else _default_steps(len(stage2), cfg.stage2_batch)
    )
    losses: dict[str, float] = {}
    if model_path.exists():
        state = torch.load(model_path, weights_only=True)
        model.adapter.load_state_dict(state["adapter"])
        model.lm.load_state_dict(state["lm"])
        losses = state.get("losses", {})
    else:
        t = time.time()
        model.lm.requires_grad_(False)
        losses["stage1"] = train_stage(
            model,
            stage1,
            features,
            list(model.adapter.parameters()),
            lr=cfg.stage1_lr,
            batch=cfg.stage1_batch,
            steps=s1,
            seed=cfg.seed,
        )
        timings["stage1_s"] = time.time() - t
        t = time.time()
        model.lm.requires_grad_(True)
        params = list(model.adapter.parameters()) + list(model.lm.parameters())
        losses["stage2"] = train_stage(
            model,
            stage2,
            features,
            params,
            lr=cfg.stage2_lr,
            batch=cfg.stage2_batch,
            steps=s2,
            seed=cfg.seed + 1,
        )
        timings["stage2_s"] = time.time() - t
        buf = io.BytesIO()
        torch.save(
            {"adapter": model.adapter.state_dict(), "lm": model.lm.state_dict(), "losses": losses},
            buf,
        )
        atomic_write_bytes(model_path, buf.getvalue())
    model.eval()

    # 3. greedy answers, cached per question
    t = time.time()
    pred_path = cache / "predictions.jsonl"
    predictions = read_predictions(pred_path)
    todo = [q for q in test if q.id not in predictions]
    generated = 0
    with open(pred_path, "a", encoding="utf-8") as out:
        for i in range(0, len(todo), cfg.batch_size):
            qs = todo[i : i + cfg.batch_size]
            patches = torch.stack([features[q.image] for q in qs])
            answers = model.generate(patches, [q.prompt() for q in qs], cfg.max_new_tokens)
            for q, a in zip(qs, answers, strict=True):
                predictions[q.id] = a
                out.write(json.dumps({"id": q.id, "prediction": a}) + "\n")
            out.flush()
            os.fsync(out.fileno())
            generated += len(qs)
    timings["generate_s"] = time.time() - t

    # 4. scores
    scores = benchmark_scores(test, predictions)
    category_of = {q.benchmark: q.category for q in test}
    counts: dict[str, int] = {}
    for q in test:
        counts[q.benchmark] = counts.get(q.benchmark, 0) + 1
    results = []
    for bench in sorted(scores):
        metric = next(q.metric for q in test if q.benchmark == bench)
        results.append(
            {
                "benchmark": bench,
                "category": category_of[bench],
                "metric": "perception_score" if bench == "MME" else metric,
                "value": scores[bench],
                "n": counts[bench],
            }
        )
    if all(b in M.BENCHMARK_CATEGORY for b in scores):
        pct = {b: (v if b == "MME" else 100.0 * v) for b, v in scores.items()}
        categories = {k: v / 100.0 for k, v in M.category_scores(pct).items()}
    else:
        categories = M.mean_by_category((category_of[b] or "Other", v) for b, v in scores.items())
    timings["total_s"] = time.time() - t0
    return {
        "results": results,
        "categories": categories,
        "timings": timings,
        "details": {
            "chance": chance,
            "losses": losses,
            "stage1_steps": s1,
            "stage2_steps": s2,
            "n_images": len(images),
            "n_test_questions": len(test),
            "generated_this_run": generated,
        },
    }


def read_predictions(path: Path) -> dict[str, str]:
    """Cached answers; a torn last line (the process died mid-write) is ignored."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # cut the torn line so that appends start clean
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                d = json.loads(line)
                out[str(d["id"])] = str(d["prediction"])
            except (ValueError, KeyError):
                continue
    return out
