"""VQA benchmarks in one JSONL format, converters from published layouts, and scoring.

One question per line::

    {"id": "textvqa-34602", "benchmark": "TextVQA", "category": "OCR & Chart",
     "image": "images/34602.jpg",          # relative to the JSONL file's directory
     "question": "what is the brand?", "answers": ["nokia", "nokia", ...],
     "choices": null,                      # or ["red", "green", ...] for multiple choice
     "metric": "vqa_accuracy",             # see METRICS
     "group": null}                        # MME: the image id (accuracy+); MMBench: the circular id

Converters: the official VQA v2 / TextVQA layout (questions + annotations JSON), and the
VLMEvalKit TSV layout (MMBench, SEED, AI2D, ScienceQA, ...: ``index, question, hint, A..D,
answer, category, image`` with base64 images).
"""

from __future__ import annotations

import base64
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.eval import metrics as M

METRICS = ("vqa_accuracy", "anls", "relaxed", "mc", "yesno", "exact")


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
    raise ValueError(f"unknown metric {q.metric!r}; valid: {', '.join(METRICS)}")


def example_values(
    questions: Iterable[Question], predictions: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Per benchmark, per example (what an interval resamples): a question's score; for
    benchmarks scored over groups (MMBench's circular rotations, MME's image pairs) the group's.
    The mean over a benchmark's examples is its score (``benchmark_scores``)."""
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
        else:
            out[bench] = {q.id: score(q, predictions[q.id]) for q in qs}
    return out


def _mme_values(qs: list[Question], predictions: dict[str, str]) -> dict[str, float]:
    """MME's perception score (sum over subtasks of accuracy + accuracy+, in %) spread over its
    images: an image's value is its share of that sum times the number of images, so that the
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
    share: dict[str, float] = defaultdict(float)
    for (task, image), cs in right.items():
        if task in M.MME_PERCEPTION:
            share[image] += 100.0 * (sum(cs) / n_questions[task] + all(cs) / n_images[task])
        else:
            share[image] += 0.0
    return {image: v * len(share) for image, v in share.items()}


def benchmark_scores(
    questions: Iterable[Question], predictions: dict[str, str]
) -> dict[str, float]:
    """Per-benchmark score as a fraction: the mean question score, MMBench-style groups counted
    right only when every member is right, MME as its perception score (0-2000)."""
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


# ---- converters ----------------------------------------------------------------------------------
def convert_vqa(
    questions_json: Path,
    annotations_json: Path,
    image_dir: Path,
    benchmark: str,
    image_pattern: str = "{image_id}.jpg",
) -> list[Question]:
    """The official VQA layout: ``{"questions": [{question_id, image_id, question}]}`` and
    ``{"annotations": [{question_id, answers: [{answer}, ...]}]}``; TextVQA's single file
    ``{"data": [{question_id, image_id, question, answers: [str]}]}`` is read too (give it twice)."""
    qs = json.loads(questions_json.read_text())
    ann = json.loads(annotations_json.read_text())
    category = M.BENCHMARK_CATEGORY.get(benchmark)
    answers: dict[Any, list[str]] = {}
    if "annotations" in ann:
        for a in ann["annotations"]:
            answers[a["question_id"]] = [
                x["answer"] if isinstance(x, dict) else str(x) for x in a["answers"]
            ]
    elif "data" in ann:
        for a in ann["data"]:
            answers[a["question_id"]] = [str(x) for x in a.get("answers", [])]
    rows = qs.get("questions", qs.get("data", []))
    out = []
    for r in rows:
        qid = r["question_id"]
        if not answers.get(qid):
            continue
        img = image_dir / image_pattern.format(image_id=r["image_id"])
        out.append(
            Question(
                f"{benchmark}-{qid}",
                benchmark,
                category,
                str(img),
                r["question"],
                answers[qid],
                "vqa_accuracy",
            )
        )
    return out


def convert_vlmeval_tsv(
    tsv: Path, image_dir: Path, benchmark: str, circular: bool = False
) -> list[Question]:
    """VLMEvalKit's TSV layout (MMBench, SEED, AI2D, ScienceQA, ...): option columns A, B, ...,
    the correct letter in ``answer``, an optional ``hint``, images as base64 in ``image``
    (written to ``image_dir``). ``circular``: also ask each rotation of the options (MMBench)."""
    csv.field_size_limit(sys.maxsize)
    image_dir.mkdir(parents=True, exist_ok=True)
    category = M.BENCHMARK_CATEGORY.get(benchmark)
    out = []
    with open(tsv, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            idx = row["index"]
            choices = [row[L] for L in M.LETTERS if L in row and row[L] not in (None, "", "nan")]
            img = image_dir / f"{idx}.jpg"
            if row.get("image") and not img.exists():
                img.write_bytes(base64.b64decode(row["image"]))
            hint = row.get("hint") or ""
            question = (f"{hint} " if hint and hint != "nan" else "") + row["question"]
            answer = row["answer"].strip()
            if not choices:
                out.append(
                    Question(
                        f"{benchmark}-{idx}",
                        benchmark,
                        category,
                        str(img),
                        question,
                        [answer],
                        "exact",
                    )
                )
                continue
            if circular:
                for s, (rot, letter) in enumerate(
                    M.circular_shifts(choices, M.LETTERS.index(answer))
                ):
                    out.append(
                        Question(
                            f"{benchmark}-{idx}-{s}",
                            benchmark,
                            category,
                            str(img),
                            question,
                            [letter],
                            "mc",
                            rot,
                            group=str(idx),
                        )
                    )
            else:
                out.append(
                    Question(
                        f"{benchmark}-{idx}",
                        benchmark,
                        category,
                        str(img),
                        question,
                        [answer],
                        "mc",
                        choices,
                    )
                )
    return out
