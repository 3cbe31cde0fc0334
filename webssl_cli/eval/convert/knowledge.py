"""Knowledge benchmarks: ScienceQA-IMG (problems.json), MMMU (its Hugging Face parquet files),
MathVista (testmini JSON). AI2D comes as a VLMEvalKit TSV (``general.convert_vlmeval_tsv``)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from webssl_cli.errors import UserError
from webssl_cli.eval.benchmarks import Question
from webssl_cli.eval.convert.common import (
    image_bytes,
    image_file,
    parquet_rows,
    question,
    read_json,
    require,
    write_image,
)
from webssl_cli.eval.metrics import LETTERS


def convert_scienceqa(path: Path, image_dir: Path, split: str = "test") -> list[Question]:
    """ScienceQA (lupantech/ScienceQA, data/scienceqa/problems.json): ``{pid: {question,
    choices, answer (index), hint, image, split}}``; IMG is the ``split`` questions with an
    image, found at ``<image_dir>/<split>/<pid>/<image>``. Multiple-choice accuracy."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {{pid: problem}}; give ScienceQA's problems.json")
    out = []
    for pid, r in data.items():
        require(path, r, ("question", "choices", "answer", "split"), f"problem {pid}")
        if r["split"] != split or not r.get("image"):
            continue
        img = image_file(image_dir / split / str(pid) / str(r["image"]), path)
        hint = str(r.get("hint") or "").strip()
        text = (f"Context: {hint} " if hint else "") + r["question"]
        choices = [str(c) for c in r["choices"]]
        answer = int(r["answer"])
        if not 0 <= answer < len(choices):
            raise UserError(f"{path}: problem {pid}: answer {answer} is not an option's index")
        out.append(question(str(pid), "ScienceQA", img, text, [LETTERS[answer]], "mc", choices))
    return out


def convert_mmmu(path: Path, image_dir: Path) -> list[Question]:
    """MMMU (the MMMU/MMMU parquet files, one per subject, or a folder of them): ``id,
    question, options`` (a Python-literal list), ``answer``, ``question_type``
    ("multiple-choice" or "open"), ``image_1..image_7``. The first image is the question's;
    answers are scored by MMMU's own parsing (``metrics.mmmu_correct``)."""
    out = []
    for r in parquet_rows(path):
        require(path, r, ("id", "question", "options", "answer", "question_type", "image_1"),
                f"row {r.get('id')}")  # fmt: skip
        data = image_bytes(r["image_1"])
        if data is None:
            raise UserError(f"{path}: {r['id']}: image_1 is empty")
        img = write_image(data, image_dir / f"{r['id']}.png", path)
        try:
            options = [str(o) for o in ast.literal_eval(r["options"] or "[]")]
        except (ValueError, SyntaxError) as exc:
            raise UserError(f"{path}: {r['id']}: options is not a list literal") from exc
        mc = r["question_type"] == "multiple-choice" and bool(options)
        out.append(question(str(r["id"]), "MMMU", img, r["question"], [str(r["answer"])],
                            "mmmu", options if mc else None,
                            question_type=r["question_type"]))  # fmt: skip
    return out


def _mathvista_text(r: dict[str, Any]) -> str:
    # free-form questions keep MathVista's query (its hint names the answer's type and
    # precision); multiple choice keeps the bare question, the options being listed anyway
    if r["question_type"] == "free_form" and r.get("query"):
        return str(r["query"])
    return str(r["question"])


def convert_mathvista(path: Path, image_dir: Path) -> list[Question]:
    """MathVista (lupantech/MathVista testmini: a JSON list, or ``{pid: problem}``): ``pid,
    question, image, choices, answer, question_type`` ("multi_choice"/"free_form"),
    ``answer_type`` ("text"/"integer"/"float"/"list"), ``precision``, ``query``; images are
    relative to ``image_dir``. Scored by MathVista's extraction and normalisation."""
    data = read_json(path)
    rows = list(data.values()) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a list of MathVista problems")
    out = []
    for r in rows:
        require(path, r, ("pid", "question", "image", "answer", "question_type", "answer_type"),
                f"problem {r.get('pid')}")  # fmt: skip
        img = image_file(image_dir / str(r["image"]), path)
        choices = [str(c) for c in r["choices"]] if r.get("choices") else None
        precision = r.get("precision")
        out.append(question(str(r["pid"]), "MathVista", img, _mathvista_text(r),
                            [str(r["answer"])], "mathvista", choices,
                            question_type=r["question_type"], answer_type=r["answer_type"],
                            precision=int(precision) if precision is not None else None))  # fmt: skip
    return out
