from __future__ import annotations

import json
from pathlib import Path

import pytest

from webssl_cli.errors import UserError
from webssl_cli.study.loader import load_study

GOLDEN = Path(__file__).parent / "golden" / "paper_uids.json"
REPO = Path(__file__).resolve().parents[2]


def _axes(loaded):
    return [
        (c.method, c.model, c.samples_seen, c.data_filter, c.axes.get("resolution", 224))
        for c in loaded.cells
    ]


def test_paper_study_has_exactly_the_papers_cells() -> None:
    # Web-DINO: 1B-7B at 2B, 7B at 1B/4B/8B, 2B on light/heavy data (10); MetaCLIP 1B-7B at
    # 2B and the 7B at 1B/4B/8B (8); Web-MAE 1B-5B at 2B (4): 22 cells.
    loaded = load_study(REPO / "studies" / "webssl-paper.yaml")
    got = sorted(_axes(loaded))
    two, sizes = 2_000_000_000, ("1b", "2b", "3b", "5b", "7b")
    more = (1_000_000_000, 4_000_000_000, 8_000_000_000)
    want = sorted(
        [("webdino", f"webdino-{m}", two, "full", 224) for m in sizes]
        + [("webdino", "webdino-7b", n, "full", 224) for n in more]
        + [("webdino", "webdino-2b", two, f, 224) for f in ("light", "heavy")]
        + [("clip", f"webdino-{m}", two, "full", 224) for m in sizes]
        + [("clip", "webdino-7b", n, "full", 224) for n in more]
        + [("mae", f"webdino-{m}", two, "full", 224) for m in sizes[:4]]
        # high resolution: the 7B / 8B Web-DINO cell adapted at 378 and 518 px
        + [("webdino", "webdino-7b", 8_000_000_000, "full", r) for r in (378, 518)]
    )
    assert got == want
    assert len(got) == 24 and len({c.uid for c in loaded.cells}) == 24


def test_uids_are_stable_golden_file() -> None:
    # Web-DINO cells keep the uids they had before the method axis existed (their keys carry
    # no method); CLIP and MAE cells are keyed by method.
    loaded = load_study(REPO / "studies" / "webssl-paper.yaml")
    got = {
        ("" if c.method == "webdino" else f"{c.method}|")
        + f"{c.model}|{c.samples_seen}|{c.data_filter}"
        + (f"|{c.axes['resolution']}px" if "resolution" in c.axes else ""): c.uid
        for c in loaded.cells
    }
    if not GOLDEN.exists():  # pragma: no cover - first run writes the golden file
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
    # and loading twice gives the same
    assert [c.uid for c in load_study(REPO / "studies" / "webssl-paper.yaml").cells] == [
        c.uid for c in loaded.cells
    ]


def test_uid_locality_and_cosmetic_fields(write_study, tmp_path: Path) -> None:
    base = load_study(write_study())
    uids = {(c.model, c.samples_seen, c.data_filter): c.uid for c in base.cells}
    assert len(base.cells) == 8
    # change one axis value: only the cells holding it change
    text = (
        (tmp_path / "study.yaml")
        .read_text()
        .replace("samples_seen: [1K, 2K]", "samples_seen: [1K, 3K]")
    )
    changed = load_study(write_study(text, name="b.yaml"))
    for c in changed.cells:
        key = (c.model, c.samples_seen, c.data_filter)
        if c.samples_seen == 1000:
            assert c.uid == uids[key]
        else:
            assert c.uid not in uids.values()
    # cosmetic fields: output dir, cluster, description, comment
    text = (
        (tmp_path / "study.yaml")
        .read_text()
        .replace(str(tmp_path / "out"), str(tmp_path / "elsewhere"))
    )
    text += "cluster: some-other-cluster\ndescription: hello\ncomment: nothing\n"
    cosmetic = load_study(write_study(text, name="c.yaml"))
    assert {c.uid for c in cosmetic.cells} == set(uids.values())
    # operational settings (how often to checkpoint, workers, FSDP vs DDP) are not identity
    text = (
        (tmp_path / "study.yaml").read_text()
        + "train: {checkpoint_every: 7, metrics_every: 3, num_workers: 0, dist.strategy: fsdp}\n"
    )
    assert {c.uid for c in load_study(write_study(text, name="e.yaml")).cells} == set(uids.values())
    # a training setting is not cosmetic
    text = (tmp_path / "study.yaml").read_text() + "train: {base_lr: 0.01}\n"
    assert not {c.uid for c in load_study(write_study(text, name="d.yaml")).cells} & set(
        uids.values()
    )


