"""OCR & chart benchmarks: ChartQA (its test folder), OCRBench (OCRBench.json), DocVQA
(val_v1.0.json), TextVQA and VQA v2 (their question/annotation JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.eval.benchmarks import Question
from webssl_cli.eval.convert.common import image_file, question, read_json, require


def convert_chartqa(root: Path) -> list[Question]:
    """ChartQA (vis-nlp/ChartQA, ChartQA Dataset/test): ``test_human.json`` and
    ``test_augmented.json``, lists of ``{imgname, query, label}`` with images in ``png/``;
    relaxed accuracy (5%) over the questions of both splits, as lmms-eval reports it."""
    files = [root / f"test_{s}.json" for s in ("human", "augmented")]
    if not any(f.is_file() for f in files):
        raise UserError(
            f"{root}: no test_human.json or test_augmented.json; give ChartQA's test folder"
        )
    out = []
    for f in files:
        if not f.is_file():
            continue
        split = f.stem.removeprefix("test_")
        rows = read_json(f)
        if not isinstance(rows, list):
            raise UserError(f"{f}: expected a list of {{imgname, query, label}}")
        for n, r in enumerate(rows):
            require(f, r, ("imgname", "query", "label"), f"item {n}")
            img = image_file(root / "png" / str(r["imgname"]), f)
            out.append(question(f"{split}-{n}", "ChartQA", img, r["query"], [str(r["label"])],
                                "relaxed", split=split))  # fmt: skip
    return out


def convert_ocrbench(path: Path, image_dir: Path) -> list[Question]:
    """OCRBench (Yuliang-Liu/MultimodalOCR, OCRBench/OCRBench.json): ``{id, image_path,
    question, answers (one or a list), type, dataset_name}``; ``type`` is the category its
    matching rule and report depend on; images under ``image_dir`` (OCRBench_Images)."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a list of OCRBench items")
    out = []
    for n, r in enumerate(rows):
        require(path, r, ("image_path", "question", "answers", "type"), f"item {n}")
        answers = r["answers"] if isinstance(r["answers"], list) else [r["answers"]]
        rel = str(r["image_path"]).removeprefix("./")
        img = image_dir / rel
        if not img.is_file() and (path.parent / rel).is_file():
            img = path.parent / rel
        out.append(question(str(r.get("id", n)), "OCRBench", image_file(img, path),
                            r["question"], [str(a) for a in answers], "ocrbench",
                            category=r["type"]))  # fmt: skip
    return out


def convert_docvqa(path: Path, image_dir: Path) -> list[Question]:
    """DocVQA (rrc.cvc.uab.es, val_v1.0.json): ``{"data": [{questionId, question, image,
    answers}]}``, ``image`` relative to ``image_dir`` (the folder holding ``documents/``);
    scored by ANLS."""
    data = read_json(path)
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"{path}: no 'data' list; give DocVQA's val_v1.0.json")
    out = []
    for r in rows:
        require(path, r, ("questionId", "question", "image", "answers"),
                f"question {r.get('questionId')}")  # fmt: skip
        if not r["answers"]:
            continue  # the test split's answers are withheld
        img = image_file(image_dir / str(r["image"]), path)
        out.append(question(str(r["questionId"]), "DocVQA", img, r["question"],
                            [str(a) for a in r["answers"]], "anls"))  # fmt: skip
    return out


def convert_vqa(
    questions_json: Path,
    annotations_json: Path,
    image_dir: Path,
    benchmark: str,
    image_pattern: str = "{image_id}.jpg",
) -> list[Question]:
    """The VQA layout (GT-Vision-Lab/VQA): ``{"questions": [{question_id, image_id,
    question}]}`` and ``{"annotations": [{question_id, answers: [{answer}, ...]}]}``; TextVQA's
    single file ``{"data": [{question_id, image_id, question, answers: [str]}]}`` is both.
    Scored by VQA accuracy over the ten answers."""
    qs, ann = read_json(questions_json), read_json(annotations_json)
    answers: dict[Any, list[str]] = {}
    if isinstance(ann, dict) and isinstance(ann.get("annotations"), list):
        for a in ann["annotations"]:
            require(annotations_json, a, ("question_id", "answers"), "annotation")
            answers[a["question_id"]] = [x["answer"] if isinstance(x, dict) else str(x)
                                         for x in a["answers"]]  # fmt: skip
    elif isinstance(ann, dict) and isinstance(ann.get("data"), list):
        for a in ann["data"]:
            answers[a.get("question_id")] = [str(x) for x in a.get("answers") or []]
    else:
        raise UserError(f"{annotations_json}: no 'annotations' or 'data' list")
    rows = qs.get("questions", qs.get("data")) if isinstance(qs, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"{questions_json}: no 'questions' or 'data' list")
    out = []
    for r in rows:
        require(questions_json, r, ("question_id", "image_id", "question"),
                f"question {r.get('question_id')}")  # fmt: skip
        qid = r["question_id"]
        if not answers.get(qid):
            continue  # a test split: no answers to score against
        img = image_file(image_dir / image_pattern.format(image_id=r["image_id"]), questions_json)
        out.append(question(str(qid), benchmark, img, r["question"], answers[qid], "vqa_accuracy"))
    return out
