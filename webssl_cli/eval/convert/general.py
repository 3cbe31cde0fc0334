"""General benchmarks: MME (its release folder or VLMEvalKit's TSV), the VLMEvalKit TSV layout
(MMBench with circular evaluation, SEED, AI2D, ScienceQA, RealWorldQA, ...), SEED-Bench's
JSON, GQA's balanced questions."""

from __future__ import annotations

from pathlib import Path

from webssl_cli.errors import UserError
from webssl_cli.eval.benchmarks import Question
from webssl_cli.eval.convert.common import (
    image_file,
    letter_of,
    question,
    read_json,
    read_table,
    require,
    write_image,
)
from webssl_cli.eval.metrics import LETTERS, MME_COGNITION, MME_PERCEPTION, circular_shifts

_IMAGE_EXT = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")


def convert_mme(root: Path, image_dir: Path | None = None) -> list[Question]:
    """MME's release folder (MME_Benchmark_release_version): one folder per sub-task holding
    ``<image>.txt`` files of two ``question<TAB>Yes|No`` lines beside the images, or in
    ``questions_answer_YES_or_NO/`` with the images in ``images/``. An image's two questions
    form the pair accuracy+ is counted on."""
    out: list[Question] = []
    tasks = [t for t in (*MME_PERCEPTION, *MME_COGNITION) if (root / t).is_dir()]
    if not tasks:
        raise UserError(
            f"{root}: no MME sub-task folders (existence, count, ..., OCR); give the folder "
            "MME_Benchmark_release_version"
        )
    for task in tasks:
        qa_dir = root / task / "questions_answer_YES_or_NO"
        img_dir = root / task / "images"
        if not qa_dir.is_dir():
            qa_dir = img_dir = root / task
        for txt in sorted(qa_dir.glob("*.txt")):
            image = next((img_dir / (txt.stem + e) for e in _IMAGE_EXT
                          if (img_dir / (txt.stem + e)).is_file()), img_dir / (txt.stem + ".jpg"))  # fmt: skip
            path = image_file(image, txt)
            for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines()):
                if not line.strip():
                    continue
                q, sep, ans = line.rpartition("\t")
                if not sep or ans.strip().lower() not in ("yes", "no"):
                    raise UserError(f"{txt}:{n + 1}: not 'question<TAB>Yes|No'")
                out.append(question(f"{task}-{txt.stem}-{n}", "MME", path, q.strip(),
                                    [ans.strip()], "yesno", group=txt.stem, subtask=task))  # fmt: skip
    return out


def _tsv_images(tsv: Path, rows: list[dict[str, str]]) -> dict[str, str]:
    """VLMEvalKit stores an image once: a later row's ``image`` may be the index of the row
    whose image it shares."""
    raw = {r["index"]: r.get("image") or "" for r in rows}
    for k, v in raw.items():
        if len(v) <= 64 and v in raw:
            raw[k] = raw[v]
    return raw


def convert_vlmeval_tsv(
    tsv: Path, image_dir: Path, benchmark: str, circular: bool = False
) -> list[Question]:
    """VLMEvalKit's TSV (open-compass/VLMEvalKit, vlmeval/dataset/image_mcq.py / image_yorn.py):
    ``index, question, answer, image`` (base64, or the index of a row with the same image),
    option columns A, B, ... and ``hint`` for multiple choice, ``category`` and ``image_path``
    for MME (its sub-task and the image pairing its questions). ``circular``: MMBench's
    circular evaluation, every rotation of the options asked (rows with index >= 1e6 are
    rotations already and are grouped by ``index % 1e6``, as VLMEvalKit does)."""
    rows = read_table(tsv, "\t")
    if not rows:
        raise UserError(f"{tsv}: no rows")
    require(tsv, rows[0], ("index", "question", "answer", "image"), "header")
    images = _tsv_images(tsv, rows)
    if circular and not all(r["index"].isdigit() for r in rows):
        raise UserError(f"{tsv}: circular evaluation needs integer indices")
    # a TSV holding the rotations itself (rows index + k * 1e6) is grouped, not rotated again
    rotated_rows = circular and any(int(r["index"]) >= 1_000_000 for r in rows)
    out: list[Question] = []
    for row in rows:
        idx = row["index"]
        img = write_image(images[idx], image_dir / f"{idx}.jpg", tsv)
        if benchmark == "MME":
            require(tsv, row, ("category", "image_path"), f"index {idx}")
            out.append(question(idx, "MME", img, row["question"], [row["answer"].strip()],
                                "yesno", group=row["image_path"], subtask=row["category"]))  # fmt: skip
            continue
        choices = [row[L] for L in LETTERS if row.get(L) not in (None, "", "nan")]
        hint = row.get("hint") or ""
        text = (f"{hint} " if hint and hint != "nan" else "") + row["question"]
        if not choices:
            out.append(question(idx, benchmark, img, text, [row["answer"].strip()], "exact"))
            continue
        letter = letter_of(row["answer"], len(choices), tsv, f"index {idx}")
        if circular and rotated_rows:
            out.append(question(idx, benchmark, img, text, [letter], "mc", choices,
                                group=str(int(idx) % 1_000_000)))  # fmt: skip
        elif circular:
            for s, (rot, ans) in enumerate(circular_shifts(choices, LETTERS.index(letter))):
                out.append(question(f"{idx}-{s}", benchmark, img, text, [ans], "mc", rot,
                                    group=idx))  # fmt: skip
        else:
            out.append(question(idx, benchmark, img, text, [letter], "mc", choices))
    return out


def convert_seed(path: Path, image_dir: Path) -> list[Question]:
    """SEED-Bench (AILab-CVC/SEED-Bench, SEED-Bench.json): its image questions (``data_type``
    "image", dimensions 1-9) with options ``choice_a..choice_d`` and the letter in ``answer``;
    ``data_id`` names the image file in SEED-Bench-image/. Scored as accuracy over all its
    questions (AILab-CVC/SEED-Bench, eval.py: the total over the nine image dimensions)."""
    data = read_json(path)
    rows = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"{path}: no 'questions' list; give SEED-Bench.json")
    out = []
    for r in rows:
        if r.get("data_type", "image") != "image":
            continue
        require(path, r, ("question_id", "question", "answer", "data_id", "choice_a"),
                f"question {r.get('question_id')}")  # fmt: skip
        choices = [r[f"choice_{c}"] for c in "abcd" if r.get(f"choice_{c}") is not None]
        img = image_dir / str(r["data_id"])
        if not img.is_file() and not img.suffix:
            img = img.with_name(img.name + ".jpg")
        letter = letter_of(str(r["answer"]), len(choices), path, f"question {r['question_id']}")
        out.append(question(str(r["question_id"]), "SEED", image_file(img, path), r["question"],
                            [letter], "mc", choices, dimension=r.get("question_type_id")))  # fmt: skip
    return out


def convert_gqa(path: Path, image_dir: Path) -> list[Question]:
    """GQA (testdev_balanced_questions.json): ``{qid: {imageId, question, answer, ...}}``, images
    ``<imageId>.jpg``; scored by exact match of the one-word answer."""
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: expected {{question id: {{imageId, question, answer}}}}")
    out = []
    for qid, r in data.items():
        require(path, r, ("imageId", "question", "answer"), f"question {qid}")
        img = image_file(image_dir / f"{r['imageId']}.jpg", path)
        out.append(question(str(qid), "GQA", img, r["question"], [str(r["answer"])], "exact"))
    return out
