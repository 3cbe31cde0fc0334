"""A deterministic synthetic web-like corpus written as webdataset shards (JPEG + JSON).

Five kinds of image, mixed in proportions the caller chooses:

- ``natural``: a smooth or textured background with one large object whose shape is the class
  (10 classes, see ``painter.SHAPES``) and up to three small distractor objects;
- ``scene_text``: a natural image with one to four words on it (signs or bare text) in several
  fonts, sizes, angles and contrasts;
- ``chart``: bar, line or pie charts with a title, axes, labels and values;
- ``document``: a page with a title, form fields and paragraphs;
- ``table``: a titled grid of row labels and numbers.

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
from PIL import Image, ImageDraw

from webssl_cli.data import painter as P
from webssl_cli.data.shards import shard_name, write_shard
from webssl_cli.errors import UserError

KINDS = ("natural", "scene_text", "chart", "document", "table")
DEFAULT_MIX = {"natural": 0.45, "scene_text": 0.3, "chart": 0.1, "document": 0.1, "table": 0.05}
# Classes 0..9 are the shapes of natural images; the other kinds get a class of their own.
CLASS_NAMES = (*P.SHAPES, "chart", "document", "table")

_WORDS = (
    "open sale coffee hotel stop exit city park bank shop bread fresh music night market "
    "garden river north south east west school library museum station ticket airport taxi "
    "pizza burger books house green water light power street avenue road bridge central "
    "welcome hello summer winter spring autumn family travel island beach ocean mountain "
    "forest coast harbor pharmacy bakery cinema theater gallery studio office police fire "
    "hospital clinic dental garage parking entrance free best deal today only new quick "
    "star moon king queen royal golden silver urban metro express local fashion sport "
    "health energy smart digital design global vision future planet nature science"
)
_LABELS = (
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec Mon Tue Wed Thu Fri Sat Sun "
    "North South East West Apple Pear Plum Fig Kiwi Lime Oslo Rome Lima Cairo Delhi Tokyo Paris Quito "
    "Alpha Beta Gamma Delta Red Blue Gold Iron Gas Oil Coal Wind Solar"
)
WORDS = tuple(_WORDS.split())
LABELS = tuple(_LABELS.split())
CITIES = ("Oslo", "Rome", "Lima", "Cairo", "Delhi", "Tokyo", "Paris", "Quito")
FIELDS = ("Name", "Date", "Total", "Invoice", "Account", "Amount", "City", "Phone", "Order", "Due")
NAMES = ("Smith", "Garcia", "Chen", "Novak", "Okafor", "Larsen", "Ito", "Silva", "Khan", "Weber")
TITLES = (
    "Annual Report",
    "Sales by Region",
    "Monthly Revenue",
    "Invoice",
    "Order Summary",
    "Survey Results",
    "Budget Plan",
    "Quarterly Review",
    "Energy Use",
    "Rainfall",
    "Price List",
    "Inventory",
)


def _pick(rng: np.random.Generator, seq: tuple[Any, ...] | list[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _rgb(name: str) -> tuple[int, int, int]:
    return P.PALETTE[name]


def _meta(kind: str, cls: int, w: int, h: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "class": cls,
        "class_name": CLASS_NAMES[cls],
        "has_text": False,
        "is_chart_or_document": False,
        "words": [],
        "objects": [],
        "chart": None,
        "document": None,
        "width": w,
        "height": h,
    }


# ---- natural and scene text ----------------------------------------------------------------------
def _natural(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    arr = P.smooth_background(rng, w, h)
    if rng.random() < 0.4:
        arr = P.add_texture(arr, rng)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    cls = int(rng.integers(len(P.SHAPES)))
    meta = _meta("natural", cls, w, h)
    s = min(w, h)
    objects = []
    # Distractors first so that the class object sits on top.
    for _ in range(int(rng.integers(0, 4))):
        shape = _pick(rng, P.SHAPES)
        color = _pick(rng, P.COLOR_NAMES)
        r = s * rng.uniform(0.05, 0.1)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        bg = P.region_mean(arr, [int(cx - r), int(cy - r), int(cx + r), int(cy + r)])
        box = P.draw_shape(draw, shape, cx, cy, r, _rgb(color), rng.uniform(0, 2 * math.pi), bg)
        objects.append({"shape": shape, "color": color, "bbox": box})
    r = s * rng.uniform(0.2, 0.32)
    cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.15, 0.15) * h
    bg = P.region_mean(arr, [int(cx - r), int(cy - r), int(cx + r), int(cy + r)])
    color = P.contrasting(bg, rng, 0.2)
    box = P.draw_shape(draw, P.SHAPES[cls], cx, cy, r, _rgb(color), rng.uniform(0, 2 * math.pi), bg)
    objects.append({"shape": P.SHAPES[cls], "color": color, "bbox": box})
    meta["objects"] = objects
    return img, meta


def _overlap(a: list[int], b: list[int], pad: int) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def _scene_text(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    img, meta = _natural(rng, w, h)
    meta["kind"] = "scene_text"
    meta["has_text"] = True
    arr = np.asarray(img)
    s = min(w, h)
    words: list[str] = []
    taken: list[list[int]] = []
    for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.85 else 4):
        word = _pick(rng, WORDS)
        if rng.random() < 0.4:
            word = word.upper()
        elif rng.random() < 0.5:
            word = word.capitalize()
        # Readable sizes: cap height from ~6% to ~17% of the short side (13-38 px at 224 px).
        fnt = P.font(_pick(rng, P.FONT_FILES), max(9, int(s * rng.uniform(0.06, 0.17))))
        tw, th = P.text_size(fnt, word)
        if tw >= w - 4:
            fnt = P.font(fnt.path.rsplit("/", 1)[-1], int(fnt.size * (w - 8) / (tw + 1)))
            tw, th = P.text_size(fnt, word)
        angle = float(rng.uniform(-30, 30)) if rng.random() < 0.5 else 0.0
        # Words do not overlap each other (overlapping words are not readable).
        for _ in range(20):
            x = rng.uniform(0, max(1, w - tw - 8))
            y = rng.uniform(0, max(1, h - th * 1.6 - 8))
            guess = [int(x), int(y), int(x + tw), int(y + th * 1.6)]
            if not any(_overlap(guess, b, 4) for b in taken):
                break
        else:
            break
        if rng.random() < 0.45:  # a sign: text on a plate
            plate_name = _pick(rng, P.COLOR_NAMES)
            plate = _rgb(plate_name)
            ink = P.contrasting(plate, rng, 0.4)
            box = P.draw_text(img, (x, y), word, fnt, _rgb(ink), angle, plate=plate)
        else:  # bare text: contrast against what is under it, from faint-but-readable up
            ink = P.contrasting(P.region_mean(arr, guess), rng, float(rng.uniform(0.3, 0.6)))
            box = P.draw_text(img, (x, y), word, fnt, _rgb(ink), angle)
        words.append(word)
        taken.append(box)
        meta.setdefault("text_boxes", []).append({"word": word, "bbox": box, "angle": angle})
    meta["words"] = words
    return img, meta


# ---- charts -----------------------------------------------------------------------------------------
def _chart(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    paper = tuple(int(c) for c in rng.integers(232, 256, size=3))
    img = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(img)
    s = min(w, h)
    ctype = _pick(rng, ("bar", "line", "pie"))
    n = int(rng.integers(3, 7))
    labels = [str(x) for x in rng.choice(LABELS, size=n, replace=False)]
    values = [int(v) for v in rng.integers(5, 100, size=n)]
    title = _pick(rng, TITLES)
    fam = _pick(rng, P.FONT_FILES[:4])
    tfont = P.font(fam, max(9, int(s * 0.075)))
    lfont = P.font(fam, max(7, int(s * rng.uniform(0.045, 0.06))))
    ink = (30, 30, 30)
    tw, th = P.text_size(tfont, title)
    P.draw_text(img, ((w - tw) / 2, s * 0.03), title, tfont, ink)
    words = title.split() + labels
    colors = [str(c) for c in rng.choice([c for c in P.COLOR_NAMES if c != "white"], size=n)]
    top = s * 0.03 + th * 1.8
    if ctype == "pie":
        cx, cy, r = w * 0.3, (top + h) / 2, min(w * 0.26, (h - top) * 0.45)
        total, start = float(sum(values)), -90.0
        for v, c in zip(values, colors, strict=True):
            end = start + 360.0 * v / total
            draw.pieslice([cx - r, cy - r, cx + r, cy + r], start, end, fill=_rgb(c))
            start = end
        lh = (h - top) / (n + 1)
        for i, (lab, v, c) in enumerate(zip(labels, values, colors, strict=True)):
            y = top + lh * (i + 0.5)
            draw.rectangle([w * 0.6, y, w * 0.6 + lh * 0.5, y + lh * 0.5], fill=_rgb(c))
            P.draw_text(img, (w * 0.6 + lh * 0.7, y - lh * 0.1), f"{lab} {v}", lfont, ink)
            words.append(str(v))
    else:
        x0, x1, y0, y1 = w * 0.16, w * 0.96, h * 0.84, top  # plot area; y grows downwards
        vmax = int(math.ceil(max(values) / 20.0) * 20)
        draw.line([x0, y1, x0, y0, x1, y0], fill=ink, width=2)
        for t in range(0, vmax + 1, 20 if vmax <= 100 else 40):
            yy = y0 - (y0 - y1) * t / vmax
            draw.line([x0 - 4, yy, x0, yy], fill=ink, width=1)
            if rng.random() < 0.5:
                draw.line([x0, yy, x1, yy], fill=(200, 200, 200), width=1)
            tw, th = P.text_size(lfont, str(t))
            P.draw_text(img, (x0 - tw - 7, yy - th / 2 - 2), str(t), lfont, ink)
            words.append(str(t))
        step = (x1 - x0) / n
        pts = []
        for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
            xc = x0 + step * (i + 0.5)
            yv = y0 - (y0 - y1) * v / vmax
            if ctype == "bar":
                draw.rectangle(
                    [xc - step * 0.35, yv, xc + step * 0.35, y0 - 1], fill=_rgb(colors[i])
                )
            pts.append((xc, yv))
            tw, th = P.text_size(lfont, lab)
            P.draw_text(img, (xc - tw / 2, y0 + 4), lab, lfont, ink)
        if ctype == "line":
            draw.line(pts, fill=_rgb(colors[0]), width=3)
            for xc, yv in pts:
                draw.ellipse([xc - 4, yv - 4, xc + 4, yv + 4], fill=_rgb(colors[0]))
    meta = _meta("chart", CLASS_NAMES.index("chart"), w, h)
    meta.update(has_text=True, is_chart_or_document=True, words=words)
    meta["chart"] = {"type": ctype, "title": title, "labels": labels, "values": values}
    return img, meta


# ---- documents and tables ------------------------------------------------------------------------
def _value(rng: np.random.Generator, field: str) -> str:
    if field == "Name":
        return _pick(rng, NAMES)
    if field == "City":
        return _pick(rng, CITIES)
    if field == "Date":
        return f"20{int(rng.integers(10, 26))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    if field in ("Total", "Amount"):
        return f"{rng.uniform(1, 999):.2f}"
    return str(int(rng.integers(100, 99999)))


def _page(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, np.ndarray]:
    """A page, sometimes photographed on a desk (a margin of background around it)."""
    paper = tuple(int(c) for c in rng.integers(225, 256, size=3))
    if rng.random() < 0.35:
        arr = P.smooth_background(rng, w, h)
        m = int(min(w, h) * rng.uniform(0.03, 0.08))
        arr[m : h - m, m : w - m] = paper
    else:
        arr = np.empty((h, w, 3), np.uint8)
        arr[:] = paper
    return Image.fromarray(arr), arr


def _document(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    img, _ = _page(rng, w, h)
    s = min(w, h)
    fam = _pick(rng, P.FONT_FILES[:5])
    title = _pick(rng, TITLES)
    bold = fam if "Bold" in fam or "Mono" in fam else fam.replace(".ttf", "-Bold.ttf")
    tfont = P.font(bold, max(9, int(s * 0.08)))
    bfont = P.font(fam, max(8, int(s * rng.uniform(0.045, 0.06))))
    ink = _pick(rng, ((20, 20, 20), (30, 30, 90), (60, 60, 60)))
    margin = s * 0.1
    y = s * 0.08
    box = P.draw_text(img, (margin, y), title, tfont, ink)
    y = box[3] + s * 0.05
    words = title.split()
    fields = {}
    for f in [str(x) for x in rng.choice(FIELDS, size=int(rng.integers(2, 5)), replace=False)]:
        val = _value(rng, f)
        box = P.draw_text(img, (margin, y), f"{f}: {val}", bfont, ink)
        fields[f] = val
        words += [f + ":", val]
        y = box[3] + s * 0.03
    if rng.random() < 0.5:
        ImageDraw.Draw(img).line([margin, y, w - margin, y], fill=ink, width=1)
    y += s * 0.03
    lh = bfont.size * 1.35
    while y + lh < h - s * 0.06:
        line, x = [], margin
        limit = (
            w - margin if rng.random() < 0.85 else margin + (w - 2 * margin) * rng.uniform(0.3, 0.8)
        )
        while True:
            word = _pick(rng, WORDS)
            tw = P.text_size(bfont, word + " ")[0]
            if x + tw > limit:
                break
            line.append(word)
            x += tw
        if line:
            P.draw_text(img, (margin, y), " ".join(line), bfont, ink)
            words += line
        y += lh
    angle = float(rng.uniform(-4, 4)) if rng.random() < 0.4 else 0.0
    if angle:
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    meta = _meta("document", CLASS_NAMES.index("document"), w, h)
    meta.update(has_text=True, is_chart_or_document=True, words=words)
    meta["document"] = {"title": title, "fields": fields}
    return img, meta


def _table(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    img, _ = _page(rng, w, h)
    draw = ImageDraw.Draw(img)
    s = min(w, h)
    fam = _pick(rng, P.FONT_FILES[:5])
    title = _pick(rng, TITLES)
    tfont = P.font(fam, max(9, int(s * 0.07)))
    cfont = P.font(fam, max(7, int(s * rng.uniform(0.045, 0.055))))
    ink = (25, 25, 25)
    box = P.draw_text(img, (s * 0.06, s * 0.05), title, tfont, ink)
    ncols, nrows = int(rng.integers(2, 4)), int(rng.integers(3, 7))
    cols = [str(x) for x in rng.choice(LABELS[:12], size=ncols, replace=False)]
    rows = [str(x) for x in rng.choice(LABELS[19:41], size=nrows, replace=False)]
    x0, x1 = s * 0.05, w - s * 0.05
    y0 = box[3] + s * 0.05
    rh = min((h - y0 - s * 0.05) / (nrows + 1), cfont.size * 2.2)
    cw = (x1 - x0) / (ncols + 1)
    grid = rng.random() < 0.7
    cells: list[list[str]] = []
    words = title.split() + cols + rows
    header_fill = _rgb(_pick(rng, ("yellow", "white", "orange"))) if rng.random() < 0.4 else None
    if header_fill:
        draw.rectangle([x0, y0, x1, y0 + rh], fill=header_fill)
    for c, name in enumerate(cols):
        P.draw_text(img, (x0 + cw * (c + 1) + 4, y0 + rh * 0.2), name, cfont, ink)
    for r, name in enumerate(rows):
        yy = y0 + rh * (r + 1)
        P.draw_text(img, (x0 + 4, yy + rh * 0.2), name, cfont, ink)
        row = [str(int(v)) for v in rng.integers(0, 1000, size=ncols)]
        for c, v in enumerate(row):
            P.draw_text(img, (x0 + cw * (c + 1) + 4, yy + rh * 0.2), v, cfont, ink)
        cells.append(row)
        words += row
    y_end = y0 + rh * (nrows + 1)
    for r in range(nrows + 2):
        if grid or r in (0, 1, nrows + 1):
            draw.line([x0, y0 + rh * r, x1, y0 + rh * r], fill=ink, width=1)
    if grid:
        for c in range(ncols + 2):
            xx = x0 + cw * c if c <= ncols else x1
            draw.line([xx, y0, xx, y_end], fill=ink, width=1)
    meta = _meta("table", CLASS_NAMES.index("table"), w, h)
    meta.update(has_text=True, is_chart_or_document=True, words=words)
    meta["document"] = {
        "title": title,
        "fields": {r: row[0] for r, row in zip(rows, cells, strict=True)},
    }
    meta["table"] = {"columns": cols, "rows": rows, "cells": cells}
    return img, meta


_DRAW: dict[str, Callable[[np.random.Generator, int, int], tuple[Image.Image, dict[str, Any]]]] = {
    "natural": _natural,
    "scene_text": _scene_text,
    "chart": _chart,
    "document": _document,
    "table": _table,
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
    """One sample as (key, {"jpg": ..., "json": ...}); depends only on its arguments."""
    import simplejpeg

    rng = np.random.default_rng([seed, index])
    kind = KINDS[int(rng.choice(len(KINDS), p=[mix[k] for k in KINDS]))]
    # image_size is the longest side; aspect ratios vary as on the web (pages are portrait).
    if kind in ("document", "table"):
        aspect = 1.3
    else:
        aspect = float(_pick(rng, (1.0, 1.0, 0.75, 1.33)))  # height / width
    if aspect >= 1.0:
        h, w = image_size, int(round(image_size / aspect / 8) * 8)
    else:
        w, h = image_size, int(round(image_size * aspect / 8) * 8)
    img, meta = _DRAW[kind](rng, w, h)
    key = f"s{seed}_{index:08d}"
    meta = {"key": key, **meta}
    arr = np.ascontiguousarray(np.asarray(img.convert("RGB")))
    jpg = simplejpeg.encode_jpeg(arr, quality=int(rng.integers(80, 96)), colorspace="RGB")
    js = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return key, {"jpg": jpg, "json": js}


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
    if n < 1:
        raise UserError(f"--n: {n} must be at least 1")
    if shard_size < 1:
        raise UserError(f"--shard-size: {shard_size} must be at least 1")
    if not 32 <= image_size <= 2048:
        raise UserError(f"--image-size: {image_size} must be between 32 and 2048 pixels")
    proportions = parse_mix(mix)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, start in enumerate(range(0, n, shard_size)):
        samples = [
            make_sample(seed, i, image_size, proportions)
            for i in range(start, min(n, start + shard_size))
        ]
        paths.append(write_shard(out / shard_name(s), samples))
    return paths


def shard_pattern(paths: list[Path]) -> str:
    """The brace pattern of shards written by ``synthesize`` (``.../shard-{000000..000007}.tar``)."""
    if len(paths) == 1:
        return str(paths[0])
    return str(paths[0].parent / f"shard-{{{0:06d}..{len(paths) - 1:06d}}}.tar")
