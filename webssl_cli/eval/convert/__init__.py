"""Published benchmark layouts -> webssl's benchmark JSONL (``benchmarks.Question``), one
converter per layout a user downloads (the benchmark's own release, or VLMEvalKit's TSV), and
prediction files for scoring.

=============  =========================================================  ======================
layout         source                                                     benchmark(s)
=============  =========================================================  ======================
mme            MME_Benchmark_release_version/                             MME
vlmeval-tsv    a VLMEvalKit TSV (``--benchmark``; ``--circular``)         MMBench, SEED, AI2D,
                                                                          ScienceQA, RealWorldQA,
                                                                          MME
seed           SEED-Bench.json (images: SEED-Bench-image/)                SEED
gqa            testdev_balanced_questions.json (images: images/)          GQA
scienceqa      problems.json (images: images/test/<pid>/)                 ScienceQA (IMG)
mmmu           an MMMU parquet file or folder of them                     MMMU
mathvista      testmini JSON (images relative to its folder)              MathVista
chartqa        ChartQA's test/ folder                                     ChartQA
ocrbench       OCRBench.json (images: OCRBench_Images/)                   OCRBench
vqa            VQA v2 questions JSON (``--annotations``) or TextVQA JSON  TextVQA, VQAv2
docvqa         val_v1.0.json (images relative to its folder)              DocVQA
mmvp           the MMVP folder (Questions.csv, MMVP Images/)              MMVP
realworldqa    RealWorldQA's parquet file(s) (image, question, answer)    RealWorldQA
cvbench        CV-Bench's test.jsonl (beside img/)                        CV-Bench-2D, -3D
=============  =========================================================  ======================

Classic vision (``convert.dense``: shards for the segmentation, depth, knn and linear probes):
``ade20k`` (ADEChallengeData2016/), ``nyuv2`` (nyu_train.txt / nyu_test.txt index files) and
``class-folder`` (ImageNet-style train/<class>/, val/<class>/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.eval import benchmarks as B
from webssl_cli.eval import metrics as M
from webssl_cli.eval.convert import general, knowledge, ocr, vision
from webssl_cli.eval.convert.dense import SHARD_LAYOUTS, convert_to_shards

__all__ = ["LAYOUTS", "SHARD_LAYOUTS", "convert", "convert_to_shards"]

LAYOUTS = ("mme", "vlmeval-tsv", "seed", "gqa", "scienceqa", "mmmu", "mathvista", "chartqa",
           "ocrbench", "vqa", "docvqa", "mmvp", "realworldqa", "cvbench")  # fmt: skip


def convert(
    layout: str,
    source: Path,
    out: Path,
    *,
    benchmark: str | None = None,
    image_dir: Path | None = None,
    annotations: Path | None = None,
    circular: bool = False,
    image_pattern: str = "{image_id}.jpg",
) -> list[B.Question]:
    """The questions of ``source`` in ``layout``. ``image_dir``: where the layout's images are
    (or, for layouts embedding them, where they are written; default ``<out dir>/images``)."""
    if layout not in LAYOUTS:
        raise UserError(f"--layout {layout!r}: valid: {', '.join(LAYOUTS + SHARD_LAYOUTS)}")
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    near = source if source.is_dir() else source.parent
    written = image_dir or out.parent / "images" / (benchmark or layout)
    if layout == "mme":
        return general.convert_mme(source)
    if layout == "vlmeval-tsv":
        if not benchmark:
            raise UserError("--layout vlmeval-tsv: give --benchmark (MMBench, SEED, AI2D, ...)")
        return general.convert_vlmeval_tsv(source, written, benchmark, circular)
    if layout == "seed":
        seed_dir = next((near / d for d in ("SEED-Bench-image", "seed_bench_image")
                         if (near / d).is_dir()), near / "SEED-Bench-image")  # fmt: skip
        return general.convert_seed(source, image_dir or seed_dir)
    if layout == "gqa":
        return general.convert_gqa(source, image_dir or near / "images")
    if layout == "scienceqa":
        return knowledge.convert_scienceqa(source, image_dir or near / "images")
    if layout == "mmmu":
        return knowledge.convert_mmmu(source, written)
    if layout == "mathvista":
        return knowledge.convert_mathvista(source, image_dir or near)
    if layout == "chartqa":
        return ocr.convert_chartqa(source)
    if layout == "ocrbench":
        return ocr.convert_ocrbench(source, image_dir or near / "OCRBench_Images")
    if layout == "docvqa":
        return ocr.convert_docvqa(source, image_dir or near)
    if layout == "mmvp":
        return vision.convert_mmvp(source)
    if layout == "realworldqa":
        return vision.convert_realworldqa(source, written)
    if layout == "cvbench":
        return vision.convert_cvbench(source)
    # vqa: the questions file, and its annotations (TextVQA's one file holds both)
    return ocr.convert_vqa(source, annotations or source, image_dir or near / "images",
                           benchmark or "TextVQA", image_pattern)  # fmt: skip


def read_predictions(path: Path) -> dict[str, str]:
    """A prediction file: ``*.jsonl`` lines ``{"id": ..., "prediction": ...}``, or else a JSON
    object ``{question id: answer}``. An empty file holds no predictions."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not text.strip():
        return {}
    if path.suffix != ".jsonl":
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise UserError(
                f"{path}: not JSON ({exc}); give {{id: answer}} or .jsonl lines"
            ) from exc
        if not isinstance(obj, dict):
            raise UserError(f"{path}: expected a JSON object {{question id: answer}}")
        return {str(k): str(v) for k, v in obj.items()}
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["id"])] = str(row["prediction"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f'{path}:{n}: not {{"id": ..., "prediction": ...}} ({exc!r})') from exc
    return out


def score_predictions(
    questions: list[B.Question], predictions: dict[str, str]
) -> tuple[dict[str, float], int]:
    """Per-benchmark scores (``benchmarks.benchmark_scores``: fractions, MME out of 2000), a
    question without a prediction counting as an empty answer; and how many had none."""
    missing = sum(q.id not in predictions for q in questions)
    full = {q.id: predictions.get(q.id, "") for q in questions}
    return B.benchmark_scores(questions, full), missing


def breakdowns(questions: list[B.Question], predictions: dict[str, str]) -> dict[str, Any]:
    """The reports the benchmarks' own tools print: MME's accuracy and accuracy+ per sub-task
    (and cognition), OCRBench's counts per category, CV-Bench's accuracy per source."""
    right = {q.id: B.score(q, predictions.get(q.id, "")) >= 1.0 for q in questions}
    out: dict[str, Any] = {}
    mme = [q for q in questions if q.benchmark == "MME"]
    if mme:
        out["MME"] = M.mme_score(
            (str(q.meta.get("subtask", "existence")), q.group or q.id, right[q.id]) for q in mme
        )
    ocr = [q for q in questions if q.benchmark == "OCRBench"]
    if ocr:
        out["OCRBench"] = M.ocrbench_score((str(q.meta.get("category")), right[q.id]) for q in ocr)
    cv = [q for q in questions if q.benchmark.startswith("CV-Bench")]
    if cv:
        out["CV-Bench"] = M.cvbench_score((str(q.meta.get("stratum")), right[q.id]) for q in cv)
    return out
