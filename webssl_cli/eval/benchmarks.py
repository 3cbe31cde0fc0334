"""VQA benchmarks in one JSONL format, converters from published layouts, and scoring.

One question per line::

    {"id": "textvqa-34602", "benchmark": "TextVQA", "category": "OCR & Chart",
     "image": "images/34602.jpg",          # relative to the JSONL file's directory
     "question": "what is the brand?", "answers": ["nokia", "nokia", ...],
     "choices": null,                      # or ["red", "green", ...] for multiple choice
     "metric": "vqa_accuracy",             # see METRICS
     "group": null}                        # MME: the image id (accuracy+); MMBench: the circular id

Converters from the benchmarks' published layouts are in ``webssl_cli.eval.convert``; scoring
(``score``, ``example_values``, ``benchmark_scores``) follows each benchmark's own rule.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.eval import metrics as M

METRICS = (
    "vqa_accuracy",
    "anls",
    "relaxed",
    "mc",
    "yesno",
    "exact",
    "ocrbench",
    "mathvista",
    "mmmu",
)


@dataclass
class Question:
    id: str
    benchmark: str
    category: str | None
    image: str
    question: str
    answers: list[str]
    metric: str = "vqa_accuracy"
    choices: list[str] | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt(self) -> str:
        """The question as the model sees it (options listed for multiple choice)."""
        if self.choices:
            opts = " ".join(f"{M.LETTERS[i]}. {c}" for i, c in enumerate(self.choices))
            return f"{self.question} {opts} Answer with the option's letter."
        if self.metric == "yesno":
            return f"{self.question} Answer yes or no."
        return self.question


def score(q: Question, prediction: str) -> float:
    """One question's score in [0, 1] by its benchmark's metric."""
    p = prediction.strip()
    if q.metric == "vqa_accuracy":
        return M.vqa_accuracy(p, q.answers)
    if q.metric == "anls":
        return M.anls(p, q.answers)
    if q.metric == "relaxed":
        return max(M.relaxed_accuracy(p, a) for a in q.answers)
    if q.metric == "mc":
        return M.multiple_choice_accuracy(p.upper() if len(p) <= 3 else p, q.answers[0], q.choices)
    if q.metric == "yesno":
        return float(M.yes_no(p) == q.answers[0].strip().lower())
    if q.metric == "exact":
        return M.exact_match(p, q.answers)
    if q.metric == "ocrbench":
        return M.ocrbench_match(prediction, q.answers, str(q.meta.get("category", "")))
    if q.metric == "mathvista":
        return M.mathvista_correct(
            prediction,
            q.answers[0],
            str(q.meta.get("question_type", "free_form")),
            str(q.meta.get("answer_type", "text")),
            q.choices,
            q.meta.get("precision"),
        )
    if q.metric == "mmmu":
        return max(M.mmmu_correct(prediction, a, q.choices) for a in q.answers)
    raise ValueError(f"unknown metric {q.metric!r}; valid: {', '.join(METRICS)}")


def example_values(
    questions: Iterable[Question], predictions: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Per benchmark, per example (what an interval resamples), values whose mean is the
    benchmark's score on its own scale (``benchmark_scores``):

    - MME: an image pair, its share of the perception score (0-2000);
    - OCRBench: a question, 1000 when right (the mean is the count of right answers on the
      authors' 1000 questions; on a subset, that count projected to 1000);
    - grouped questions (MMBench's circular rotations, MMVP's image pairs): a group, 1.0 when
      every member is right;
    - stratified questions (``meta["stratum"]``: CV-Bench's source datasets): a question,
      weighted so that every stratum counts equally, as CV-Bench averages ADE20K and COCO;
    - otherwise a question's score.
    """
    by_bench: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_bench[q.benchmark].append(q)
    out: dict[str, dict[str, float]] = {}
    for bench, qs in by_bench.items():
        if bench == "MME":
            out[bench] = _mme_values(qs, predictions)
        elif any(q.group for q in qs):
            groups: dict[str, list[bool]] = defaultdict(list)
            for q in qs:
                groups[q.group or q.id].append(score(q, predictions[q.id]) >= 1.0)
            out[bench] = {g: float(all(v)) for g, v in groups.items()}
        elif any("stratum" in q.meta for q in qs):
            out[bench] = _stratified_values(qs, predictions)
        else:
            scale = M.NATIVE_SCALE["OCRBench"] if bench == "OCRBench" else 1.0
            out[bench] = {q.id: scale * score(q, predictions[q.id]) for q in qs}
    return out


