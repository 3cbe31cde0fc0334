"""The VQA evaluation of one cell: suite -> frozen features (once per image) -> stage 1 and 2
training -> greedy answers, cached per question -> per-benchmark and per-category scores, each
beside its blind twin's.

The blind twin is the same MLLM (same LM init seed, stages, steps, data order) trained and
asked the same questions with no visual tokens at all: what the language model answers from
the question alone. A score counts as the encoder's only as its gain over the twin. The twin
does not depend on the encoder, so the cells of a study share it: it is computed once per key
(suite content, LM and training settings, seed) in ``<study>/shared/vqa-blind/<key>/`` (outside
a study: ``eval/vqa-blind/<key>/``) under a file lock, and each cell copies its answers.

Everything an interrupted run needs lives in ``eval/<name>.cache/`` (and the twin's directory):
``settings.json`` (the hash the cache belongs to; a different hash clears it), ``features.pt``,
``mllm.pt`` (the trained adapter + LM), ``tokenizer/`` and ``predictions.jsonl`` (one line per
answered question, appended and fsynced batch by batch). A rerun loads what is there and
answers only the questions without a line. Per-question outcomes of both variants go to
``eval/<name>.examples.jsonl`` (``webssl_cli.outcomes``).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from webssl_cli import device as dev
from webssl_cli.errors import UserError
from webssl_cli.eval import metrics as M
from webssl_cli.eval.benchmarks import Question, example_values, load_directory
from webssl_cli.eval.chat import Conversation, chat_generate, has_template
from webssl_cli.eval.feature_cache import disk_features
from webssl_cli.eval.features import extract
from webssl_cli.eval.mllm import MLLM, tiny_llama, train_stage
from webssl_cli.eval.mllm_dist import train_stage_chat
from webssl_cli.eval.synth_vqa import Example, load_synthetic
from webssl_cli.outcomes import Outcome, examples_path, write_outcomes
from webssl_cli.rundir import atomic_write_bytes, atomic_write_json, read_json
from webssl_cli.specs.evals import VqaEval

# Settings that change the encoder's side only (with how its features are stored, and what
# only the plan reads); everything else keys the blind twin.
_ENCODER_ONLY = ("name", "threads", "encoder", "image_size", "dataset", "max_images",
                 "feature_cache", "feature_dtype", "feature_shard", "stage1_samples",
                 "stage2_samples", "plan_text_tokens")  # fmt: skip


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
        images, stage1, stage2, test = load_directory(Path(cfg.suite), cfg.max_questions)
        chance = {}
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
    features: Mapping[str, torch.Tensor]
    if cfg.feature_cache == "disk":  # sharded half-precision files, read an image at a time
        features = disk_features(cache / "features", cfg, encoder, images, keys, image_size)
    elif feat_path.exists():
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

    # 2.-3. the encoder's MLLM: two training stages, greedy answers
    enc = _train_and_answer(cache, cfg, features, stage1, stage2, test, timings)

    # 4. the blind twin, shared by the cells of a study
    t = time.time()
    key = blind_key(cfg, stage1, stage2, test)
    blind = blind_twin(blind_dir(cache, key), cfg, stage1, stage2, test)
    atomic_write_json(cache / "blind.json", blind)  # the cell's own copy
    timings["blind_s"] = time.time() - t

    # 5. scores and per-question outcomes of both variants
    values = {
        "encoder": example_values(test, enc["predictions"]),
        "blind": example_values(test, blind["predictions"]),
    }
    outcomes = [
        Outcome(variant, bench, ex, v)
        for variant, per in values.items()
        for bench, exs in per.items()
        for ex, v in exs.items()
    ]
    write_outcomes(examples_path(cache.with_name(cache.name.removesuffix(".cache") + ".json")),
                   outcomes)  # fmt: skip
    rows, cats = {}, {}
    for variant, per in values.items():
        rows[variant], cats[variant] = _scores(test, per, variant)
    gains = {
        "benchmarks": {
            r["benchmark"]: r["value"] - b["value"]
            for r, b in zip(rows["encoder"], rows["blind"], strict=True)
        },
        "categories": {c: v - cats["blind"][c] for c, v in cats["encoder"].items()},
    }
    timings["total_s"] = time.time() - t0
    return {
        "results": rows["encoder"] + rows["blind"],
        "categories": cats["encoder"],
        "categories_by_variant": {"blind": cats["blind"]},
        "gains": gains,
        "timings": timings,
        "details": {
            "chance": chance,
            "losses": enc["losses"],
            "stage1_steps": enc["stage1_steps"],
            "stage2_steps": enc["stage2_steps"],
            "n_images": len(images),
            "n_test_questions": len(test),
            "generated_this_run": enc["generated"],
            "blind": {"key": key, "losses": blind["losses"], "timings": blind["timings"]},
        },
    }


def _scores(
    test: list[Question], per: dict[str, dict[str, float]], variant: str
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    scores = {b: sum(v.values()) / len(v) for b, v in per.items()}
    category_of = {q.benchmark: q.category for q in test}
    metric_of = {q.benchmark: q.metric for q in test}
    counts: dict[str, int] = {}
    for q in test:
        counts[q.benchmark] = counts.get(q.benchmark, 0) + 1
    rows = []
    for bench in sorted(scores):
        row = {
            "benchmark": bench,
            "category": category_of[bench],
            "metric": _METRIC_NAME.get(bench, metric_of[bench]),
            "value": scores[bench],
            "n": counts[bench],
        }
        if variant != "encoder":
            row["variant"] = variant
        rows.append(row)
    if all(b in M.BENCHMARK_CATEGORY for b in scores):
        # the paper's aggregation, every benchmark as a fraction (MME / 2000, OCRBench / 1000)
        categories = M.mean_by_category(
            (M.BENCHMARK_CATEGORY[b], M.as_fraction(b, v)) for b, v in scores.items()
        )
    else:
        categories = M.mean_by_category((category_of[b] or "Other", v) for b, v in scores.items())
    return rows, categories


# the two benchmarks stored on their authors' scales (``metrics.NATIVE_SCALE``) say so
_METRIC_NAME = {"MME": "perception_score", "OCRBench": "ocrbench_score"}


# ---- the blind twin ------------------------------------------------------------------------------
def blind_key(
    cfg: VqaEval, stage1: list[Example], stage2: list[Example], test: list[Question]
) -> str:
    """What the twin's answers depend on: the LM and training settings and the suite's text
    (training examples in order, test questions), never the encoder or the images."""
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _ENCODER_ONLY}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for part in (stage1, stage2, [(q.id, q.prompt(), q.answers) for q in test]):
        h.update(json.dumps(part).encode())
    return h.hexdigest()[:16]


def blind_dir(cache: Path, key: str) -> Path:
    """``cells/<uid>/eval/<name>.cache`` -> ``<study>/shared/vqa-blind/<key>``; a cell outside
    a study keeps its twin in its own eval directory."""
    cell = cache.parent.parent
    if cell.parent.name == "cells":
        return cell.parent.parent / "shared" / "vqa-blind" / key
    return cache.parent / "vqa-blind" / key


def blind_twin(
    root: Path,
    cfg: VqaEval,
    stage1: list[Example],
    stage2: list[Example],
    test: list[Question],
) -> dict[str, Any]:
    """The twin's answers (computed here, or waited for and read when another job holds the
    lock): {"predictions", "losses", "stage1_steps", "stage2_steps", "timings"}."""
    root.mkdir(parents=True, exist_ok=True)
    result = root / "result.json"
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or by the kernel if killed
        if result.exists():
            return dict(read_json(result))
        timings: dict[str, float] = {}
        out = _train_and_answer(root, cfg, None, stage1, stage2, test, timings)
        doc = {k: out[k] for k in ("predictions", "losses", "stage1_steps", "stage2_steps")}
        doc["timings"] = timings
        atomic_write_json(result, doc)
        return doc


# ---- training and answering ----------------------------------------------------------------------
def _default_steps(n: int, batch: int) -> int:
    return max(1, -(-n // batch))  # one epoch, as LLaVA's stages


def _tokenizer_and_lm(cache: Path, cfg: VqaEval, texts: list[str]) -> tuple[Any, torch.nn.Module]:
    torch.manual_seed(cfg.seed)  # the LM's init: identical for the encoder and its blind twin
    if cfg.llm == "tiny":
        tok_dir = cache / "tokenizer"
        if tok_dir.exists():
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
        else:
            from webssl_cli.eval.tokenizer import train_word_tokenizer

            tokenizer = train_word_tokenizer(texts)
            tokenizer.save_pretrained(str(tok_dir))
        lm = tiny_llama(
            len(tokenizer), cfg.lm_width, cfg.lm_layers, cfg.lm_heads, max_len=cfg.tokens + 256
        )
        return tokenizer, lm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_path = Path(cfg.llm)
    if not lm_path.exists():
        raise UserError(f"evals[].llm: {cfg.llm!r} is neither 'tiny' nor a local model directory")
    tokenizer = AutoTokenizer.from_pretrained(str(lm_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, AutoModelForCausalLM.from_pretrained(
        str(lm_path), attn_implementation="eager"
    )


def _train_and_answer(
    cache: Path,
    cfg: VqaEval,
    features: Mapping[str, torch.Tensor] | None,
    stage1: list[Example],
    stage2: list[Example],
    test: list[Question],
    timings: dict[str, float],
) -> dict[str, Any]:
    """Train (or load) the MLLM in ``cache`` and answer every test question not yet answered
    there. ``features`` None: the blind twin. Stage 1 trains only the adapter unless
    ``stage1_lm``; the twin has no adapter, so without ``stage1_lm`` its LM would stay frozen
    there and it skips the stage (the same model results); with it, the twin's LM trains on
    the same captions in the same order, without visual tokens."""
    texts = [f"{p} answer: {a}" for _, p, a in stage1 + stage2] + [
        f"{q.prompt()} answer:" for q in test
    ]
    tokenizer, lm = _tokenizer_and_lm(cache, cfg, texts)
    # the LM's own chat template when it has one: conversations laid out by eval.chat
    use_chat = cfg.chat_template and has_template(tokenizer)
    fit = train_stage_chat if use_chat else train_stage
    vis_dim = 1 if features is None else next(iter(features.values())).shape[-1]
    model = MLLM(lm, tokenizer, vis_dim, cfg.tokens, cfg.adapter_depth).to(dev.pick_device())
    s1 = (
        cfg.stage1_steps
        if cfg.stage1_steps is not None
        else _default_steps(len(stage1), cfg.stage1_batch)
    )
    if features is None and not cfg.stage1_lm:
        s1 = 0
    examples2 = stage2 + stage1 if cfg.stage2_captions else stage2
    s2 = (
        cfg.stage2_steps
        if cfg.stage2_steps is not None
        else _default_steps(len(examples2), cfg.stage2_batch)
    )
    model_path = cache / "mllm.pt"
    losses: dict[str, float | None] = {}
    if model_path.exists():
        state = torch.load(model_path, weights_only=True)
        model.adapter.load_state_dict(state["adapter"])
        model.lm.load_state_dict(state["lm"])
        losses = state.get("losses", {})
    else:
        if s1 > 0:
            t = time.time()
            model.lm.requires_grad_(cfg.stage1_lm)
            params1 = [] if features is None else list(model.adapter.parameters())
            if cfg.stage1_lm:
                params1 += list(model.lm.parameters())
            loss1 = fit(model, stage1, features, params1, lr=cfg.stage1_lr,
                        batch=cfg.stage1_batch, steps=s1, seed=cfg.seed)  # fmt: skip
            losses["stage1"] = None if math.isnan(loss1) else loss1
            timings["stage1_s"] = time.time() - t
        t = time.time()
        model.lm.requires_grad_(True)
        params = list(model.lm.parameters())
        if features is not None:
            params = list(model.adapter.parameters()) + params
        loss2 = fit(model, examples2, features, params, lr=cfg.stage2_lr,
                            batch=cfg.stage2_batch, steps=s2, seed=cfg.seed + 1)  # fmt: skip
        losses["stage2"] = None if math.isnan(loss2) else loss2
        timings["stage2_s"] = time.time() - t
        buf = io.BytesIO()
        torch.save(
            {"adapter": model.adapter.state_dict(), "lm": model.lm.state_dict(), "losses": losses},
            buf,
        )
        atomic_write_bytes(model_path, buf.getvalue())
    model.eval()

    t = time.time()
    pred_path = cache / "predictions.jsonl"
    predictions = read_predictions(pred_path)
    todo = [q for q in test if q.id not in predictions]
    with open(pred_path, "a", encoding="utf-8") as out:
        for i in range(0, len(todo), cfg.batch_size):
            qs = todo[i : i + cfg.batch_size]
            patches = None if features is None else torch.stack([features[q.image] for q in qs])
            if use_chat:
                convs = [
                    Conversation.qa(None if patches is None else q.image, q.prompt()) for q in qs
                ]
                rows = [None] * len(qs) if patches is None else list(patches)
                answers = chat_generate(model, convs, rows, cfg.max_new_tokens)
            else:
                answers = model.generate(patches, [q.prompt() for q in qs], cfg.max_new_tokens)
            for q, a in zip(qs, answers, strict=True):
                predictions[q.id] = a
                out.write(json.dumps({"id": q.id, "prediction": a}) + "\n")
            out.flush()
            os.fsync(out.fileno())
    timings["generate_s"] = time.time() - t
    return {"predictions": predictions, "losses": losses, "stage1_steps": s1,
            "stage2_steps": s2, "generated": len(todo)}  # fmt: skip


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
