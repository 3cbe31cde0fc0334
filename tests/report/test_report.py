from __future__ import annotations

import re
from pathlib import Path

import duckdb
import matplotlib.image as mpimg
from typer.testing import CliRunner

from webssl_cli.cli import app
from webssl_cli.report.build import build_report
from webssl_cli.results.ingest import ingest
from webssl_cli.results.synthetic import write_cell, write_study

# the tiny study (3 models × 2 budgets) does not support a 3-parameter law: no fit plot
PLOTS = ("score_vs_params", "score_vs_samples", "filter_bars", "loss_curves")
INTERVAL = r"[0-9]+\.[0-9] \[[0-9]+\.[0-9], [0-9]+\.[0-9]\]"


def test_report_files_exist_and_are_not_empty(tiny_report: Path) -> None:
    md = (tiny_report / "report.md").read_text()
    for section in (
        "## Findings",
        "Scores per cell",
        "model size × samples seen",
        "model size × data filter",
        "Scores per benchmark",
        "Data filters",
        "Gain over the baseline, per cell",
        "Trends along each axis",
        "Scaling-law fits",
        "Training diagnostics per cell",
    ):
        assert section in md, section
    assert md.index("## Findings") < md.index("## Tables")
    # 3 models, 2 budgets: no law is fitted, so nothing is extrapolated
    assert "Extrapolation" not in md and "not fitted: 3 distinct point(s)" in md
    for name in PLOTS:
        png, svg = tiny_report / f"{name}.png", tiny_report / f"{name}.svg"
        assert png.stat().st_size > 20_000, name
        img = mpimg.imread(png)
        assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 0.05  # rendered, not blank
        assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
        assert f"]({name}.png)" in md


def test_every_score_carries_an_interval(tiny_report: Path) -> None:
    md = (tiny_report / "report.md").read_text()
    table = md.split("### Scores per cell")[1].split("###")[0]
    rows = [r for r in table.splitlines() if r.startswith("| vit-")]
    assert len(rows) == 12
    for r in rows:
        scores = [c.strip() for c in r.strip("|").split("|")][6:]
        assert len(scores) == 6 and all(re.fullmatch(INTERVAL, c) for c in scores), r


def test_findings_state_gains_trends_and_null_results(tiny_report: Path) -> None:
    md = (tiny_report / "report.md").read_text()
    top = md.split("## Findings")[1].split("## Tables")[0]
    # the synthetic encoder sits far above its baselines (kNN random-init 15%, blind VQA 25%)
    assert re.search(
        r"knn top1: the encoder is detectably above its random-init baseline in 12 of 12", top
    )
    assert re.search(
        r"Average: the encoder is detectably above its blind baseline in 1[0-2] of 12", top
    )
    assert "per doubling of parameters (95% CI " in top and "per doubling of samples seen" in top
    assert "not detectable at this scale" in top  # small effects at 60 examples: honest nulls
    assert ": detectable." in top


