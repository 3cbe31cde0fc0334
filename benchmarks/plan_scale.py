"""Expand and plan a 100,000-cell grid; print the time and its ratio to loading the YAML.

    .venv/bin/python benchmarks/plan_scale.py

Baseline measured side by side in the same run: ``yaml.safe_load`` of the same file (the
least any planner must do). Target: the whole plan in under 2 s on this machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import yaml

from webssl_cli.study.loader import load_study
from webssl_cli.study.plan import plan_rows

STUDY = """\
name: big
output_dir: {out}
preset: test
data:
  sources: {{s: {{shards: "/x/{{0..3}}.tar"}}}}
  filters: {{full: {{source: s}}, light: {{source: s, filter: light, classifier: label}}}}
grid:
  model: [vit-test, vit-pico, vit-nano, vit-micro, vit-small]
  samples_seen: [{samples}]
  data_filter: [full, light]
  train.base_lr: [{lrs}]
"""


def main(rounds: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        samples = ", ".join(f"{i}K" for i in range(1, 101))
        lrs = ", ".join(f"{i}.0e-4" for i in range(1, 101))
        path.write_text(STUDY.format(out=tmp, samples=samples, lrs=lrs))
        plan_t, yaml_t = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            yaml.safe_load(path.read_text())
            yaml_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plan = plan_rows(load_study(path), peak_tflops=989.0, mfu=0.4)
            plan_t.append(time.perf_counter() - t0)
        n = plan["totals"]["cells"]
        p, y = statistics.median(plan_t), statistics.median(yaml_t)
        print(f"cells: {n:,}")
        print(
            f"load + expand + plan: {p:.3f} s (median of {rounds}); target < 2 s: {'ok' if p < 2 else 'MISSED'}"
        )
        print(f"yaml.safe_load alone: {y * 1000:.2f} ms")
        print(f"ratio plan / yaml load: {p / y:.0f}x")


if __name__ == "__main__":
    main()
