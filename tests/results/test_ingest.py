from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import pytest

from webssl_cli.results.ingest import ingest
from webssl_cli.results.schema import TABLE_NAMES
from webssl_cli.results.synthetic import write_cell


def dump(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for t in TABLE_NAMES:
            rows = con.execute(f"SELECT * FROM {t}").fetchall()
            out[t] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def test_ingest_loads_every_table(study_dir: Path) -> None:
    rep = ingest(study_dir)
    assert rep.skipped == []
    assert rep.cells_updated == 12
    d = dump(study_dir / "results.duckdb")
    assert len(d["cell_specs"]) == 12
    assert len(d["jobs"]) == 36
    assert len(d["train_metrics"]) == 12 * 20 * 11 == rep.metric_rows
    # encoder and baseline variants: VQA 8 benchmarks × (encoder, blind), kNN × (encoder, random-init)
    assert len(d["eval_results"]) == 12 * (8 + 1) * 2
    assert len(d["eval_categories"]) == 12 * 5 * 2
    assert len(d["eval_examples"]) == 12 * (2 * 8 * 60 + 2 * 240)
    assert len(d["eval_diagnostics"]) == 12 * 5
    assert len(d["filter_stats"]) == 1
    assert len(d["studies"]) == 1
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    row = con.execute(
        "SELECT model, params, samples_seen, data_filter, state FROM cells WHERE model = 'vit-nano' "
        "AND samples_seen = 10000 AND data_filter = 'heavy'"
    ).fetchone()
    assert row is not None and row[1] > 100_000 and row[4] == "done"
    names = {r[0] for r in con.execute("SELECT DISTINCT name FROM train_metrics").fetchall()}
    assert {"loss", "lr", "grad_norm"} <= names and "step" not in names and "time" not in names
    con.close()


def test_ingest_is_idempotent(study_dir: Path) -> None:
    ingest(study_dir)
    first = dump(study_dir / "results.duckdb")
    t0 = time.perf_counter()
    rep = ingest(study_dir)
    assert time.perf_counter() - t0 < 1.0
    assert rep.files_read == 0 and rep.cells_updated == 0
    assert dump(study_dir / "results.duckdb") == first
    # A fresh database from the same files has the same contents too.
    os.rename(study_dir / "results.duckdb", study_dir / "old.duckdb")
    ingest(study_dir)
    assert dump(study_dir / "results.duckdb") == first


def test_incremental_reads_only_changed_files(study_dir: Path) -> None:
    ingest(study_dir)
    before = dump(study_dir / "results.duckdb")
    cell = next((study_dir / "cells").iterdir())
    # change one eval file: only its rows are replaced
    ev = json.loads((cell / "eval" / "knn.json").read_text())
    ev["results"][0]["value"] = 0.123
    (cell / "eval" / "knn.json").write_text(json.dumps(ev))
    # a new cell appears
    write_cell(study_dir, "vit-test", 10_000, "none", params=30_000, n_examples=60)
    rep = ingest(study_dir)
    assert rep.files_read == 1 + 7  # knn.json + the new cell's five files and two outcome files
    after = dump(study_dir / "results.duckdb")
    assert len(after["cell_specs"]) == 13
    assert len(after["train_metrics"]) == len(before["train_metrics"]) + 220
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    v = con.execute(
        "SELECT value FROM eval_results WHERE uid = ? AND task = 'knn' AND variant = 'encoder'",
        [cell.name],
    ).fetchall()
    assert v == [(0.123,)]
    con.close()
    # a removed eval file removes its rows
    (cell / "eval" / "knn.json").unlink()
    rep = ingest(study_dir)
    assert rep.files_removed == 1
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    assert con.execute(
        "SELECT count(*) FROM eval_results WHERE uid = ? AND task = 'knn'", [cell.name]
    ).fetchone() == (0,)
    con.close()


def test_corrupt_files_are_reported_and_never_leave_a_partial_cell(study_dir: Path) -> None:
    ingest(study_dir)
    cells = sorted((study_dir / "cells").iterdir())
    a, b = cells[0], cells[1]
    before = dump(study_dir / "results.duckdb")
    # cell a: a half-written metrics line (and a valid new eval value that must NOT be applied)
    with open(a / "train" / "metrics.jsonl", "a") as f:
        f.write('{"step": 21, "samples_seen": 1, "lo')
    ev = json.loads((a / "eval" / "vqa.json").read_text())
    ev["categories"]["Average"] = 0.999
    (a / "eval" / "vqa.json").write_text(json.dumps(ev))
    # cell b: corrupt status.json
    (b / "status.json").write_text("{not json")
    # a new cell with a corrupt cell.json
    new = write_cell(study_dir, "vit-test", 10_000, "none", params=30_000)
    good_cell = (new / "cell.json").read_text()
    (new / "cell.json").write_text('{"uid": ')
    rep = ingest(study_dir)
    assert len(rep.skipped) == 3, rep.skipped
    text = "\n".join(rep.skipped)
    assert "metrics.jsonl" in text and "status.json" in text and "cell.json" in text
    after = dump(study_dir / "results.duckdb")
    assert after == before  # nothing of the three cells changed, nothing partial appeared
    # once fixed, the next ingest picks everything up
    lines = (a / "train" / "metrics.jsonl").read_text().splitlines()[:-1]
    (a / "train" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (b / "status.json").write_text(
        json.dumps({"stages": {"train": {"state": "failed", "error": "oom"}}})
    )
    (new / "cell.json").write_text(good_cell)
    rep = ingest(study_dir)
    assert rep.skipped == []
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    assert con.execute(
        "SELECT value FROM eval_categories WHERE uid = ? AND category = 'Average'", [a.name]
    ).fetchone() == (0.999,)
    assert con.execute("SELECT state FROM cells WHERE uid = ?", [b.name]).fetchone() == ("failed",)
    assert con.execute("SELECT count(*) FROM cells").fetchone() == (13,)
    con.close()


def test_metrics_with_varying_keys_and_nan(tmp_path: Path) -> None:
    root = tmp_path / "s"
    cell = write_cell(root, "vit-pico", 1000, "none", params=1e5, steps=3)
    (cell / "train" / "metrics.jsonl").write_text(
        '{"step": 1, "samples_seen": 10, "time": 1.0, "loss": NaN, "note": "warmup"}\n'
        '{"step": 2, "samples_seen": 20, "time": 2.0, "loss": 3.5, "new_metric": 7}\n'
    )
    rep = ingest(root)
    assert rep.skipped == []
    con = duckdb.connect(str(root / "results.duckdb"), read_only=True)
    rows = con.execute("SELECT step, name, value FROM train_metrics ORDER BY step, name").fetchall()
    con.close()
    assert [(s, n) for s, n, _ in rows] == [(1, "loss"), (2, "loss"), (2, "new_metric")]
    assert rows[0][2] != rows[0][2]  # NaN kept: a diverged loss is data


@pytest.mark.parametrize("bad", ["[1, 2]", '{"stages": 3}'])
def test_wrong_shapes_are_bad_files(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "s"
    cell = write_cell(root, "vit-pico", 1000, "none", params=1e5, steps=3)
    (cell / "status.json").write_text(bad)
    rep = ingest(root)
    assert len(rep.skipped) == 1 and "status.json" in rep.skipped[0]


def test_a_removed_cell_disappears(study_dir: Path) -> None:
    import shutil

    ingest(study_dir)
    cell = sorted((study_dir / "cells").iterdir())[0]
    shutil.rmtree(cell)
    rep = ingest(study_dir)
    assert rep.files_removed == 7
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    for table in (
        "cell_specs",
        "jobs",
        "train_metrics",
        "eval_results",
        "eval_categories",
        "eval_examples",
        "eval_diagnostics",
        "files",
    ):
        assert con.execute(
            f"SELECT count(*) FROM {table} WHERE uid = ?", [cell.name]
        ).fetchall() == [(0,)], table
    con.close()


def test_database_held_by_another_writer_is_a_user_error(study_dir: Path) -> None:
    from webssl_cli.errors import UserError

    ingest(study_dir)
    code = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(30)"
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", code, str(study_dir / "results.duckdb")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(UserError, match="another"):
            ingest(study_dir)
    finally:
        holder.kill()
        holder.wait()


def test_a_metric_written_as_text_in_one_file_survives(tmp_path: Path) -> None:
    root = tmp_path / "s"
    a = write_cell(root, "vit-pico", 1000, "none", params=1e5, steps=2)
    b = write_cell(root, "vit-nano", 1000, "none", params=4e5, steps=2)
    (a / "train" / "metrics.jsonl").write_text(
        '{"step": 1, "samples_seen": 10, "loss": "NaN", "lr": 0.1}\n'
    )
    (b / "train" / "metrics.jsonl").write_text(
        '{"step": 1, "samples_seen": 10, "loss": 2.5, "lr": 0.1, "tag": "x"}\n'
    )
    rep = ingest(root)
    assert rep.skipped == []
    con = duckdb.connect(str(root / "results.duckdb"), read_only=True)
    rows = dict(con.execute("SELECT uid || ':' || name, value FROM train_metrics").fetchall())
    con.close()
    assert rows[f"{b.name}:loss"] == 2.5 and rows[f"{a.name}:lr"] == 0.1
    assert rows[f"{a.name}:loss"] != rows[f"{a.name}:loss"]  # NaN
    assert not any(k.endswith(":tag") for k in rows)


def test_outcomes_and_variants_are_ingested_and_match_the_scores(study_dir: Path) -> None:
    ingest(study_dir)
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    try:
        # the mean of the outcomes of one (cell, eval, variant, benchmark) is the reported score
        worst = con.execute(
            "SELECT max(abs(r.value - x.m)) FROM eval_results r JOIN (SELECT uid, eval_name, "
            "variant, benchmark, avg(value) AS m FROM eval_examples GROUP BY ALL) x "
            "USING (uid, eval_name, variant, benchmark)"
        ).fetchone()
        assert worst is not None and worst[0] < 1e-9
        variants = dict(con.execute(
            "SELECT eval_name, list(DISTINCT variant ORDER BY variant) FROM eval_results GROUP BY 1"
        ).fetchall())  # fmt: skip
        assert variants == {"knn": ["encoder", "random-init"], "vqa": ["blind", "encoder"]}
        blind = con.execute(
            "SELECT count(*) FROM eval_categories WHERE variant = 'blind' AND category = 'Average'"
        ).fetchone()
        assert blind == (12,)
        names = {r[0] for r in con.execute("SELECT DISTINCT name FROM eval_diagnostics").fetchall()}
        assert names == {"effective_rank", "dim", "dim_std_mean", "dim_std_min", "feature_rms"}
    finally:
        con.close()


def test_changed_and_removed_outcome_files_replace_their_rows(study_dir: Path) -> None:
    ingest(study_dir)
    cell = sorted((study_dir / "cells").iterdir())[0]
    path = cell / "eval" / "knn.examples.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:10]) + "\n")
    rep = ingest(study_dir)
    assert rep.files_read == 1 and rep.skipped == []
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM eval_examples WHERE uid = ? AND eval_name = 'knn'",
                    [cell.name]).fetchone()  # fmt: skip
    con.close()
    assert n == (10,)
    path.unlink()
    ingest(study_dir)
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM eval_examples WHERE uid = ? AND eval_name = 'knn'",
                    [cell.name]).fetchone()  # fmt: skip
    con.close()
    assert n == (0,)
    assert ingest(study_dir).files_read == 0


def test_a_half_written_outcomes_file_leaves_its_cell_as_it_was(study_dir: Path) -> None:
    ingest(study_dir)
    cell = sorted((study_dir / "cells").iterdir())[0]
    path = cell / "eval" / "vqa.examples.jsonl"
    path.write_text(path.read_text() + '{"variant": "encoder", "benchmark": "x", "exa')
    rep = ingest(study_dir)
    assert len(rep.skipped) == 1 and "vqa.examples.jsonl" in rep.skipped[0]
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM eval_examples WHERE uid = ? AND eval_name = 'vqa'",
                    [cell.name]).fetchone()  # fmt: skip
    con.close()
    assert n == (2 * 8 * 60,)