def test_diagnostics_warn_on_uniform_and_collapsed_cells(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_study(root, models=("vit-pico", "vit-nano"), budgets=(10_000,), filters=("none",))
    write_cell(root, "vit-micro", 10_000, "none", params=1_220_000, uniform=True, collapsed=True,
               n_examples=60)  # fmt: skip
    ingest(root)
    build_report(root, tmp_path / "out", n_boot=10, n_boot_stats=200)
    md = (tmp_path / "out" / "report.md").read_text()
    top = md.split("## Tables")[0]
    assert top.count("Warning: ") == 2
    assert (
        "vit-micro, 10K samples, filter none" in top
        and "did not leave the uniform assignment" in top
    )
    assert "collapsed (feature effective rank 1" in top


def test_seeds_pool_into_one_point(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_study(root, models=("vit-pico", "vit-nano"), budgets=(10_000,), filters=("none",),
                seeds=(0, 1, 2))  # fmt: skip
    ingest(root)
    build_report(root, tmp_path / "out", n_boot=10, n_boot_stats=200)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "vit-pico, 10K samples, none, 3 seeds" in md
    pivot = md.split("model size × samples seen")[1].split("###")[0]
    assert len(re.findall(INTERVAL, pivot)) == 2


def test_old_evals_without_outcomes_say_so(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_study(root, models=("vit-pico", "vit-nano"), budgets=(10_000,), filters=("none",),
                n_examples=0)  # fmt: skip
    ingest(root)
    build_report(root, tmp_path / "out", n_boot=10)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "No per-example outcomes" in md.split("## Tables")[0]
    assert not re.search(INTERVAL, md.split("### Scores per cell")[1].split("###")[0])


def test_html_is_self_contained(tiny_report: Path) -> None:
    html = (tiny_report / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(PLOTS)
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing to fetch
    assert "<script" not in html
    assert "<table>" in html and "Scores per cell" in html


def test_fits_are_stored(tiny_report: Path, tiny_study: Path) -> None:
    con = duckdb.connect(str(tiny_study / "results.duckdb"), read_only=True)
    rows = con.execute("SELECT DISTINCT form, note FROM fits WHERE study = 'synthetic'").fetchall()
    con.close()
    assert {r[0] for r in rows} == {"params", "samples_seen", "joint"}
    assert all(r[1].startswith("not fitted") for r in rows)


def test_report_cli(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_study(root, models=("vit-pico", "vit-nano"), budgets=(10_000,), filters=("none",))
    r = CliRunner().invoke(
        app, ["report", str(root), "--out", str(tmp_path / "out"), "--bootstrap", "20"]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_degrades_with_single_valued_axes(tmp_path: Path) -> None:
    # one model, several budgets, one filter; one cell still running without evals
    root = tmp_path / "s"
    write_study(root, models=("vit-nano",), budgets=(5_000, 10_000, 20_000, 40_000, 80_000, 160_000),
                filters=("light",), n_examples=200)  # fmt: skip
    cell = write_cell(root, "vit-micro", 5_000, "light", params=1_220_000, state="running")
    for f in (cell / "eval").iterdir():
        f.unlink()
    ingest(root)
    res = build_report(root, tmp_path / "out", n_boot=20)
    md = (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / "filter_bars.png").exists()
    assert (tmp_path / "out" / "score_vs_samples.png").exists()
    assert any("data filter has a single value" in n for n in res.notes)
    assert "running" in md
    # six budgets (≥ 3 parameters + 2) and a detectable trend: the samples-seen law is fitted,
    # with intervals, a hold-out and an extrapolation
    f = next(f for f in res.fits if f.form == "samples_seen" and f.target == "Average")
    assert f.ok and f.intervals() is not None and f.holdout is not None
    assert f.extra["extrapolate"] and "Extrapolation" in md and "Hold-out" in md
    assert (tmp_path / "out" / "fits.png").exists()
    # the findings say how the law did on its hold-out, with the interval it predicted
    h = f.holdout
    assert h.lo is not None and h.hi is not None
    findings = md.split("## Findings")[1].split("## Tables")[0]
    verdict = "inside" if h.lo <= h.actual <= h.hi else "outside"
    assert (f"Average: a saturating law along samples seen (model=vit-nano, data filter=light) is fitted to 6 points; "
            f"fitted without its largest scale (160K) it predicts {h.predicted:.1f} [{h.lo:.1f}, {h.hi:.1f}], "
            f"and the measured {h.actual:.1f} falls {verdict} that 95% interval.") in findings  # fmt: skip


def test_probe_only_study(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_study(
        root, models=("vit-test", "vit-pico", "vit-nano"), budgets=(10_000,), filters=("none",)
    )
    for vqa in root.glob("cells/*/eval/vqa.json"):
        vqa.unlink()
    ingest(root)
    build_report(root, tmp_path / "out", n_boot=20)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "knn top1" in md and "| Average" not in md


def test_reference_studies_appear_in_tables(tmp_path: Path) -> None:
    from webssl_cli.results.reference import import_reference

    root = tmp_path / "s"
    write_study(
        root, models=("vit-pico", "vit-nano", "vit-micro"), budgets=(10_000,), filters=("none",)
    )
    ingest(root)
    csv = tmp_path / "ref.csv"
    csv.write_text(
        "model,samples_seen,MME,MMBench,SQA,ChartQA,MMVP\n1B,2B,1500,60,70,30,40\n7B,2B,1600,65,72,40,45\n"
    )
    import_reference(csv, "paper", root)
    build_report(root, tmp_path / "out", n_boot=10)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "### Reference: paper" in md and "6.45B" in md


def test_a_score_its_outcomes_do_not_reproduce_gets_no_interval(tmp_path: Path) -> None:
    import json

    root = tmp_path / "s"
    write_study(root, models=("vit-pico", "vit-nano"), budgets=(10_000,), filters=("none",))
    knn = sorted(root.glob("cells/*/eval/knn.json"))[0]
    doc = json.loads(knn.read_text())
    doc["results"][0]["value"] = 0.999  # not the mean of its outcomes any more
    knn.write_text(json.dumps(doc))
    ingest(root)
    res = build_report(root, tmp_path / "out", n_boot=10, n_boot_stats=200)
    md = (tmp_path / "out" / "report.md").read_text()
    assert any("not the mean of their per-example outcomes" in n for n in res.notes)
    table = md.split("### Scores per cell")[1].split("###")[0]
    knn_cells = [
        r.strip("|").split("|")[-1].strip() for r in table.splitlines() if r.startswith("| vit-")
    ]
    assert knn_cells and not any("[" in c for c in knn_cells)


def test_collapse_is_judged_against_the_features_own_scale() -> None:
    """LayerNorm keeps each vector's scale near 1: a spread of 1e-5 across images is collapse
    even though the effective rank of the (tiny) centred features looks healthy."""
    import polars as pl

    from webssl_cli.report.findings import diagnostics

    cells = pl.DataFrame({"uid": ["a", "b"], "model": ["m", "m"], "samples_seen": [64, 64],
                          "data_filter": ["full", "light"]})  # fmt: skip
    feats = {("a", "effective_rank"): 11.6, ("a", "dim_std_mean"): 6e-6, ("a", "feature_rms"): 1.0,
             ("b", "effective_rank"): 11.6, ("b", "dim_std_mean"): 0.2, ("b", "feature_rms"): 1.0}  # fmt: skip
    d = diagnostics(cells, {}, {}, feats)
    assert len(d.warnings) == 1 and "(a) collapsed" in d.warnings[0]
