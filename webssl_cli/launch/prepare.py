"""Data a run needs before its first stage: synthetic sources whose shards are missing are
generated in the submitting process (the smoke study's first run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webssl_cli.launch.options import Echo


def prepare_sources(loaded: Any, echo: Echo) -> None:
    """Generate a synthetic source whose shards are missing (the smoke study's first run)."""
    for name, src in loaded.sources.items():
        spec = src.get("synthesize")
        if not spec:
            continue
        from webssl_cli.data.dense import DENSE_GENERATOR_VERSION, synthesize_dense
        from webssl_cli.data.shards import expand_braces
        from webssl_cli.data.synth import GENERATOR_VERSION, check_generator, synthesize

        shards = expand_braces(src["shards"])
        out_dir = Path(shards[0]).parent
        dense = bool(spec.get("dense"))
        if all(Path(p).exists() for p in shards):
            version = DENSE_GENERATOR_VERSION if dense else GENERATOR_VERSION
            check_generator(out_dir, "dense" if dense else "synth", version)
            continue
        what = "dense scenes" if dense else "images"
        echo(f"data: generating synthetic source {name!r} ({spec['n']} {what}) in {out_dir}")
        size = {k: spec[k] for k in ("n", "seed", "shard_size", "image_size")}
        if dense:
            synthesize_dense(out_dir, **size)
        else:
            synthesize(out_dir, **size, mix=spec.get("mix"))
