from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_stages.py"

STUDY = """\
name: t
output_dir: {out}
preset: test
data:
  sources:
    web: {shards: "{tmp}/shard-{000000..000001}.tar"}
  filters:
    full: {source: web}
    light: {source: web, filter: light, classifier: label}
grid:
  model: [vit-test]
  samples_seen: [1K, 2K]
  data_filter: [full]
evals:
  - {task: knn}
"""


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jobs (and this process) use the tiny fake stages of fake_stages.py."""
    monkeypatch.setenv("WEBSSL_STAGE_IMPL", str(FAKE))
    monkeypatch.delenv("FAKE_FAIL_MODEL", raising=False)
    monkeypatch.setenv("FAKE_STEPS", "3")
    monkeypatch.setenv("FAKE_STEP_S", "0")
    return FAKE


@pytest.fixture
def write_study(tmp_path: Path):
    """write_study(text=None, **replace) -> a study file; {out} is tmp_path/out."""

    def _write(text: str | None = None, name: str = "study.yaml", **replace: str) -> Path:
        body = STUDY if text is None else textwrap.dedent(text)
        for k, v in replace.items():
            body = body.replace(k, v)
        body = body.replace("{out}", str(tmp_path / "out")).replace("{tmp}", str(tmp_path))
        path = tmp_path / name
        path.write_text(body)
        return path

    return _write


TWO_RANKS_STUDY = """\
name: two
output_dir: {out}
preset: test
train:                      # well-conditioned for equality checks (docs/distributed.md)
  layerscale: null
  checkpoint_every: 1000    # no periodic checkpoint before the end: a resume needs the USR2 one
  dist: {{data_lanes: 2, koleo_group: 4}}
data:
  sources:
    synth-labelled: {{synthesize: {{n: 64, shard_size: 32, image_size: 48}}}}
  filters:
    full: {{source: synth-labelled}}
grid:
  model: [vit-test]
  samples_seen: [{samples}]
  data_filter: [full]
"""


class TwoRanks:
    """A training cell run as 2 tasks (CPU ranks) that gets USR2 mid-run (see test_slurm.py and
    test_local.py): the study, the profile, and the checks after the job finished."""

    iterations = 40

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.study = tmp_path / "two.yaml"
        self.study.write_text(
            TWO_RANKS_STUDY.format(out=tmp_path / "two", samples=8 * self.iterations)
        )
        base = (HERE.parents[1] / "slurm" / "local.yaml").read_text()
        line = "  default: {nodes: 1, gpus_per_node: 0, cpus_per_task: 1, mem_gb: 2, time_min: 30}"
        assert line in base
        self.profile = tmp_path / "two-tasks.yaml"
        self.profile.write_text(base.replace(line, line.replace("1,", "1, tasks_per_node: 2,", 1)))

    @staticmethod
    def steps_done(cell: Path) -> int:
        metrics = cell / "train" / "metrics.jsonl"  # rank 0 writes a line per step
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    def check(self, cell: Path, signalled_at: int) -> tuple[int, float]:
        """The run resumed from the checkpoint both ranks wrote after USR2 and its losses equal
        one uninterrupted process's: (step of that checkpoint, max relative loss difference)."""
        import json

        from webssl_cli.rundir import CellDir
        from webssl_cli.train.cell import load_cell
        from webssl_cli.train.distributed import DistEnv
        from webssl_cli.train.loop import train as train_in_process

        cd = CellDir(cell)
        train = cd.stage_status("train")
        assert train["state"] == "done", train
        assert train["attempts"] == 1 and train.get("requeues") == 1, train
        assert train["world_size"] == 2
        # Not a periodic checkpoint (none before the end), not from scratch.
        saved_at = int(Path(train["resumed_from"]).name.removeprefix("dcp-"))
        assert signalled_at <= saved_at < self.iterations, (signalled_at, train["resumed_from"])
        rows = [json.loads(x) for x in cd.metrics_jsonl.read_text().splitlines()]
        assert [row["step"] for row in rows] == list(range(1, self.iterations + 1))
        assert {row["world_size"] for row in rows} == {2.0}

        ref = CellDir(self.tmp_path / "one-process")  # the same cell, a one-rank group
        ref.root.mkdir()
        ref.cell_json.write_text(cd.cell_json.read_text())
        assert train_in_process(ref, *load_cell(ref), env=DistEnv()) == "done"
        a = [row["loss"] for row in rows]
        b = [json.loads(x)["loss"] for x in ref.metrics_jsonl.read_text().splitlines()]
        assert len(b) == self.iterations
        rel = max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))
        assert rel <= 1e-6, rel
        return saved_at, rel


@pytest.fixture
def two_ranks(tmp_path: Path) -> TwoRanks:
    return TwoRanks(tmp_path)
