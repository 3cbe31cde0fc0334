"""Benchmark JSONL format, converters from published layouts, scoring, and the eval commands."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from webssl_cli.eval import benchmarks as B
from webssl_cli.eval.commands import register

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_convert_vqa_layout_and_score(tmp_path: Path) -> None:
    qs = {"questions": [{"question_id": 7, "image_id": 42, "question": "What brand?"}]}
    ann = {
        "annotations": [
            {"question_id": 7, "answers": [{"answer": "nokia"}] * 9 + [{"answer": "samsung"}]}
        ]
    }
    (tmp_path / "q.json").write_text(json.dumps(qs))
    (tmp_path / "a.json").write_text(json.dumps(ann))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "42.jpg").write_bytes(PNG)
    out = tmp_path / "suite" / "textvqa.jsonl"
    res = CliRunner().invoke(
        _app(),
        ["convert", str(tmp_path / "q.json"), str(out), "--layout", "vqa", "--benchmark", "TextVQA",
         "--annotations", str(tmp_path / "a.json"), "--image-dir", str(tmp_path / "imgs")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (q,) = B.read_jsonl(out)
    assert q.benchmark == "TextVQA" and q.category == "OCR & Chart" and q.metric == "vqa_accuracy"
    assert q.image.endswith("imgs/42.jpg") and len(q.answers) == 10
    assert B.score(q, "Nokia.") == 1.0
    # the nine subsets that drop a "nokia" still hold the one "samsung": 9 x (1/3) / 10
    assert abs(B.score(q, "samsung") - 0.3) < 1e-9


def test_convert_vlmeval_tsv_with_circular(tmp_path: Path) -> None:
    img = base64.b64encode(PNG).decode()
    tsv = tmp_path / "mmb.tsv"
    tsv.write_text(
        "index\tquestion\thint\tA\tB\tC\tanswer\tcategory\timage\n"
        f"1\tWhich colour?\tnan\tred\tgreen\tblue\tB\tattr\t{img}\n"
    )
    out = tmp_path / "mmb.jsonl"
    res = CliRunner().invoke(
        _app(),
        [
            "convert",
            str(tsv),
            str(out),
            "--layout",
            "vlmeval-tsv",
            "--benchmark",
            "MMBench",
            "--circular",
        ],
    )
    assert res.exit_code == 0, res.output
    qs = B.read_jsonl(out)
    assert [q.answers[0] for q in qs] == ["B", "A", "C"] and {q.group for q in qs} == {"1"}
    assert Path(qs[0].image).read_bytes() == PNG
    assert "A. red B. green C. blue" in qs[0].prompt()
    preds = {qs[0].id: "B", qs[1].id: "A", qs[2].id: "green"}  # third: option text matched
    assert B.benchmark_scores(qs, preds) == {"MMBench": 1.0}
    preds[qs[2].id] = "A"
    assert B.benchmark_scores(qs, preds) == {
        "MMBench": 0.0
    }  # circular: one miss fails the question


def test_mme_benchmark_score() -> None:
    qs = [
        B.Question("m1", "MME", "General", "i", "Is there a dog?", ["Yes"], "yesno", group="img1", meta={"subtask": "existence"}),
        B.Question("m2", "MME", "General", "i", "Is there a cat?", ["No"], "yesno", group="img1", meta={"subtask": "existence"}),
    ]  # fmt: skip
    assert B.benchmark_scores(qs, {"m1": "yes", "m2": "No."}) == {"MME": 200.0}
    assert B.benchmark_scores(qs, {"m1": "yes", "m2": "yes"}) == {"MME": 50.0}


def test_example_values_are_the_scoring_units_and_average_to_the_score() -> None:
    """Plain questions are their own examples; circular MC and MME pairs are scored over
    groups, so the group is the example; each benchmark's mean is its reported score."""
    import pytest

    Q = B.Question
    mme = [
        Q("m1", "MME", "General", "i", "Dog?", ["yes"], "yesno", group="img1", meta={"subtask": "existence"}),
        Q("m2", "MME", "General", "i", "Cat?", ["no"], "yesno", group="img1", meta={"subtask": "existence"}),
        Q("m3", "MME", "General", "j", "Red?", ["yes"], "yesno", group="img2", meta={"subtask": "color"}),
        Q("m4", "MME", "General", "j", "Blue?", ["no"], "yesno", group="img2", meta={"subtask": "color"}),
        Q("m5", "MME", "General", "k", "Sum?", ["yes"], "yesno", group="img3", meta={"subtask": "numerical_calculation"}),
    ]  # fmt: skip
    circ = [Q(f"c{i}", "MMBench", "General", "i", "?", [L], "mc", ["x", "y", "z"], group=g)
            for i, (L, g) in enumerate([("A", "g1"), ("B", "g1"), ("C", "g2"), ("A", "g2")])]  # fmt: skip
    plain = [
        Q(f"p{i}", "GQA", "General", "i", "?", [a], "vqa_accuracy") for i, a in enumerate("abc")
    ]
    preds = {"m1": "yes", "m2": "no", "m3": "yes", "m4": "yes", "m5": "yes",
             "c0": "A", "c1": "B", "c2": "C", "c3": "B", "p0": "a", "p1": "b", "p2": "x"}  # fmt: skip
    qs = mme + circ + plain
    values = B.example_values(qs, preds)
    # keyed by sub-task too: MME's sub-tasks reuse image files (COCO's, across existence,
    # count, position and colour)
    assert set(values["MME"]) == {"existence/img1", "color/img2", "numerical_calculation/img3"}
    assert values["MMBench"] == {"g1": 1.0, "g2": 0.0}
    assert values["GQA"] == {"p0": 1.0, "p1": 1.0, "p2": 0.0}
    # MME perception: existence 100 + 100, colour 50 + 0 (cognition ignored) = 250
    assert sum(values["MME"].values()) / 3 == pytest.approx(250.0)
    assert values["MME"]["numerical_calculation/img3"] == 0.0
    scores = B.benchmark_scores(qs, preds)
    assert scores["MME"] == pytest.approx(250.0) and scores["MMBench"] == 0.5
    for bench, v in values.items():
        assert scores[bench] == sum(v.values()) / len(v)


