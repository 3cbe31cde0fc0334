"""A deterministic synthetic web-like corpus written as webdataset shards (JPEG + JSON).

Five kinds of image, mixed in proportions the caller chooses:

- ``natural``: a smooth or textured background with one large object whose shape is the class
  (10 classes, see ``painter.SHAPES``) and up to three small distractor objects;
- ``scene_text``: a natural image with one to four words on it (signs or bare text) in several
  fonts, sizes, angles and contrasts;
- ``chart``: bar, line or pie charts with a title, axes, labels and values;
- ``document``: a page with a title, form fields and paragraphs;
- ``table``: a titled grid of row labels and numbers.

Each sample also gets a web-like caption (``.txt``; ``captions``), right for most images and
partial, wrong, generic or missing for the rest.

The JSON of each sample is the ground truth that filters are scored against and VQA questions
are built from. Each sample draws from its own generator seeded by (seed, index), so the corpus
does not depend on the shard size, and the same seed gives byte-identical shards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from webssl_cli.data import pages, scenes
from webssl_cli.data import painter as P
from webssl_cli.data.captions import caption_rng, make_caption
from webssl_cli.data.scenes import CLASS_NAMES, pick
from webssl_cli.data.shards import shard_name, write_shard
from webssl_cli.errors import UserError
from webssl_cli.rundir import atomic_write_json

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_MIX",
    "KINDS",
    "make_sample",
    "parse_mix",
    "shard_pattern",
    "synthesize",
]

KINDS = ("natural", "scene_text", "chart", "document", "table")
GENERATOR_VERSION = 2
"""Bumped whenever a seed's samples change (2: class objects take their class's typical colour).
Written to ``generator.json`` beside the shards, so that data written by another version is
never mixed with a study's expectations (``check_generator``)."""
GENERATOR_FILE = "generator.json"
DEFAULT_MIX = {"natural": 0.45, "scene_text": 0.3, "chart": 0.1, "document": 0.1, "table": 0.05}

_DRAW: dict[str, Callable[[np.random.Generator, int, int], tuple[Image.Image, dict[str, Any]]]] = {
    "natural": scenes.natural,
    "scene_text": scenes.scene_text,
    "chart": pages.chart,
    "document": pages.document,
    "table": pages.table,
}


# ---- the corpus -------------------------------------------------------------------------------------
def parse_mix(text: str | dict[str, float] | None) -> dict[str, float]:
    """``"natural=0.5,chart=0.5"`` (or a dict) -> normalised proportions over KINDS."""
    if text is None:
        return dict(DEFAULT_MIX)
    if isinstance(text, str):
        items: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            try:
                items[name.strip()] = float(value)
            except ValueError:
                raise UserError(
                    f"--mix: {part!r} is not kind=number; e.g. natural=0.5,chart=0.5"
                ) from None
            if not sep:
                raise UserError(f"--mix: {part!r} is not kind=number; e.g. natural=0.5,chart=0.5")
    else:
        items = dict(text)
    for name, v in items.items():
        if name not in KINDS:
            raise UserError(f"--mix: unknown kind {name!r}; valid: {', '.join(KINDS)}")
        if v < 0 or not math.isfinite(v):
            raise UserError(f"--mix: {name}={v} must be a non-negative number")
    total = sum(items.values())
    if total <= 0:
        raise UserError("--mix: the proportions sum to 0; give at least one positive kind")
    return {k: items.get(k, 0.0) / total for k in KINDS}