def test_zip_include_exclude(write_study) -> None:
    loaded = load_study(
        write_study(
            """\
            name: z
            output_dir: {out}
            preset: test
            data:
              sources: {s: {shards: "/x/{0..3}.tar"}}
              filters: {full: {source: s}, light: {source: s, filter: light, classifier: label}}
            grid:
              model: [vit-test, vit-pico, vit-nano]
              train.batch_size: [8, 16, 32]
              samples_seen: [1K, 2K]
              data_filter: [full]
            zip: [[model, train.batch_size]]
            exclude:
              - {model: vit-nano, samples_seen: 2K}
            include:
              - {model: vit-test, train.base_lr: 0.5}
              - {model: vit-pico, train.batch_size: 16, samples_seen: 5K, data_filter: light}
            """
        )
    )
    cells = [
        (c.model, c.train["batch_size"], c.samples_seen, c.data_filter, c.train["base_lr"])
        for c in loaded.cells
    ]
    assert cells == [
        ("vit-test", 8, 1000, "full", 0.5),
        ("vit-test", 8, 2000, "full", 0.5),
        ("vit-pico", 16, 1000, "full", 0.001),
        ("vit-pico", 16, 2000, "full", 0.001),
        ("vit-nano", 32, 1000, "full", 0.001),
        ("vit-pico", 16, 5000, "light", 0.001),
    ]
    assert len(loaded.filters) == 1


def test_precedence_preset_study_cell_cli(write_study, tmp_path: Path) -> None:
    text = (tmp_path / "study.yaml").read_text() if (tmp_path / "study.yaml").exists() else None
    path = write_study()
    text = (
        path.read_text()
        + "train: {base_lr: 0.1, crops.n_local: 3}\ninclude:\n  - {model: vit-pico, train.base_lr: 0.2}\n"
    )
    path.write_text(text)
    loaded = load_study(path, ["train.crops.n_local=5"])
    for c in loaded.cells:
        assert c.train["base_lr"] == (0.2 if c.model == "vit-pico" else 0.1)
        assert c.train["crops"]["n_local"] == 5  # command line wins
        assert c.train["batch_size"] == 8  # from the preset
        assert c.train["clip_grad"] == 3.0  # default


def test_cell_spec_contract(write_study) -> None:
    loaded = load_study(write_study())
    cell = next(c for c in loaded.cells if c.data_filter == "light")
    spec = cell.spec
    assert spec.uid == cell.uid and spec.model == cell.model and spec.method == "webdino"
    assert spec.data.filter == "light" and spec.data.classifier == "label"
    assert spec.data.filter_key == next(iter(loaded.filters))
    assert spec.data.filter_dir is not None and spec.data.filter_dir.endswith(spec.data.filter_key)
    assert isinstance(spec.data.shards, str) and spec.data.shards.endswith(
        "shard-{000000..000001}.tar"
    )
    assert spec.evals[0].task == "knn"
    # the derived facts are stated once, in the spec
    assert spec.facts.iterations == -(-cell.samples_seen // spec.train.batch_size)
    assert (
        spec.facts.flops
        == spec.facts.flops_per_sample * spec.facts.iterations * spec.train.batch_size
    )
    full = next(c for c in loaded.cells if c.data_filter == "full")
    assert full.spec.data.filter_dir is None and full.spec.data.filter == "none"
    assert full.spec.data.filter_key is None


def test_hundred_thousand_cells_plan_fast(write_study) -> None:
    import time

    from webssl_cli.study.plan import plan_rows

    models = "[vit-test, vit-pico, vit-nano, vit-micro]"
    samples = "[" + ", ".join(f"{i}K" for i in range(1, 251)) + "]"
    lrs = "[" + ", ".join(f"{i}.0e-4" for i in range(1, 101)) + "]"
    path = write_study(
        f"""\
        name: big
        output_dir: {{out}}
        preset: test
        data:
          sources: {{s: {{shards: "/x/{{0..3}}.tar"}}}}
          filters: {{full: {{source: s}}}}
        grid:
          model: {models}
          samples_seen: {samples}
          data_filter: [full]
          train.base_lr: {lrs}
        """
    )
    t0 = time.perf_counter()
    loaded = load_study(path)
    plan = plan_rows(loaded, peak_tflops=989.0, mfu=0.4)
    elapsed = time.perf_counter() - t0
    assert plan["totals"]["cells"] == 100_000
    assert elapsed < 20  # the benchmark (benchmarks/plan_scale.py) tracks the 2 s target


def test_unknown_key_error_is_located(write_study) -> None:
    path = write_study()
    path.write_text(path.read_text().replace("preset: test", "preset: test\npresett: x"))
    with pytest.raises(
        UserError, match=r"study.yaml:4: presett: unknown key \(did you mean \"preset\"\?\)"
    ):
        load_study(path)