def _stratified_values(qs: list[Question], predictions: dict[str, str]) -> dict[str, float]:
    """A question's score times n / (strata x its stratum's size): the mean over questions
    is then the mean of the strata's accuracies."""
    sizes: dict[str, int] = defaultdict(int)
    for q in qs:
        sizes[str(q.meta.get("stratum", ""))] += 1
    n, k = len(qs), len(sizes)
    return {
        q.id: score(q, predictions[q.id]) * n / (k * sizes[str(q.meta.get("stratum", ""))])
        for q in qs
    }


def _mme_values(qs: list[Question], predictions: dict[str, str]) -> dict[str, float]:
    """MME's perception score (sum over subtasks of accuracy + accuracy+, in %) spread over its
    image pairs: a pair's value is its share of that sum times the number of pairs, so that the
    mean is the score. Cognition subtasks count zero towards perception."""
    right: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for q in qs:
        key = (str(q.meta.get("subtask", "existence")), q.group or q.id)
        right[key].append(score(q, predictions[q.id]) >= 1.0)
    n_questions: dict[str, int] = defaultdict(int)
    n_images: dict[str, int] = defaultdict(int)
    for (task, _), cs in right.items():
        n_questions[task] += len(cs)
        n_images[task] += 1
    share: dict[str, float] = {}
    for (task, image), cs in right.items():
        value = 0.0
        if task in M.MME_PERCEPTION:
            value = 100.0 * (sum(cs) / n_questions[task] + all(cs) / n_images[task])
        share[f"{task}/{image}"] = value
    return {pair: v * len(share) for pair, v in share.items()}


def benchmark_scores(
    questions: Iterable[Question], predictions: dict[str, str]
) -> dict[str, float]:
    """Per-benchmark score, the mean of ``example_values``: a fraction for every benchmark but
    those its authors score as a total (``metrics.NATIVE_SCALE``): MME's perception score
    (0-2000) and OCRBench's count of right answers out of 1000."""
    return {
        bench: sum(v.values()) / len(v)
        for bench, v in example_values(questions, predictions).items()
    }


def from_conversations(convs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """LLaVA conversation records -> (image, prompt, answer) per human/gpt turn pair."""
    out = []
    for c in convs:
        turns = c["conversations"]
        for h, g in zip(turns[::2], turns[1::2], strict=False):
            prompt = h["value"].replace("<image>", "").strip()
            out.append((str(c["image"]), prompt, g["value"]))
    return out


def load_directory(
    root: Path, max_questions: int | None
) -> tuple[
    dict[str, bytes], list[tuple[str, str, str]], list[tuple[str, str, str]], list[Question]
]:
    """A benchmark directory: ``*.jsonl`` test questions and LLaVA-format ``train/stage1.json``
    and ``train/stage2.json`` (image paths relative to ``train/``): images by path, stage-1 and
    stage-2 examples, test questions."""
    test = load_suite_dir(root)
    if max_questions is not None:
        per: dict[str, int] = defaultdict(int)
        kept = []
        for q in test:
            if per[q.benchmark] < max_questions:
                per[q.benchmark] += 1
                kept.append(q)
        test = kept
    stages = []
    for name in ("stage1.json", "stage2.json"):
        path = root / "train" / name
        convs = json.loads(path.read_text()) if path.exists() else []
        for c in convs:
            c["image"] = str((root / "train" / c["image"]).resolve())
        stages.append(from_conversations(convs))
    paths = {q.image for q in test} | {e[0] for s in stages for e in s}
    images = {}
    for p in paths:
        try:
            images[p] = Path(p).read_bytes()
        except OSError as exc:
            raise UserError(f"{p}: image unreadable ({exc})") from exc
    return images, stages[0], stages[1], test


# ---- the JSONL format -------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[Question]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                q = Question(**d)
            except (ValueError, TypeError) as exc:
                raise UserError(
                    f"{path}:{n}: not a webssl benchmark question ({exc}); see `webssl eval convert --help`"
                ) from exc
            if q.metric not in METRICS:
                raise UserError(
                    f"{path}:{n}: metric: {q.metric!r} is not one of {', '.join(METRICS)}"
                )
            if not q.answers:
                raise UserError(f"{path}:{n}: answers: empty; give at least one answer")
            img = Path(q.image)
            q.image = str(img if img.is_absolute() else (path.parent / img))
            out.append(q)
    return out


def load_suite_dir(directory: Path) -> list[Question]:
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise UserError(f"{directory}: no *.jsonl benchmark files")
    return [q for f in files for q in read_jsonl(f)]


def write_jsonl(path: Path, questions: Iterable[Question]) -> None:
    from webssl_cli.rundir import atomic_write_text

    atomic_write_text(
        path, "".join(json.dumps(asdict(q), sort_keys=True) + "\n" for q in questions)
    )
