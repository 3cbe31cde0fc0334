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
    assert len(d["train_metrics"]) == 12 * 20 * 10 == rep.metric_rows
    assert len(d["eval_results"]) == 12 * (8 + 1)
    assert len(d["eval_categories"]) == 12 * 5
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
    write_cell(study_dir, "vit-test", 10_000, "none", params=30_000)
    rep = ingest(study_dir)
    assert rep.files_read == 1 + 5  # knn.json + the new cell's five files
    after = dump(study_dir / "results.duckdb")
    assert len(after["cell_specs"]) == 13
    assert len(after["train_metrics"]) == len(before["train_metrics"]) + 200
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    v = con.execute(
        "SELECT value FROM eval_results WHERE uid = ? AND task = 'knn'", [cell.name]
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
    assert rep.files_removed == 5
    con = duckdb.connect(str(study_dir / "results.duckdb"), read_only=True)
    for table in (
        "cell_specs",
        "jobs",
        "train_metrics",
        "eval_results",
        "eval_categories",
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
