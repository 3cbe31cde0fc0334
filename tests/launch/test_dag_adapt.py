"""The DAG of a study with a resolution axis: adaptation training after its base's."""

from __future__ import annotations

from webssl_cli.launch.dag import build_dag
from webssl_cli.launch.selection import select_nodes
from webssl_cli.study.loader import load_study

STUDY = """\
name: t
output_dir: {out}
preset: test
data:
  sources:
    web: {shards: "{tmp}/shard-{000000..000001}.tar"}
  filters:
    light: {source: web, filter: light, classifier: label}
grid:
  resolution: [48, 32]
  model: [vit-test]
  samples_seen: [1K]
  data_filter: [light]
evals:
  - {task: knn}
"""


def test_adaptation_training_depends_on_the_base_training(write_study) -> None:
    loaded = load_study(write_study(STUDY))
    hi = next(c for c in loaded.cells if c.adapt)
    base = next(c for c in loaded.cells if not c.adapt)
    assert loaded.cells[0] is hi  # the grid lists it first; the DAG still puts the base first
    nodes = build_dag(loaded)
    keys = [n.key for n in nodes]
    train = {n.key: n for n in nodes}[f"{hi.uid}:train"]
    assert train.deps == [nodes[0].key, f"{base.uid}:train"] and nodes[0].kind == "filter"
    assert keys.index(f"{base.uid}:train") < keys.index(f"{hi.uid}:train")
    assert {n.key: n for n in nodes}[f"{hi.uid}:eval/knn"].deps == [f"{hi.uid}:train"]
    # selecting only the adaptation brings its base's training and their filter along
    chosen = select_nodes(loaded, nodes, ["resolution=48"])
    assert chosen == {nodes[0].key, f"{base.uid}:train", f"{hi.uid}:train", f"{hi.uid}:eval/knn"}
    assert select_nodes(loaded, nodes, ["resolution=32"]) == {
        nodes[0].key,
        f"{base.uid}:train",
        f"{base.uid}:eval/knn",
    }
