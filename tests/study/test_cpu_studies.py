"""The shipped CPU studies load, expand to the intended cells and use the CPU preset."""

from __future__ import annotations

from pathlib import Path

from webssl_cli.study.loader import load_study

REPO = Path(__file__).resolve().parents[2]
SIZES = ["vit-pico", "vit-nano", "vit-micro"]


def _axes(name: str, method: str = "webdino") -> tuple[list[tuple[str, int, str]], list[dict]]:
    cells = [c for c in load_study(REPO / "studies" / name).cells if c.spec.method == method]
    return sorted((c.model, c.samples_seen, c.data_filter) for c in cells), [c.train for c in cells]


def test_smoke_study_is_3_sizes_x_2_budgets_x_2_filters() -> None:
    axes, trains = _axes("smoke.yaml")
    grid = sorted((m, n, f) for m in SIZES for n in (2000, 8000) for f in ("full", "light"))
    assert sorted(set(axes)) == grid
    # the noisiest cell (the largest model at the smallest budget) over seeds 0, 1, 2
    assert axes == sorted(grid + [("vit-micro", 2000, "full")] * 2)
    seeds = {
        (c.model, c.samples_seen, c.data_filter): set()
        for c in load_study(REPO / "studies" / "smoke.yaml").cells
    }
    for c in load_study(REPO / "studies" / "smoke.yaml").cells:
        seeds[(c.model, c.samples_seen, c.data_filter)].add(c.axes["seed"])
    assert {k: v for k, v in seeds.items() if v != {0}} == {("vit-micro", 2000, "full"): {0, 1, 2}}
    assert all(t["layerscale"] is None and t["teacher_temp"] == 0.02 for t in trains)
    assert all(t["momentum_teacher"] == 0.9 and t["lr_width_ref"] == 64 for t in trains)
    assert all((t["warmup_iters"], t["freeze_last_layer_iters"]) == (8, 15) for t in trains)


def test_cpu_scaling_study_has_4_sizes_x_3_budgets_5_for_one_size_two_light_and_clip() -> None:
    axes, trains = _axes("cpu-scaling.yaml")
    full = [(m, n, "full") for m in [*SIZES, "vit-mini"] for n in (2000, 4000, 8000)]
    full += [("vit-nano", n, "full") for n in (1000, 16000)]  # 5 budgets: a law along samples
    light = [(m, 8000, "light") for m in ("vit-nano", "vit-micro")]
    assert axes == sorted(full + light)
    assert all(t["dino_head"]["n_prototypes"] == 256 for t in trains)
    # the language-supervised arm on the same data: 4 sizes x 2 budgets
    clip, _ = _axes("cpu-scaling.yaml", "clip")
    assert clip == sorted((m, n, "full") for m in [*SIZES, "vit-mini"] for n in (2000, 8000))


def test_hires_smoke_study_adapts_the_48_px_cell_at_72_px() -> None:
    loaded = load_study(REPO / "studies" / "hires-smoke.yaml")
    base, hi = sorted(loaded.cells, key=lambda c: c.axes["resolution"])
    assert (base.axes["resolution"], hi.axes["resolution"]) == (48, 72)
    assert base.adapt is None and hi.adapt is not None and hi.adapt["from"] == base.uid
    spec = hi.spec
    assert spec.train.crops.global_size == 72 and spec.train.crops.local_size == 40
    assert spec.facts.iterations == 30 and spec.train.teacher_temp == 0.03


def test_classic_smoke_study_trains_on_dense_scenes_and_probes_segmentation_and_depth() -> None:
    loaded = load_study(REPO / "studies" / "classic-smoke.yaml")
    cells = sorted((c.spec.method, c.model, c.samples_seen) for c in loaded.cells)
    assert cells == [("mae", "vit-nano", 8000), ("mae", "vit-nano", 24000),
                     ("webdino", "vit-nano", 8000)]  # fmt: skip
    assert {s["synthesize"]["dense"] for s in loaded.sources.values()} == {True}
    assert {n: s["synthesize"]["seed"] for n, s in loaded.sources.items()} == {
        "scenes": 3,
        "synth-dense": 1,
    }  # trained on other scenes than those probed
    for c in loaded.cells:
        assert [e.task for e in c.spec.evals] == ["segmentation", "depth"]
        assert all(e.image_size == 96 and "random-init" in e.baselines for e in c.spec.evals)
