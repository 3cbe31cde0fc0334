"""Benchmark-level aggregation over questions: MME's accuracy + accuracy+ per sub-task,
OCRBench's per-category counts, CV-Bench's per-source averaging, pair accuracy (MMVP)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

# ---- MME -----------------------------------------------------------------------------------------
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
                  "landmark", "artwork", "OCR")  # fmt: skip
MME_COGNITION = (
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
)


def mme_score(records: Iterable[tuple[str, str, bool]]) -> dict[str, object]:
    """MME (BradyFU/Awesome-Multimodal-Large-Language-Models, Evaluation branch,
    tools/eval_tool/calculation.py; VLMEvalKit ``MME_rating``): per subtask, accuracy (% of questions right) + accuracy+ (% of images with both of
    their questions right); the perception score is the sum over the perception subtasks (max
    2000), cognition likewise (max 800). ``records`` are (subtask, image id, correct)."""
    by_task: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for subtask, image, correct in records:
        by_task[subtask][image].append(bool(correct))
    subtasks: dict[str, dict[str, float]] = {}
    for task, images in by_task.items():
        flat = [c for cs in images.values() for c in cs]
        acc = 100.0 * sum(flat) / len(flat)
        acc_plus = 100.0 * sum(all(cs) for cs in images.values()) / len(images)
        subtasks[task] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
    perception = sum(v["score"] for k, v in subtasks.items() if k in MME_PERCEPTION)
    cognition = sum(v["score"] for k, v in subtasks.items() if k in MME_COGNITION)
    return {"subtasks": subtasks, "perception": perception, "cognition": cognition}


# ---- OCRBench --------------------------------------------------------------------------------
OCRBENCH_RECOGNITION = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
)


def ocrbench_score(records: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """OCRBench's report (Yuliang-Liu/MultimodalOCR; VLMEvalKit ``OCRBench_eval``): the count of
    right answers per category, the six recognition categories summed as "Text Recognition",
    and the "Final Score", the total count (out of 1000 on the full benchmark of 1000
    questions). ``records`` are (category, correct)."""
    counts: dict[str, float] = defaultdict(float)
    for category, correct in records:
        key = "Text Recognition" if category in OCRBENCH_RECOGNITION else category
        counts[key] += float(bool(correct))
    out = dict(counts)
    out["Final Score"] = sum(counts.values())
    return out


# ---- CV-Bench ----------------------------------------------------------------------------------
def cvbench_score(records: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """CV-Bench (nyu-visionx/CV-Bench, README "Evaluation"; lmms-eval tasks/cv_bench): accuracy
    per source; 2D is the mean of ADE20K's and COCO's, 3D is Omni3D's, the overall the mean of
    2D and 3D. ``records`` are (source, correct); a source absent is left out of its mean."""
    by_source: dict[str, list[bool]] = defaultdict(list)
    for source, correct in records:
        by_source[source].append(bool(correct))
    acc = {s: sum(v) / len(v) for s, v in by_source.items()}
    out = dict(acc)
    two = [acc[s] for s in ("ADE20K", "COCO") if s in acc]
    if two:
        out["2D"] = sum(two) / len(two)
    if "Omni3D" in acc:
        out["3D"] = acc["Omni3D"]
    parts = [out[k] for k in ("2D", "3D") if k in out]
    if parts:
        out["Overall"] = sum(parts) / len(parts)
    return out


# ---- pairs ------------------------------------------------------------------------------------
def pair_accuracy(results: dict[str, list[bool]]) -> float:
    """MMVP (tsb0601/MMVP, scripts/gpt_grader.py): consecutive questions 1-2, 3-4, ... ask
    about the two images of a CLIP-blind pair, and a pair counts only when both are right.
    (Its grader asks GPT-4 whether an answer is right; here the option letter is extracted.)"""
    if not results:
        return 0.0
    return sum(all(v) for v in results.values()) / len(results)
