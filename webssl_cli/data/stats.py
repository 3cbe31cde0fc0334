"""Statistics of a shard source: counts, bytes, image sizes, decode failures, label fractions,
caption coverage."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from webssl_cli.data.captions import caption_of
from webssl_cli.data.shards import Problems, iter_samples, list_shards


def _size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a whole, decodable image, else None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a full decode: headers alone do not reveal truncated or corrupt bodies
            return int(im.width), int(im.height)
    except Exception:  # any decoder error means undecodable
        return None


def source_stats(source: str, decode: bool = True) -> dict[str, Any]:
    """Statistics over every shard of ``source`` (a pattern, directory or file).

    Bad samples are counted under ``skipped`` by reason. ``labels`` gives the fraction of
    samples whose JSON says has_text / is_chart_or_document (the light / heavy filter's kept
    fraction under the ``label`` classifier), when the JSON carries them. ``captions`` counts
    the usable samples with and without a caption (``captions.caption_of``).
    """
    paths = list_shards(source)
    problems = Problems()
    n = 0
    image_bytes = 0
    widths: list[int] = []
    heights: list[int] = []
    kinds: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    labelled = 0
    captioned = 0
    caption_words = 0
    for path in paths:
        for s in iter_samples(path, problems):
            data = s.image_bytes or b""
            if decode:
                wh = _size(data)
                if wh is None:
                    problems.add("undecodable", f"{path}:{s.key}")
                    continue
                widths.append(wh[0])
                heights.append(wh[1])
            n += 1
            image_bytes += len(data)
            caption = caption_of(s.members)
            if caption is not None:
                captioned += 1
                caption_words += len(caption.split())
            meta = s.meta()
            if "kind" in meta:
                kinds[str(meta["kind"])] += 1
            if "has_text" in meta:
                labelled += 1
                labels["has_text"] += bool(meta.get("has_text"))
                labels["is_chart_or_document"] += bool(meta.get("is_chart_or_document"))
    out: dict[str, Any] = {
        "source": source,
        "shards": len(paths),
        "samples": n,
        "bytes": sum(Path(p).stat().st_size for p in paths if Path(p).exists()),
        "image_bytes": image_bytes,
        "skipped": problems.as_dict(),
        "skipped_examples": problems.examples,
    }
    out["captions"] = {
        "with": captioned,
        "without": n - captioned,
        "coverage": captioned / n if n else 0.0,
        "mean_words": caption_words / captioned if captioned else 0.0,
    }
    if widths:
        w, h = np.array(widths), np.array(heights)
        out["image_size"] = {
            "width": {"min": int(w.min()), "median": float(np.median(w)), "max": int(w.max())},
            "height": {"min": int(h.min()), "median": float(np.median(h)), "max": int(h.max())},
        }
    if kinds:
        out["kinds"] = dict(sorted(kinds.items()))
    if labelled:
        out["label_fractions"] = {
            "light": labels["has_text"] / labelled,
            "heavy": labels["is_chart_or_document"] / labelled,
        }
    return out


def format_stats(stats: dict[str, Any]) -> str:
    """A short human-readable summary (the CLI prints this; --json prints the dict)."""
    lines = [
        f"source   {stats['source']}",
        f"shards   {stats['shards']}",
        f"samples  {stats['samples']}",
        f"bytes    {stats['bytes']:,} ({stats['image_bytes']:,} in images)",
    ]
    if "image_size" in stats:
        s = stats["image_size"]
        lines.append(
            f"size     width {s['width']['min']}..{s['width']['max']} (median {s['width']['median']:g}), "
            f"height {s['height']['min']}..{s['height']['max']} (median {s['height']['median']:g})"
        )
    if stats.get("kinds"):
        lines.append("kinds    " + ", ".join(f"{k} {v}" for k, v in stats["kinds"].items()))
    if stats.get("label_fractions"):
        f = stats["label_fractions"]
        lines.append(
            f"labels   light (has_text) {f['light']:.3f}, heavy (chart/doc) {f['heavy']:.3f}"
        )
    if "captions" in stats:
        c = stats["captions"]
        lines.append(
            f"captions {c['with']} of {stats['samples']} samples ({c['coverage']:.3f}), "
            f"{c['mean_words']:.1f} words on average"
        )
    skipped = stats.get("skipped") or {}
    lines.append(
        "skipped  " + (", ".join(f"{k} {v}" for k, v in skipped.items()) if skipped else "none")
    )
    if stats.get("filter"):
        f = stats["filter"]
        lines.append(
            f"filter   {f.get('filter')}/{f.get('classifier')} v{f.get('version')}: kept "
            f"{f.get('kept')} of {f.get('total')} ({f.get('fraction', 0.0):.3f})"
        )
    return "\n".join(lines)
