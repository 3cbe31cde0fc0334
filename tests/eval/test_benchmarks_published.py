"""The 16 benchmarks from their published layouts: a few items written by the test in each
layout, converted by `webssl eval convert`, scored against a perfect, an empty and a partly
right prediction file; expected scores are computed by hand in the comments."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from webssl_cli.eval import benchmarks as B
from webssl_cli.eval import metrics as M
from webssl_cli.eval.commands import register

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
B64 = base64.b64encode(PNG).decode()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG)


def _json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _convert(tmp: Path, source: Path, layout: str, *args: str) -> list[B.Question]:
    out = tmp / "suite" / f"{layout}.jsonl"
    res = CliRunner().invoke(_app(), ["convert", str(source), str(out), "--layout", layout, *args])
    assert res.exit_code == 0, res.output
    return B.read_jsonl(out)


# ---- fixtures: each returns (questions, perfect, partly) predictions keyed by question id ----
Preds = dict[str, str]


def mme(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    """All ten perception sub-tasks, one image each (existence: two), two questions an image,
    in the release's two arrangements; plus a cognition sub-task that perception ignores."""
    root = tmp / "MME_Benchmark_release_version"
    folder_style = ("artwork", "celebrity", "landmark", "posters", "scene")
    for task in (*M.MME_PERCEPTION, "commonsense_reasoning"):
        for stem in ("a", "b") if task == "existence" else ("a",):
            qa = root / task / ("questions_answer_YES_or_NO" if task in folder_style else "")
            img = root / task / ("images" if task in folder_style else "") / f"{stem}.jpg"
            _img(img)
            qa.mkdir(parents=True, exist_ok=True)
            (qa / f"{stem}.txt").write_text(f"Is it {task}?\tYes\nIs it not {task}?\tNo\n")
    qs = _convert(tmp, root, "mme")
    perfect = {q.id: ("Yes, it is." if q.answers[0] == "Yes" else "No") for q in qs}
    partly = dict(perfect)
    partly["MME-existence-b-1"] = "Yes"  # existence: 3/4 right (75), 1/2 images (50) = 125
    partly["MME-count-a-0"] = "There is one"  # neither yes nor no: count 50 + 0 = 50
    return qs, perfect, partly


