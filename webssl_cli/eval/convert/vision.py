"""Vision-centric benchmarks: MMVP (Questions.csv), RealWorldQA (its parquet release, or a
VLMEvalKit TSV through ``general.convert_vlmeval_tsv``) and CV-Bench (test.jsonl)."""

from __future__ import annotations

import re
from pathlib import Path

from webssl_cli.errors import UserError
from webssl_cli.eval.benchmarks import Question
from webssl_cli.eval.convert.common import (
    image_bytes,
    image_file,
    letter_of,
    parquet_rows,
    question,
    read_jsonl_rows,
    read_table,
    require,
    write_image,
)

_OPTION = re.compile(r"\(([a-zA-Z])\)\s*(.*?)\s*(?=\([a-zA-Z]\)|$)")


def convert_mmvp(root: Path) -> list[Question]:
    """MMVP (tsb0601/MMVP, the MMVP folder): ``Questions.csv`` with ``Index, Question, Options
    ("(a) Open (b) Closed"), Correct Answer ("(a)")``, images ``MMVP Images/<row>.jpg``.
    Questions 1-2, 3-4, ... ask about the two images of a CLIP-blind pair and are scored as
    one: right only when both are."""
    csv_path = root / "Questions.csv"
    rows = read_table(csv_path, ",")
    if not rows:
        raise UserError(f"{csv_path}: no rows; give the MMVP folder holding Questions.csv")
    require(csv_path, rows[0], ("Question", "Options", "Correct Answer"), "header")
    # MMVP's scripts number images by row (row n -> "<n>.jpg") and pair rows 1-2, 3-4, ...;
    # its evaluation script spells the folder "MMVP Imgaes", the released data "MMVP Images"
    folder = next((root / d for d in ("MMVP Images", "MMVP Imgaes") if (root / d).is_dir()),
                  root / "MMVP Images")  # fmt: skip
    out = []
    for pos, r in enumerate(rows):
        n = pos + 1
        choices = [text for _, text in _OPTION.findall(r["Options"])]
        if len(choices) < 2:
            raise UserError(f"{csv_path}: row {n}: options {r['Options']!r} not '(a) .. (b) ..'")
        letter = letter_of(r["Correct Answer"], len(choices), csv_path, f"row {n}")
        img = image_file(folder / f"{n}.jpg", csv_path)
        out.append(question(str(n), "MMVP", img, r["Question"], [letter], "mc", choices,
                            group=f"pair{pos // 2}"))  # fmt: skip
    return out


def convert_cvbench(path: Path) -> list[Question]:
    """CV-Bench (nyu-visionx/CV-Bench, test.jsonl beside img/): ``idx, type`` ("2D"/"3D"),
    ``task, source`` (ADE20K, COCO, Omni3D), ``image, question, choices, answer`` ("(C)").
    Written as two benchmarks, CV-Bench-2D and CV-Bench-3D, each the mean of its sources'
    accuracies (CV-Bench's README)."""
    out = []
    for r in read_jsonl_rows(path):
        require(path, r, ("idx", "type", "source", "image", "question", "choices", "answer"),
                f"item {r.get('idx')}")  # fmt: skip
        if r["type"] not in ("2D", "3D"):
            raise UserError(f"{path}: item {r['idx']}: type {r['type']!r} is not 2D or 3D")
        choices = [str(c) for c in r["choices"]]
        letter = letter_of(str(r["answer"]), len(choices), path, f"item {r['idx']}")
        img = image_file(path.parent / str(r["image"]), path)
        out.append(question(str(r["idx"]), f"CV-Bench-{r['type']}", img, r["question"],
                            [letter], "mc", choices, stratum=r["source"],
                            task=r.get("task")))  # fmt: skip
    return out


_RWQA_OPTION = re.compile(r"^\s*([A-Z])[.)]\s+(.+?)\s*$")


def convert_realworldqa(path: Path, image_dir: Path) -> list[Question]:
    """RealWorldQA as released (xai-org/RealworldQA parquet: ``image, question, answer``): the
    options are lines "A. ..." inside the question, the answer their letter (or, for a few
    questions, a word or number). Lettered questions are scored as multiple choice, the others
    by exact match with number words as digits, case and punctuation ignored (lmms-eval
    tasks/realworldqa/realworldqa.yaml: its filters, then exact match)."""
    out = []
    for n, r in enumerate(parquet_rows(path)):
        require(path, r, ("image", "question", "answer"), f"row {n}")
        data = image_bytes(r["image"])
        if data is None:
            raise UserError(f"{path}: row {n}: image is empty")
        img = write_image(data, image_dir / f"{n}.png", path)
        lines = str(r["question"]).splitlines()
        options = [m for m in (_RWQA_OPTION.match(x) for x in lines) if m]
        choices = [m.group(2) for m in options]
        answer = str(r["answer"]).strip()
        lettered = (
            len(choices) >= 2
            and [m.group(1) for m in options] == list("ABCDEFGH"[: len(choices)])
            and len(answer) == 1
            and answer.upper() in "ABCDEFGH"[: len(choices)]
        )
        if lettered:
            # the options are listed again by the prompt; keep the question's other lines
            text = "\n".join(x for x in lines if not _RWQA_OPTION.match(x)).strip()
            out.append(question(str(n), "RealWorldQA", img, text, [answer.upper()], "mc", choices))
        else:
            # one answer: VQA accuracy is exact match after the VQA normalisation (number words
            # to digits, case and punctuation ignored), lmms-eval's filters for this task
            out.append(question(str(n), "RealWorldQA", img, str(r["question"]), [answer],
                                "vqa_accuracy"))  # fmt: skip
    return out
