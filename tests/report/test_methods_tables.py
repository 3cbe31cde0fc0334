"""The method section's table of scores only one method has (CLIP's zero-shot and retrieval):
each cell's score against its own random-init twin, paired, on the per-example outcomes."""

from __future__ import annotations

import numpy as np
import polars as pl

from webssl_cli.report.evidence import Evidence
from webssl_cli.report.methods import own_scores_table


def test_own_scores_table_pairs_each_cell_with_its_random_init_twin() -> None:
    rng = np.random.default_rng(0)
    n = 400
    outcomes = {"a": (rng.random(n) < 0.45, rng.random(n) < 0.10),  # learnt: detectable
                "b": (rng.random(n) < 0.12, rng.random(n) < 0.10)}  # fmt: skip
    examples = pl.DataFrame([
        {"uid": uid, "eval_name": "zeroshot", "variant": var, "benchmark": "synth-labelled",
         "example": f"e{i}", "value": float(v[i])}
        for uid, (enc, rnd) in outcomes.items() for var, v in (("encoder", enc), ("random-init", rnd))
        for i in range(n)
    ])  # fmt: skip
    results = (
        examples.select("uid", "eval_name", "variant", "benchmark")
        .unique()
        .with_columns(pl.lit(None, pl.Utf8).alias("category"))
    )
    ev = Evidence(examples, results, {"zeroshot top1": 100.0}, n_boot=400, seed=0)
    s = pl.DataFrame([
        {"uid": uid, "method": "clip", "model": "vit-pico", "params": 167_000, "samples_seen": ss,
         "label": "zeroshot top1", "eval_name": "zeroshot", "kind": "probe",
         "benchmark": "synth-labelled", "value": 100 * float(outcomes[uid][0].mean())}
        for uid, ss in (("a", 8000), ("b", 2000))
    ])  # fmt: skip
    table = own_scores_table(s, ev, ["zeroshot top1"])
    assert table is not None
    rows = {r[2]: r for r in table.rows}
    assert set(rows) == {"2K", "8K"} and rows["8K"][0] == "CLIP"
    enc, rnd = (float(rows["8K"][i].split()[0]) for i in (4, 5))
    assert (
        abs(enc - 100 * outcomes["a"][0].mean()) < 0.06
        and abs(rnd - 100 * outcomes["a"][1].mean()) < 0.06
    )
    assert rows["8K"][6].endswith(" detectable") and not rows["8K"][6].endswith(
        "not detectable at this scale"
    )
    assert rows["2K"][6].endswith("not detectable at this scale")


def test_twin_table_covers_shared_scores_of_other_methods_and_counts_lower_errors_as_better() -> (
    None
):
    rng = np.random.default_rng(1)
    n = 200
    # an MAE cell: δ1 higher than its twin, RMSE lower (better), both detectably
    outs = {"depth delta1 (synth-dense/delta1)": (rng.uniform(0.5, 0.7, n), rng.uniform(0.3, 0.5, n)),
            "depth rmse (synth-dense/rmse)": (rng.uniform(1.0, 1.4, n), rng.uniform(1.5, 1.9, n))}  # fmt: skip
    rows, score_rows = [], []
    for lab, (enc, rnd) in outs.items():
        bench = "synth-dense/" + lab.split("(synth-dense/")[1].rstrip(")")
        for var, v in (("encoder", enc), ("random-init", rnd)):
            rows += [{"uid": "m", "eval_name": "depth", "variant": var, "benchmark": bench,
                      "example": f"e{i}", "value": float(v[i])} for i in range(n)]  # fmt: skip
        score_rows.append({"uid": "m", "method": "mae", "model": "vit-nano", "params": 473_000,
                           "samples_seen": 8000, "label": lab, "eval_name": "depth", "kind": "probe",
                           "benchmark": bench, "value": float(enc.mean())})  # fmt: skip
    examples = pl.DataFrame(rows)
    results = (
        examples.select("uid", "eval_name", "variant", "benchmark")
        .unique()
        .with_columns(pl.lit(None, pl.Utf8).alias("category"))
    )
    ev = Evidence(examples, results, {}, n_boot=300, seed=0)
    labels = list(outs)
    assert own_scores_table(pl.DataFrame(score_rows), ev, []) is None  # shared scores: not asked
    table = own_scores_table(pl.DataFrame(score_rows), ev, [], {"mae": labels})
    assert table is not None and [r[3] for r in table.rows] == labels
    rmse = next(r for r in table.rows if "rmse" in r[3])
    assert rmse[6].startswith("-0.") and rmse[4].count(".") == 3  # metres, three decimals
    assert rmse[4].split()[0] == f"{outs[labels[1]][0].mean():.3f}"
    assert (
        "Web-MAE: detectably better than its random-init twin in 2 of 2 (cell, score) pairs"
        in table.note
    )
