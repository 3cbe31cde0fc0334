from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.errors import UserError
from webssl_cli.results import queries
from webssl_cli.results.ingest import ingest
from webssl_cli.results.reference import CATEGORIES, category_scores, read_reference

# Illustrative rows in the paper's table format (per-benchmark scores, MME as the raw
# perception score, categories and average rounded to one decimal as papers print them).
# The numbers are made up for the test; the aggregation is the paper's.
BENCH = [
    "MME",
    "MMBench",
    "SEED",
    "GQA",
    "SQA",
    "MMMU",
    "MathVista",
    "AI2D",
    "ChartQA",
    "OCRBench",
    "TextVQA",
    "DocVQA",
    "MMVP",
    "RealWorldQA",
    "CV-Bench 2D",
    "CV-Bench 3D",
]
ROWS = [
    (
        "1B",
        "2B",
        "full",
        [
            1530.2,
            63.1,
            68.9,
            62.0,
            69.5,
            33.0,
            10.2,
            58.3,
            28.1,
            22.0,
            45.3,
            21.4,
            30.7,
            54.1,
            60.0,
            62.2,
        ],
    ),
    (
        "3B",
        "2B",
        "full",
        [
            1582.7,
            65.8,
            70.3,
            62.9,
            70.8,
            34.1,
            11.0,
            60.5,
            36.4,
            29.5,
            50.0,
            30.2,
            33.3,
            55.7,
            62.1,
            63.4,
        ],
    ),
    (
        "7B",
        "2B",
        "full",
        [
            1625.9,
            68.0,
            71.5,
            63.4,
            71.1,
            35.6,
            11.6,
            61.9,
            43.0,
            35.1,
            53.8,
            38.7,
            36.0,
            57.3,
            63.8,
            64.0,
        ],
    ),
    (
        "7B",
        "8B",
        "light",
        [
            1640.0,
            69.2,
            72.0,
            63.5,
            71.6,
            35.3,
            11.9,
            62.8,
            52.6,
            40.2,
            57.0,
            49.9,
            36.7,
            57.9,
            64.9,
            65.1,
        ],
    ),
]


def paper_categories(vals: list[float]) -> dict[str, float]:
    v = dict(zip(BENCH, vals, strict=True))
    v["MME"] /= 20
    cats = {
        "General": (v["MME"] + v["MMBench"] + v["SEED"] + v["GQA"]) / 4,
        "Knowledge": (v["SQA"] + v["MMMU"] + v["MathVista"] + v["AI2D"]) / 4,
        "OCR & Chart": (v["ChartQA"] + v["OCRBench"] + v["TextVQA"] + v["DocVQA"]) / 4,
        "Vision-Centric": (v["MMVP"] + v["RealWorldQA"] + v["CV-Bench 2D"] + v["CV-Bench 3D"]) / 4,
    }
    cats["Average"] = sum(cats.values()) / 4
    return cats


def write_csv(path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "samples_seen", "data_filter", *BENCH, *CATEGORIES, "Average"])
        for model, samples, filt, vals in ROWS:
            cats = paper_categories(vals)
            w.writerow(
                [model, samples, filt, *vals, *(f"{cats[c]:.1f}" for c in [*CATEGORIES, "Average"])]
            )
    return path


def test_category_scores_is_the_paper_aggregation() -> None:
    for _, _, _, vals in ROWS:
        got = category_scores(dict(zip(BENCH, vals, strict=True)))
        want = paper_categories(vals)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k])


def test_import_reproduces_the_reference_columns(study_dir: Path, tmp_path: Path) -> None:
    ingest(study_dir)
    path = write_csv(tmp_path / "paper.csv")
    rows, info = read_reference(path, "paper")
    assert len(info.benchmarks) == 16 and info.other_scores == []
    assert set(info.check) == {*CATEGORIES, "Average"}
    assert max(info.check.values()) <= 0.05  # only the paper's rounding to one decimal
    r = CliRunner().invoke(
        app, ["results", "import-reference", str(path), "--name", "paper", "--into", str(study_dir)]
    )
    assert r.exit_code == 0, r.output
    assert "reproduced" in r.output
    with queries.connect(study_dir) as con:
        ref = con.execute(
            "SELECT c.model, c.params, c.samples_seen, e.value FROM cells c JOIN eval_categories e USING (uid)"
            " WHERE c.study = 'paper' AND e.category = 'Average' ORDER BY c.uid"
        ).fetchall()
        assert [r[0] for r in ref] == ["1B", "3B", "7B", "7B"]
        assert ref[0][1] > 1e9 and ref[0][2] == 2_000_000_000
        assert ref[2][3] == pytest.approx(paper_categories(ROWS[2][3])["Average"])
        mme = con.execute(
            "SELECT value FROM eval_results WHERE benchmark = 'MME' AND uid = 'ref:paper:1'"
        ).fetchone()
        assert mme == (pytest.approx(1530.2 / 20),)
        # a re-import replaces, and a re-ingest leaves the reference alone
        n = con.execute("SELECT count(*) FROM eval_results").fetchone()
    CliRunner().invoke(
        app, ["results", "import-reference", str(path), "--name", "paper", "--into", str(study_dir)]
    )
    ingest(study_dir)
    with queries.connect(study_dir) as con:
        assert con.execute("SELECT count(*) FROM eval_results").fetchone() == n
        kinds = dict(con.execute("SELECT study, kind FROM studies").fetchall())
        assert kinds == {"synthetic": "run", "paper": "reference"}


def test_bad_reference_csv(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("name,MME\nx,1\n")
    with pytest.raises(UserError, match="no 'model' column"):
        read_reference(p, "x")
    p.write_text("model,samples_seen,MME\n7B,lots,1\n")
    with pytest.raises(UserError, match=r"bad.csv:2: samples_seen"):
        read_reference(p, "x")