def test_bad_jsonl_is_one_line_user_error(tmp_path: Path) -> None:
    import pytest

    from webssl_cli.errors import UserError

    p = tmp_path / "x.jsonl"
    p.write_text(
        '{"id": "1", "benchmark": "b", "category": null, "image": "i", "question": "q", "answers": ["a"], "metric": "bleu"}\n'
    )
    with pytest.raises(UserError, match=r"x.jsonl:1: metric"):
        B.read_jsonl(p)


def test_export_command(tmp_path: Path) -> None:
    import torch

    from webssl_cli.eval.encoders import load_hf_dinov2, save_own
    from webssl_cli.specs.registry import get_model
    from webssl_cli.train.vit import build_backbone

    spec = get_model("vit-test")
    model = build_backbone(spec, layerscale=spec.layerscale)
    save_own(model, spec, tmp_path / "cell" / "train" / "teacher_backbone.pt")
    res = CliRunner().invoke(_app(), ["export", str(tmp_path / "cell"), str(tmp_path / "hf")])
    assert res.exit_code == 0, res.output
    enc = load_hf_dinov2(tmp_path / "hf")
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(enc(x)[0], model.forward_features(x)["x_norm_clstoken"], atol=1e-5)
    res = CliRunner().invoke(_app(), ["export", str(tmp_path / "nope"), str(tmp_path / "hf2")])
    assert res.exit_code == 2 and "no such checkpoint" in " ".join(res.output.split())


def test_benchmark_directory_suite(tmp_path: Path) -> None:
    """A suite directory: *.jsonl questions plus LLaVA-format train/stage{1,2}.json."""
    from webssl_cli.eval.benchmarks import load_directory

    (tmp_path / "train").mkdir()
    (tmp_path / "img.png").write_bytes(PNG)
    (tmp_path / "train" / "a.png").write_bytes(PNG)
    q = B.Question("t1", "TextVQA", "OCR & Chart", "img.png", "what?", ["x"])
    B.write_jsonl(
        tmp_path / "textvqa.jsonl",
        [q, B.Question("t2", "TextVQA", "OCR & Chart", "img.png", "why?", ["y"])],
    )
    conv = [
        {
            "id": "c",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nQ?"},
                {"from": "gpt", "value": "A"},
            ],
        }
    ]
    (tmp_path / "train" / "stage2.json").write_text(json.dumps(conv))
    images, s1, s2, test = load_directory(tmp_path, max_questions=1)
    assert [t.id for t in test] == ["t1"] and s1 == []
    assert s2 == [(str((tmp_path / "train" / "a.png").resolve()), "Q?", "A")]
    assert images[test[0].image] == PNG and images[s2[0][0]] == PNG