def test_old_eval_files_without_outcomes_still_ingest(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_cell(root, "vit-pico", 1000, "none", params=1e5, steps=2, n_examples=0)
    rep = ingest(root)
    assert rep.skipped == []
    d = dump(root / "results.duckdb")
    assert d["eval_examples"] == [] and len(d["eval_results"]) == 9
    con = duckdb.connect(str(root / "results.duckdb"), read_only=True)
    assert con.execute("SELECT DISTINCT variant FROM eval_results").fetchall() == [("encoder",)]
    con.close()


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_cell(root, "vit-pico", 1000, "none", params=1e5, steps=2, n_examples=20)
    db = root / "results.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute(
        "CREATE TABLE eval_results (uid VARCHAR NOT NULL, eval_name VARCHAR NOT NULL, "
        "task VARCHAR, benchmark VARCHAR NOT NULL, category VARCHAR, metric VARCHAR, value DOUBLE)"
    )
    con.execute("CREATE TABLE eval_categories (uid VARCHAR NOT NULL, eval_name VARCHAR NOT NULL, "
                "category VARCHAR NOT NULL, value DOUBLE)")  # fmt: skip
    con.execute("INSERT INTO eval_categories VALUES ('old', 'vqa', 'Average', 0.5)")
    con.close()
    assert ingest(root).skipped == []
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT variant FROM eval_categories WHERE uid = 'old'").fetchall() == [
        ("encoder",)
    ]
    assert con.execute("SELECT count(*) FROM eval_examples").fetchone()[0] > 0  # type: ignore[index]
    con.close()
