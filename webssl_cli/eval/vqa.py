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
``settings.json`` (the hash the cache belongs to; a different hash clears it), ``features.pt``
or ``features/`` (the on-disk cache), ``train-stage1/`` and ``train-stage2/`` (checkpoints of
the stages under way), ``mllm.pt`` (the trained adapter + LM), ``tokenizer/`` and
``predictions.jsonl`` (one line per answered question, appended and fsynced batch by batch). A
rerun loads what is there, resumes a stage from its checkpoint and answers only the questions
without a line. Per-question outcomes of both variants go to ``eval/<name>.examples.jsonl``
(``webssl_cli.outcomes``).

The job's ranks share the work (``eval.vqa_dist``, ``eval.vqa_train``): features, both stages
and the answers are split over them and give what one process gives; rank 0 alone writes.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from webssl_cli.errors import UserError
from webssl_cli.eval import metrics as M
from webssl_cli.eval import vqa_train
from webssl_cli.eval.benchmarks import Question, example_values, load_directory
from webssl_cli.eval.feature_cache import disk_features
from webssl_cli.eval.features import extract
from webssl_cli.eval.synth_vqa import Example, load_synthetic
from webssl_cli.eval.vqa_dist import SINGLE, Ranks, barrier, file_lock, gather_dicts, share
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
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """Every rank of the job calls this; rank 0 writes the outcomes and the cache's files, and
    every rank returns the same result."""
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
    if (
        ranks.lead
        and marker.exists()
        and json.loads(marker.read_text()).get("settings_hash") != settings_hash
    ):
        shutil.rmtree(cache)  # settings changed: nothing cached is valid
    if ranks.lead:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"settings_hash": settings_hash})
    barrier(ranks)

    # 1. frozen features, once per image, spread over the ranks
    t = time.time()
    features = _features(cache, cfg, encoder, images, image_size, ranks)
    timings["features_s"] = time.time() - t

    # 2.-3. the encoder's MLLM: two training stages, greedy answers
    enc = vqa_train.train_and_answer(cache, cfg, features, stage1, stage2, test, timings, ranks)

    # 4. the blind twin, shared by the cells of a study
    t = time.time()
    key = blind_key(cfg, stage1, stage2, test)
    blind = blind_twin(blind_dir(cache, key), cfg, stage1, stage2, test, ranks)
    if ranks.lead:
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
    if ranks.lead:
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
            "ranks": ranks.world,
            "rank_source": ranks.source,
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
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """The twin's answers (computed here by the job's ranks, or waited for and read when
    another job holds the lock): {"predictions", "losses", "stage1_steps", "stage2_steps",
    "timings"}."""
    root.mkdir(parents=True, exist_ok=True)
    result = root / "result.json"
    with file_lock(root / ".lock", ranks):
        if share(ranks, result.exists()):
            return dict(read_json(result))
        timings: dict[str, float] = {}
        out = vqa_train.train_and_answer(root, cfg, None, stage1, stage2, test, timings, ranks)
        doc = {k: out[k] for k in ("predictions", "losses", "stage1_steps", "stage2_steps")}
        doc["timings"] = timings
        if ranks.lead:
            atomic_write_json(result, doc)
        barrier(ranks)
        return doc


def _features(
    cache: Path,
    cfg: VqaEval,
    encoder: Any,
    images: Mapping[str, bytes],
    image_size: int,
    ranks: Ranks,
) -> Mapping[str, torch.Tensor]:
    """The frozen patch features of every image, on every rank. On disk: shard ``s`` by rank
    ``s % world``. In memory: batch ``b`` of the sorted keys by rank ``b % world`` (the batches
    one process would run), gathered on every rank; rank 0 writes ``features.pt``."""
    keys = sorted(images)
    if cfg.feature_cache == "disk":  # sharded half-precision files, read an image at a time
        return disk_features(cache / "features", cfg, encoder, images, keys, image_size,
                             ranks.rank, ranks.world, lambda: barrier(ranks))  # fmt: skip
    feat_path = cache / "features.pt"
    if share(ranks, feat_path.exists()):
        return dict(torch.load(feat_path, weights_only=True))
    mine: dict[str, torch.Tensor] = {}
    starts = range(0, len(keys), cfg.batch_size)
    for b in ranks.mine(len(starts)):
        part = keys[starts[b] : starts[b] + cfg.batch_size]
        f = extract(encoder, [images[k] for k in part], image_size, batch_size=cfg.batch_size,
                    keep_patches=True)  # fmt: skip
        assert f.patches is not None
        mine.update({k: f.patches[i].clone() for i, k in enumerate(part)})
    features = gather_dicts(ranks, mine)
    features = {k: features[k] for k in keys}
    if ranks.lead:
        buf = io.BytesIO()
        torch.save(features, buf)
        atomic_write_bytes(feat_path, buf.getvalue())
    return features