def make_sample(
    seed: int, index: int, image_size: int, mix: dict[str, float]
) -> tuple[str, dict[str, bytes]]:
    """One sample as (key, {"jpg": ..., "json": ..., "txt": ...}); depends only on its arguments.

    The caption (``txt``, absent for a sample without one) draws from its own generator, so
    the image and its JSON are what they were before captions existed."""
    import simplejpeg

    rng = np.random.default_rng([seed, index])
    kind = KINDS[int(rng.choice(len(KINDS), p=[mix[k] for k in KINDS]))]
    # image_size is the longest side; aspect ratios vary as on the web (pages are portrait).
    if kind in ("document", "table"):
        aspect = 1.3
    else:
        aspect = float(pick(rng, (1.0, 1.0, 0.75, 1.33)))  # height / width
    if aspect >= 1.0:
        h, w = image_size, int(round(image_size / aspect / 8) * 8)
    else:
        w, h = image_size, int(round(image_size * aspect / 8) * 8)
    img, meta = _DRAW[kind](rng, w, h)
    if kind in ("natural", "scene_text"):
        img = Image.fromarray(P.camera(np.asarray(img), rng))
    key = f"s{seed}_{index:08d}"
    meta = {"key": key, **meta}
    arr = np.ascontiguousarray(np.asarray(img.convert("RGB")))
    jpg = simplejpeg.encode_jpeg(arr, quality=int(rng.integers(80, 96)), colorspace="RGB")
    js = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    members = {"jpg": jpg, "json": js}
    caption = make_caption(meta, caption_rng(seed, index))
    if caption is not None:
        members["txt"] = caption.encode()
    return key, members


def synthesize(
    out_dir: str | Path,
    n: int = 2048,
    seed: int = 0,
    shard_size: int = 256,
    image_size: int = 224,
    mix: str | dict[str, float] | None = None,
) -> list[Path]:
    """Write ``n`` samples to ``out_dir/shard-000000.tar``...; returns the shard paths.

    Shards already present with the right content are rewritten identically, so a re-run after
    an interruption is safe.
    """
    proportions = parse_mix(mix)
    return write_synthetic_shards(
        out_dir,
        n,
        shard_size,
        image_size,
        lambda i: make_sample(seed, i, image_size, proportions),
        generator={"generator": "synth", "version": GENERATOR_VERSION},
    )


def write_synthetic_shards(
    out_dir: str | Path,
    n: int,
    shard_size: int,
    image_size: int,
    make: Callable[[int], tuple[str, dict[str, bytes]]],
    generator: dict[str, Any],
) -> list[Path]:
    """Check the sizes, then write samples ``make(0..n-1)`` in shards of ``shard_size``, and
    ``generator`` (which generator and version wrote them) to ``generator.json`` last."""
    if n < 1:
        raise UserError(f"--n: {n} must be at least 1")
    if shard_size < 1:
        raise UserError(f"--shard-size: {shard_size} must be at least 1")
    if not 32 <= image_size <= 2048:
        raise UserError(f"--image-size: {image_size} must be between 32 and 2048 pixels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, start in enumerate(range(0, n, shard_size)):
        samples = [make(i) for i in range(start, min(n, start + shard_size))]
        paths.append(write_shard(out / shard_name(s), samples))
    atomic_write_json(out / GENERATOR_FILE, generator)
    return paths


def check_generator(out_dir: str | Path, name: str, version: int) -> None:
    """Raise a one-line UserError when the shards in ``out_dir`` were not written by this
    version of generator ``name`` (no ``generator.json``: written before versions were kept)."""
    path = Path(out_dir) / GENERATOR_FILE
    try:
        found = json.loads(path.read_text())
        have = found.get("version") if found.get("generator") == name else None
    except (OSError, ValueError, AttributeError):
        have = None
    if have != version:
        was = f"version {have}" if have is not None else "an older version"
        raise UserError(
            f"{out_dir}: synthetic data written by {was} of the {name} generator, and this webssl "
            f"writes version {version} (different images for the same seed); delete the "
            "directory to regenerate it, and retrain the cells trained on it"
        )


def shard_pattern(paths: list[Path]) -> str:
    """The brace pattern of shards written by ``synthesize`` (``.../shard-{000000..000007}.tar``)."""
    if len(paths) == 1:
        return str(paths[0])
    return str(paths[0].parent / f"shard-{{{0:06d}..{len(paths) - 1:06d}}}.tar")