def mmbench(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    tsv = tmp / "MMBench_DEV_EN.tsv"
    tsv.write_text(
        "index\tquestion\thint\tA\tB\tC\tanswer\tcategory\timage\n"
        f"1\tWhich colour?\tnan\tred\tgreen\tblue\tB\tattr\t{B64}\n"
        "2\tIs it day?\tA photo.\tyes\tno\t\tA\tscene\t1\n"  # image shared with index 1
    )
    qs = _convert(tmp, tsv, "vlmeval-tsv", "--benchmark", "MMBench", "--circular")
    # rotations of [red, green, blue] (B): B, A (green first), C; of [yes, no] (A): A, B
    perfect = {"MMBench-1-0": "B", "MMBench-1-1": "A", "MMBench-1-2": "(C) green",
               "MMBench-2-0": "A", "MMBench-2-1": "B"}  # fmt: skip
    partly = dict(perfect, **{"MMBench-2-1": "A"})  # question 2 fails one rotation: 1/2
    return qs, perfect, partly


def test_mmbench_rotations_already_in_the_tsv_are_grouped(tmp_path: Path) -> None:
    # VLMEvalKit's circular TSVs carry the rotations as rows index + k * 1e6
    tsv = tmp_path / "MMBench_CIRC.tsv"
    tsv.write_text(
        "index\tquestion\tA\tB\tanswer\timage\n"
        f"7\tDay?\tyes\tno\tA\t{B64}\n"
        "1000007\tDay?\tno\tyes\tB\t7\n"
    )
    qs = _convert(tmp_path, tsv, "vlmeval-tsv", "--benchmark", "MMBench", "--circular")
    assert [q.group for q in qs] == ["7", "7"]
    assert B.example_values(qs, {"MMBench-7": "A", "MMBench-1000007": "B"}) == {
        "MMBench": {"7": 1.0}
    }
    assert B.example_values(qs, {"MMBench-7": "A", "MMBench-1000007": "A"}) == {
        "MMBench": {"7": 0.0}
    }


def seed(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    rows = [
        {"question_id": str(i), "question": f"q{i}?", "choice_a": "cat", "choice_b": "dog",
         "choice_c": "cow", "choice_d": "pig", "answer": a, "data_id": f"{i}.jpg",
         "data_type": "image", "question_type_id": 1}
        for i, a in ((1, "A"), (2, "C"), (3, "D"))
    ] + [{"question_id": "9", "question": "v?", "choice_a": "x", "choice_b": "y",
          "answer": "A", "data_id": "clip.mp4", "data_type": "video", "question_type_id": 10}]  # fmt: skip
    for i in (1, 2, 3):
        _img(tmp / "SEED-Bench-image" / f"{i}.jpg")
    qs = _convert(tmp, _json(tmp / "SEED-Bench.json", {"questions": rows}), "seed")
    perfect = {"SEED-1": "A", "SEED-2": "The answer is C.", "SEED-3": "pig"}
    partly = dict(perfect, **{"SEED-3": "B"})  # 2/3
    return qs, perfect, partly


def gqa(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    data = {
        "201": {"imageId": "n1", "question": "Is it red?", "answer": "yes"},
        "202": {"imageId": "n1", "question": "What is it?", "answer": "table"},
        "203": {"imageId": "n2", "question": "Which side?", "answer": "left"},
        "204": {"imageId": "n2", "question": "What colour?", "answer": "white"},
    }
    _img(tmp / "images" / "n1.jpg")
    _img(tmp / "images" / "n2.jpg")
    qs = _convert(tmp, _json(tmp / "testdev_balanced_questions.json", data), "gqa")
    perfect = {"GQA-201": "Yes.", "GQA-202": "table", "GQA-203": "Left", "GQA-204": "white"}
    partly = dict(perfect, **{"GQA-204": "black"})  # 3/4
    return qs, perfect, partly


def scienceqa(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    def prob(split: str, image: str | None, answer: int) -> dict[str, Any]:
        return {"question": "Which is a mammal?", "choices": ["frog", "whale", "shark"],
                "answer": answer, "hint": "", "image": image, "split": split}  # fmt: skip

    probs = {"1": prob("test", "image.png", 1), "2": prob("test", "image.png", 0),
             "3": prob("test", "image.png", 2), "4": prob("test", None, 1),
             "5": prob("train", "image.png", 1)}  # fmt: skip
    for pid in ("1", "2", "3", "5"):
        _img(tmp / "images" / probs[pid]["split"] / pid / "image.png")
    qs = _convert(tmp, _json(tmp / "problems.json", probs), "scienceqa")
    assert {q.id for q in qs} == {"ScienceQA-1", "ScienceQA-2", "ScienceQA-3"}  # IMG, test
    perfect = {"ScienceQA-1": "B", "ScienceQA-2": "A.", "ScienceQA-3": "The answer is C."}
    partly = dict(perfect, **{"ScienceQA-2": "B", "ScienceQA-3": "A"})  # 1/3
    return qs, perfect, partly


def mmmu(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        ("validation_Art_1", "multiple-choice", "['oil', 'ink', 'clay']", "B"),
        ("validation_Art_2", "multiple-choice", "['1', '2', '3', '4']", "D"),
        ("validation_Math_1", "open", "[]", "24"),
        ("validation_Geo_1", "open", "[]", "['Paris', 'paris city']"),
    ]
    table = pa.table({
        "id": [r[0] for r in rows], "question": ["<image 1> What?"] * 4,
        "options": [r[2] for r in rows], "answer": [r[3] for r in rows],
        "question_type": [r[1] for r in rows],
        "image_1": [{"bytes": PNG, "path": "x.png"}] * 4,
    })  # fmt: skip
    pq.write_table(table, tmp / "validation-00000-of-00001.parquet")
    qs = _convert(tmp, tmp / "validation-00000-of-00001.parquet", "mmmu")
    perfect = {"MMMU-validation_Art_1": "(B) ink", "MMMU-validation_Art_2": "The answer is D.",
               "MMMU-validation_Math_1": "4 x 6 = 24",
               "MMMU-validation_Geo_1": "The capital is Paris."}  # fmt: skip
    # Art_2: " A " is a candidate, wrong; Math_1: 25 is not 24
    partly = dict(perfect, **{"MMMU-validation_Art_2": "A", "MMMU-validation_Math_1": "so 25"})
    return qs, perfect, partly


def mathvista(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    def prob(pid: str, qtype: str, atype: str, answer: str, choices: Any = None,
             precision: Any = None) -> dict[str, Any]:  # fmt: skip
        _img(tmp / "images" / f"{pid}.jpg")
        return {"pid": pid, "question": "?", "image": f"images/{pid}.jpg", "choices": choices,
                "answer": answer, "question_type": qtype, "answer_type": atype,
                "precision": precision, "query": f"Hint: answer {atype}. Question: ?"}  # fmt: skip

    probs = {
        "1": prob("1", "multi_choice", "text", "5", ["3", "5", "7"]),
        "2": prob("2", "free_form", "integer", "12"),
        "3": prob("3", "free_form", "float", "1.25", precision=2),
        "4": prob("4", "multi_choice", "text", "cat", ["blue cube", "cat"]),
    }
    qs = _convert(tmp, _json(tmp / "testmini.json", probs), "mathvista")
    perfect = {"MathVista-1": "B", "MathVista-2": "12", "MathVista-3": "1.25",
               "MathVista-4": "cat"}  # fmt: skip
    # 1: letter in parentheses -> "5" right; 2: last number 13, wrong; 3: 1.2499 rounds to
    # 1.25, right; 4: the other option, wrong -> 2/4
    partly = {"MathVista-1": "The answer is (B)", "MathVista-2": "There are 13 apples",
              "MathVista-3": "1.2499", "MathVista-4": "blue cube"}  # fmt: skip
    return qs, perfect, partly


def ai2d(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    tsv = tmp / "AI2D_TEST.tsv"
    tsv.write_text(
        "index\tquestion\tA\tB\tC\tD\tanswer\timage\n"
        f"10\tWhat eats grass?\tfox\trabbit\thawk\towl\tB\t{B64}\n"
        f"11\tWhich stage is last?\tegg\tlarva\tpupa\tadult\tD\t{B64}\n"
    )
    qs = _convert(tmp, tsv, "vlmeval-tsv", "--benchmark", "AI2D")
    perfect = {"AI2D-10": "B", "AI2D-11": "adult"}
    partly = {"AI2D-10": "B", "AI2D-11": "C"}  # 1/2
    return qs, perfect, partly


def chartqa(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    root = tmp / "test"
    _json(root / "test_human.json", [{"imgname": "a.png", "query": "Max?", "label": "100"},
                                     {"imgname": "a.png", "query": "Up?", "label": "No"}])  # fmt: skip
    _json(root / "test_augmented.json", [{"imgname": "b.png", "query": "Share?", "label": "45%"},
                                         {"imgname": "b.png", "query": "Top?", "label": "Apple"}])  # fmt: skip
    _img(root / "png" / "a.png")
    _img(root / "png" / "b.png")
    qs = _convert(tmp, root, "chartqa")
    perfect = {"ChartQA-human-0": "100", "ChartQA-human-1": "no",
               "ChartQA-augmented-0": "0.45", "ChartQA-augmented-1": "apple"}  # fmt: skip
    # 104 within 5% of 100: right; yes: wrong; 0.46 vs 0.45 (2.2%): right; apples: wrong -> 2/4
    partly = {"ChartQA-human-0": "104", "ChartQA-human-1": "yes",
              "ChartQA-augmented-0": "0.46", "ChartQA-augmented-1": "apples"}  # fmt: skip
    return qs, perfect, partly


def ocrbench(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    items = [
        {"id": 0, "image_path": "IIIT5K/0.jpg", "question": "Text?", "answers": ["CAFE"],
         "type": "Regular Text Recognition", "dataset_name": "IIIT5K"},
        {"id": 1, "image_path": "HME100k/1.jpg", "question": "LaTeX?", "answers": ["x^{2} + 1"],
         "type": M.OCRBENCH_HME, "dataset_name": "HME100k"},
        {"id": 2, "image_path": "textVQA/2.jpg", "question": "Brand?",
         "answers": ["nokia", "Nokia phone"], "type": "Scene Text-centric VQA",
         "dataset_name": "textVQA"},
        {"id": 3, "image_path": "SROIE/3.jpg", "question": "Total?", "answers": "12.50",
         "type": "Key Information Extraction", "dataset_name": "SROIE"},
    ]  # fmt: skip
    for it in items:
        _img(tmp / "OCRBench_Images" / str(it["image_path"]))
    qs = _convert(tmp, _json(tmp / "OCRBench.json", items), "ocrbench")
    perfect = {"OCRBench-0": "The word is cafe", "OCRBench-1": "x^{2}+1",
               "OCRBench-2": "NOKIA", "OCRBench-3": "12.50"}  # fmt: skip
    # caf: no; HME keeps case: X^{2}+1 no; a nokia phone: yes; 12.5 lacks "12.50": no -> 1/4
    partly = {"OCRBench-0": "caf", "OCRBench-1": "X^{2}+1",
              "OCRBench-2": "it is a nokia phone", "OCRBench-3": "12.5"}  # fmt: skip
    return qs, perfect, partly


def textvqa(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    data = {"data": [
        {"question_id": 1, "image_id": "i1", "question": "Brand?", "answers": ["nokia"] * 10},
        {"question_id": 2, "image_id": "i1", "question": "Drink?",
         "answers": ["coca cola"] * 2 + ["coke"] * 8},
    ]}  # fmt: skip
    _img(tmp / "train_images" / "i1.jpg")
    src = _json(tmp / "TextVQA_0.5.1_val.json", data)
    qs = _convert(tmp, src, "vqa", "--image-dir", str(tmp / "train_images"))
    perfect = {"TextVQA-1": "Nokia", "TextVQA-2": "coke"}
    # "coca-cola" -> "coca cola": the 2 subsets dropping one see 1 match (1/3), the 8 others
    # 2 (2/3): (2/3 + 16/3) / 10 = 0.6; with question 1 right: 0.8
    partly = {"TextVQA-1": "nokia", "TextVQA-2": "coca-cola"}
    return qs, perfect, partly


def docvqa(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    data = {"dataset_name": "docvqa", "data": [
        {"questionId": 1, "question": "Year?", "image": "documents/d1.png", "answers": ["1995"]},
        {"questionId": 2, "question": "Title?", "image": "documents/d1.png",
         "answers": ["hello world", "Hello World!"]},
    ]}  # fmt: skip
    _img(tmp / "documents" / "d1.png")
    qs = _convert(tmp, _json(tmp / "val_v1.0.json", data), "docvqa")
    perfect = {"DocVQA-1": "1995", "DocVQA-2": "Hello World"}
    # 1996: NL 1/4 -> 0.75; goodbye: NL >= 0.5 -> 0 => 0.375
    partly = {"DocVQA-1": "1996", "DocVQA-2": "goodbye"}
    return qs, perfect, partly


def mmvp(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    root = tmp / "MMVP"
    root.mkdir(parents=True)
    (root / "Questions.csv").write_text(
        "Index,Question,Options,Correct Answer\n"
        "1,Is the door open?,(a) Open (b) Closed,(a)\n"
        "2,Is the door open?,(a) Open (b) Closed,(b)\n"
        "3,Where is the dog facing?,(a) Left (b) Right,(b)\n"
        "4,Where is the dog facing?,(a) Left (b) Right,(a)\n"
    )
    for i in range(1, 5):
        _img(root / "MMVP Images" / f"{i}.jpg")
    qs = _convert(tmp, root, "mmvp")
    perfect = {"MMVP-1": "(a)", "MMVP-2": "(b) Closed", "MMVP-3": "Right", "MMVP-4": "(a)"}
    partly = dict(perfect, **{"MMVP-4": "(b)"})  # 3/4 questions but 1/2 pairs
    return qs, perfect, partly


def realworldqa(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    tsv = tmp / "RealWorldQA.tsv"
    tsv.write_text(
        "index\tquestion\tA\tB\tC\tanswer\timage\n"
        f"0\tHow many lanes?\t1\t2\t3\tC\t{B64}\n"
        f"1\tIs the light red?\tyes\tno\t\tA\t{B64}\n"
        f"2\tWhich way?\tleft\tright\tstraight\tB\t{B64}\n"
    )
    qs = _convert(tmp, tsv, "vlmeval-tsv", "--benchmark", "RealWorldQA")
    perfect = {"RealWorldQA-0": "C", "RealWorldQA-1": "A", "RealWorldQA-2": "B."}
    partly = dict(perfect, **{"RealWorldQA-0": "A"})  # 2/3
    return qs, perfect, partly


def realworldqa_parquet(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tail = "Please answer directly with only the letter of the correct option and nothing else."
    rows = [
        ("How many lanes?\nA. 1\nB. 2\nC. 3\n" + tail, "C"),
        ("Is the light red?\nA. yes\nB. no\n" + tail, "A"),
        ("How many cars are visible? Please answer directly with a single word or number.", "3"),
    ]
    table = pa.table({"image": [{"bytes": PNG, "path": None}] * 3,
                      "question": [r[0] for r in rows], "answer": [r[1] for r in rows]})  # fmt: skip
    pq.write_table(table, tmp / "test-00000-of-00001.parquet")
    qs = _convert(tmp, tmp / "test-00000-of-00001.parquet", "realworldqa")
    assert [q.metric for q in qs] == ["mc", "mc", "vqa_accuracy"] and qs[0].choices == [
        "1",
        "2",
        "3",
    ]
    assert B.score(qs[2], "Three.") == 1.0 and B.score(qs[2], "4") == 0.0
    perfect = {"RealWorldQA-0": "C", "RealWorldQA-1": "A.", "RealWorldQA-2": "3"}
    partly = dict(perfect, **{"RealWorldQA-1": "(B)"})  # 2/3
    return qs, perfect, partly


def cvbench(tmp: Path) -> tuple[list[B.Question], Preds, Preds]:
    def item(idx: int, kind: str, source: str, answer: str) -> dict[str, Any]:
        _img(tmp / "img" / kind / f"{idx}.png")
        return {"idx": idx, "type": kind, "task": "Count" if kind == "2D" else "Depth",
                "source": source, "image": f"img/{kind}/{idx}.png", "question": "?",
                "choices": ["1", "2", "3"], "answer": answer, "filename": f"{idx}.png"}  # fmt: skip

    rows = [item(0, "2D", "ADE20K", "(A)"), item(1, "2D", "ADE20K", "(B)"),
            item(2, "2D", "COCO", "(C)"), item(3, "3D", "Omni3D", "(A)"),
            item(4, "3D", "Omni3D", "(B)")]  # fmt: skip
    (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    qs = _convert(tmp, tmp / "test.jsonl", "cvbench")
    perfect = {"CV-Bench-2D-0": "(A)", "CV-Bench-2D-1": "(B)", "CV-Bench-2D-2": "(C)",
               "CV-Bench-3D-3": "(A)", "CV-Bench-3D-4": "(B)"}  # fmt: skip
    # 2D: ADE20K 1/2, COCO 1/1 -> (0.5 + 1) / 2 = 0.75 (not the pooled 2/3); 3D: 1/2
    partly = dict(perfect, **{"CV-Bench-2D-1": "(A)", "CV-Bench-3D-4": "(C)"})
    return qs, perfect, partly


# benchmark(s) -> (fixture, perfect, empty, partly); MME on its 0-2000 scale, OCRBench on its
# 0-1000 scale, others fractions
CASES: dict[str, tuple[Callable[..., Any], dict[str, float], dict[str, float], dict[str, float]]] = {
    "MME": (mme, {"MME": 2000.0}, {"MME": 0.0}, {"MME": 1775.0}),  # 8 x 200 + 125 + 50
    "MMBench": (mmbench, {"MMBench": 1.0}, {"MMBench": 0.0}, {"MMBench": 0.5}),
    "SEED": (seed, {"SEED": 1.0}, {"SEED": 0.0}, {"SEED": 2 / 3}),
    "GQA": (gqa, {"GQA": 1.0}, {"GQA": 0.0}, {"GQA": 0.75}),
    "ScienceQA": (scienceqa, {"ScienceQA": 1.0}, {"ScienceQA": 0.0}, {"ScienceQA": 1 / 3}),
    "MMMU": (mmmu, {"MMMU": 1.0}, {"MMMU": 0.0}, {"MMMU": 0.5}),
    # empty: MathVista maps an empty extraction to the nearest option, "cat" (4): 1/4
    "MathVista": (mathvista, {"MathVista": 1.0}, {"MathVista": 0.25}, {"MathVista": 0.5}),
    "AI2D": (ai2d, {"AI2D": 1.0}, {"AI2D": 0.0}, {"AI2D": 0.5}),
    "ChartQA": (chartqa, {"ChartQA": 1.0}, {"ChartQA": 0.0}, {"ChartQA": 0.5}),
    # OCRBench as its authors score it: right answers out of 1000 (1 of 4 right: 250)
    "OCRBench": (ocrbench, {"OCRBench": 1000.0}, {"OCRBench": 0.0}, {"OCRBench": 250.0}),
    "TextVQA": (textvqa, {"TextVQA": 1.0}, {"TextVQA": 0.0}, {"TextVQA": 0.8}),
    "DocVQA": (docvqa, {"DocVQA": 1.0}, {"DocVQA": 0.0}, {"DocVQA": 0.375}),
    "MMVP": (mmvp, {"MMVP": 1.0}, {"MMVP": 0.0}, {"MMVP": 0.5}),
    "RealWorldQA": (realworldqa, {"RealWorldQA": 1.0}, {"RealWorldQA": 0.0},
                    {"RealWorldQA": 2 / 3}),
    "RealWorldQA-parquet": (realworldqa_parquet, {"RealWorldQA": 1.0}, {"RealWorldQA": 0.0},
                            {"RealWorldQA": 2 / 3}),
    "CV-Bench": (cvbench, {"CV-Bench-2D": 1.0, "CV-Bench-3D": 1.0},
                 {"CV-Bench-2D": 0.0, "CV-Bench-3D": 0.0},
                 {"CV-Bench-2D": 0.75, "CV-Bench-3D": 0.5}),
}  # fmt: skip


def test_cases_cover_the_papers_16_benchmarks() -> None:
    covered = {b for _, p, _, _ in CASES.values() for b in p}
    assert covered == set(M.BENCHMARK_CATEGORY)


def _write_preds(path: Path, preds: Preds, as_lines: bool) -> Path:
    if as_lines:
        path.write_text(
            "".join(json.dumps({"id": k, "prediction": v}) + "\n" for k, v in preds.items())
        )
    else:
        path.write_text(json.dumps(preds) if preds else "")
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_published_layout_perfect_empty_partly(name: str, tmp_path: Path) -> None:
    from webssl_cli.eval.convert import read_predictions, score_predictions

    fixture, want_perfect, want_empty, want_partly = CASES[name]
    qs, perfect, partly = fixture(tmp_path)
    assert {q.id for q in qs} == set(perfect), "the fixture's predictions name every question"
    assert all(Path(q.image).is_file() for q in qs)
    for i, (preds, want) in enumerate(((perfect, want_perfect), ({}, want_empty),
                                       (partly, want_partly))):  # fmt: skip
        got, _ = score_predictions(qs, read_predictions(
            _write_preds(tmp_path / f"preds{i}.json{'l' * (i == 2)}", preds, as_lines=i == 2)))  # fmt: skip
        assert got == pytest.approx(want), (name, i, got)
        # the resampling units average to the score on the benchmark's own scale
        values = B.example_values(qs, {q.id: preds.get(q.id, "") for q in qs})
        for bench, v in values.items():
            assert sum(v.values()) / len(v) == pytest.approx(want[bench])


def test_example_units_are_pairs_groups_and_weighted_questions(tmp_path: Path) -> None:
    qs, _, partly = mme(tmp_path / "mme")
    v = B.example_values(qs, partly)["MME"]
    assert len(v) == 11 + 1  # one value per image pair, cognition's included at zero
    assert v["commonsense_reasoning/a"] == 0.0
    qs, _, partly = mmvp(tmp_path / "mmvp")
    assert B.example_values(qs, partly)["MMVP"] == {"pair0": 1.0, "pair1": 0.0}
    qs, _, partly = cvbench(tmp_path / "cv")
    two = B.example_values(qs, partly)["CV-Bench-2D"]
    # 3 questions, 2 sources: ADE20K's right one weighs 3 / (2 x 2), COCO's 3 / (2 x 1)
    assert two == pytest.approx({"CV-Bench-2D-0": 0.75, "CV-Bench-2D-1": 0.0, "CV-Bench-2D-2": 1.5})
    from webssl_cli.eval.convert import breakdowns

    assert breakdowns(qs, partly)["CV-Bench"] == pytest.approx(
        {"ADE20K": 0.5, "COCO": 1.0, "Omni3D": 0.5, "2D": 0.75, "3D": 0.5, "Overall": 0.625}
    )


def test_authors_reports() -> None:
    # OCRBench: counts per category, recognition summed; 1000 items all right would be 1000
    rep = M.ocrbench_score([("Regular Text Recognition", True), ("Digit String Recognition", True),
                            (M.OCRBENCH_HME, False), ("Doc-oriented VQA", True)])  # fmt: skip
    assert rep == {"Text Recognition": 2.0, M.OCRBENCH_HME: 0.0, "Doc-oriented VQA": 1.0,
                   "Final Score": 3.0}  # fmt: skip
    cv = M.cvbench_score([("ADE20K", True), ("ADE20K", False), ("COCO", True), ("Omni3D", False)])
    assert cv["2D"] == 0.75 and cv["3D"] == 0.0 and cv["Overall"] == 0.375
    mme_rep = M.mme_score([("existence", "a", True), ("existence", "a", False)])
    assert mme_rep["perception"] == 50.0  # acc 50 + acc+ 0


def test_score_command(tmp_path: Path) -> None:
    qs, perfect, partly = mme(tmp_path)
    preds = _write_preds(tmp_path / "p.json", partly, as_lines=False)
    res = CliRunner().invoke(_app(), ["score", str(tmp_path / "suite" / "mme.jsonl"), str(preds)])
    assert res.exit_code == 0, res.output
    assert "MME\t1775.00" in res.output
    empty = _write_preds(tmp_path / "e.json", {}, as_lines=False)
    res = CliRunner().invoke(_app(), ["score", str(tmp_path / "suite" / "mme.jsonl"), str(empty)])
    assert "MME\t0.00" in res.output and f"{len(qs)} question(s) without" in res.output
    res = CliRunner().invoke(
        _app(), ["score", str(tmp_path / "suite" / "mme.jsonl"), str(preds), "--details"]
    )
    rep = json.loads(res.output[res.output.index("{") :])["MME"]
    assert rep["subtasks"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert rep["perception"] == 1775.0 and rep["cognition"] == 200.0
    qs, perfect, partly = ocrbench(tmp_path / "ocr")
    preds = _write_preds(tmp_path / "o.json", partly, as_lines=False)
    res = CliRunner().invoke(
        _app(), ["score", str(tmp_path / "ocr" / "suite" / "ocrbench.jsonl"), str(preds)]
    )
    assert "OCRBench\t250.00 of 1000" in res.output, res.output


def test_stored_scales_rows_and_categories() -> None:
    """MME and OCRBench are stored on their authors' scales with metrics that say so, and
    enter the categories (stored as fractions) divided by their maximum; the report's
    per-example weights use the same conversion."""
    from webssl_cli.eval.vqa import _scores
    from webssl_cli.report.evidence import _scale

    qs = [B.Question("m", "MME", "General", "i", "q", ["yes"], metric="yesno", group="a",
                     meta={"subtask": "existence"}),
          B.Question("o1", "OCRBench", "OCR & Chart", "i", "q", ["x"], metric="ocrbench",
                     meta={"category": "Doc-oriented VQA"}),
          B.Question("o2", "OCRBench", "OCR & Chart", "i", "q", ["y"], metric="ocrbench",
                     meta={"category": "Doc-oriented VQA"}),
          B.Question("t", "TextVQA", "OCR & Chart", "i", "q", ["z"] * 10)]  # fmt: skip
    per = B.example_values(qs, {"m": "yes", "o1": "x", "o2": "no", "t": "z"})
    rows, cats = _scores(qs, per, "encoder")
    by = {r["benchmark"]: r for r in rows}
    assert by["OCRBench"]["value"] == 500.0 and by["OCRBench"]["metric"] == "ocrbench_score"
    assert by["MME"]["value"] == 200.0 and by["MME"]["metric"] == "perception_score"
    assert by["TextVQA"]["value"] == 1.0
    assert cats["OCR & Chart"] == pytest.approx((0.5 + 1.0) / 2)
    assert cats["General"] == pytest.approx(200.0 / 2000.0)
    assert cats["Average"] == pytest.approx((0.1 + 0.75) / 2)
    assert _scale("OCRBench") * 1000 == _scale("MME") * 2000 == _scale("TextVQA") == 1.0


def test_mme_from_vlmevalkit_tsv_keeps_subtasks_and_pairs(tmp_path: Path) -> None:
    tsv = tmp_path / "MME.tsv"
    tsv.write_text(
        "index\timage\tquestion\tanswer\tcategory\timage_path\n"
        f"0\t{B64}\tIs there a dog?\tYes\texistence\texistence/1.jpg\n"
        "1\t0\tIs there a cat?\tNo\texistence\texistence/1.jpg\n"
        f"2\t{B64}\tAre there two?\tYes\tcount\tcount/2.jpg\n"
        "3\t2\tAre there three?\tNo\tcount\tcount/2.jpg\n"
    )
    qs = _convert(tmp_path, tsv, "vlmeval-tsv", "--benchmark", "MME")
    assert {q.meta["subtask"] for q in qs} == {"existence", "count"}
    right = {"MME-0": "yes", "MME-1": "no", "MME-2": "yes", "MME-3": "no"}
    assert B.benchmark_scores(qs, right) == {"MME": 400.0}  # 2 sub-tasks x (100 + 100)
    # count: 1/2 right (50), its image not both right (0): 200 + 50
    assert B.benchmark_scores(qs, dict(right, **{"MME-3": "yes"})) == {"MME": 250.0}


# ---- bad layouts: one line naming the file ----------------------------------------------------
def _fails(tmp: Path, source: Path, layout: str, needle: str, **kw: Any) -> None:
    from webssl_cli.errors import UserError
    from webssl_cli.eval.convert import convert

    with pytest.raises(UserError) as err:
        convert(layout, source, tmp / "o.jsonl", **kw)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_bad_layout_exits_2_without_traceback(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        _app(), ["convert", str(tmp_path / "nope.json"), str(tmp_path / "o"), "--layout", "gqa"]
    )
    assert res.exit_code == 2 and "nope.json" in res.output and "Traceback" not in res.output


def test_bad_layouts(tmp_path: Path) -> None:
    _fails(tmp_path, tmp_path / "nope.json", "ocrbench", "nope.json")
    bad = _json(
        tmp_path / "OCRBench.json", [{"image_path": "a.jpg", "question": "?", "answers": ["x"]}]
    )
    _fails(tmp_path, bad, "ocrbench", "OCRBench.json: item 0: missing field(s) type")
    _fails(tmp_path, _json(tmp_path / "val.json", {"x": 1}), "docvqa", "val.json: no 'data' list")
    (tmp_path / "broken.json").write_text("{")
    _fails(tmp_path, tmp_path / "broken.json", "gqa", "broken.json: not JSON")
    mm = tmp_path / "MMVP"
    mm.mkdir()
    (mm / "Questions.csv").write_text(
        "Index,Question,Options,Correct Answer\n1,?,(a) x (b) y,(a)\n"
    )
    _fails(tmp_path, mm, "mmvp", "1.jpg is missing")
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("index\tquestion\tA\tB\tanswer\timage\n1\t?\tx\ty\tA\tnot*base64*at*all\n")
    _fails(tmp_path, tsv, "vlmeval-tsv", "bad.tsv: image for 1 is not base64", benchmark="AI2D")
    tsv.write_text("index\tquestion\tanswer\n1\t?\tA\n")
    _fails(tmp_path, tsv, "vlmeval-tsv", "missing field(s) image", benchmark="AI2D")
    _fails(tmp_path, tmp_path, "mme", "no MME sub-task folders")
    _fails(tmp_path, tmp_path, "chartqa", "no test_human.json")
    (tmp_path / "t.jsonl").write_text(json.dumps({"idx": 0, "type": "4D", "source": "COCO",
        "image": "a.png", "question": "?", "choices": ["a"], "answer": "(A)"}) + "\n")  # fmt: skip
    _fails(tmp_path, tmp_path / "t.jsonl", "cvbench", "t.jsonl: item 0: type '4D'")
    _fails(tmp_path, tmp_path / "t.jsonl", "nonsense", "valid: mme, vlmeval-tsv")
    (tmp_path / "p.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(Exception, match=r"p.jsonl:1: not"):
        from webssl_cli.eval.convert import read_predictions

        read_predictions(tmp_path / "p.jsonl")
