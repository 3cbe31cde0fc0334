"""Typeset images for the synthetic corpus: charts (bar, line, pie), documents and tables."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from webssl_cli.data import painter as P
from webssl_cli.data.scenes import (
    CITIES,
    CLASS_NAMES,
    FIELDS,
    LABELS,
    NAMES,
    TITLES,
    WORDS,
    new_meta,
    pick,
    rgb,
)


# ---- charts -----------------------------------------------------------------------------------------
def chart(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    paper = tuple(int(c) for c in rng.integers(232, 256, size=3))
    img = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(img)
    s = min(w, h)
    ctype = pick(rng, ("bar", "line", "pie"))
    n = int(rng.integers(3, 7))
    labels = [str(x) for x in rng.choice(LABELS, size=n, replace=False)]
    values = [int(v) for v in rng.integers(5, 100, size=n)]
    title = pick(rng, TITLES)
    fam = pick(rng, P.FONT_FILES[:4])
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
            draw.pieslice([cx - r, cy - r, cx + r, cy + r], start, end, fill=rgb(c))
            start = end
        lh = (h - top) / (n + 1)
        for i, (lab, v, c) in enumerate(zip(labels, values, colors, strict=True)):
            y = top + lh * (i + 0.5)
            draw.rectangle([w * 0.6, y, w * 0.6 + lh * 0.5, y + lh * 0.5], fill=rgb(c))
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
                # On a small image a short bar rounds to below the axis: draw it one pixel high.
                draw.rectangle(
                    [xc - step * 0.35, min(yv, y0 - 1), xc + step * 0.35, y0 - 1],
                    fill=rgb(colors[i]),
                )
            pts.append((xc, yv))
            tw, th = P.text_size(lfont, lab)
            P.draw_text(img, (xc - tw / 2, y0 + 4), lab, lfont, ink)
        if ctype == "line":
            draw.line(pts, fill=rgb(colors[0]), width=3)
            for xc, yv in pts:
                draw.ellipse([xc - 4, yv - 4, xc + 4, yv + 4], fill=rgb(colors[0]))
    meta = new_meta("chart", CLASS_NAMES.index("chart"), w, h)
    meta.update(has_text=True, is_chart_or_document=True, words=words)
    meta["chart"] = {"type": ctype, "title": title, "labels": labels, "values": values}
    return img, meta


# ---- documents and tables ------------------------------------------------------------------------
def _value(rng: np.random.Generator, field: str) -> str:
    if field == "Name":
        return pick(rng, NAMES)
    if field == "City":
        return pick(rng, CITIES)
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


def document(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    img, _ = _page(rng, w, h)
    s = min(w, h)
    fam = pick(rng, P.FONT_FILES[:5])
    title = pick(rng, TITLES)
    bold = fam if "Bold" in fam or "Mono" in fam else fam.replace(".ttf", "-Bold.ttf")
    tfont = P.font(bold, max(9, int(s * 0.08)))
    bfont = P.font(fam, max(8, int(s * rng.uniform(0.045, 0.06))))
    ink = pick(rng, ((20, 20, 20), (30, 30, 90), (60, 60, 60)))
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
            word = pick(rng, WORDS)
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
    meta = new_meta("document", CLASS_NAMES.index("document"), w, h)
    meta.update(has_text=True, is_chart_or_document=True, words=words)
    meta["document"] = {"title": title, "fields": fields}
    return img, meta


def table(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, dict[str, Any]]:
    img, _ = _page(rng, w, h)
    draw = ImageDraw.Draw(img)
    s = min(w, h)
    fam = pick(rng, P.FONT_FILES[:5])
    title = pick(rng, TITLES)
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
    header_fill = rgb(pick(rng, ("yellow", "white", "orange"))) if rng.random() < 0.4 else None
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
    meta = new_meta("table", CLASS_NAMES.index("table"), w, h)
    meta.update(has_text=True, is_chart_or_document=True, words=words)
    meta["document"] = {
        "title": title,
        "fields": {r: row[0] for r, row in zip(rows, cells, strict=True)},
    }
    meta["table"] = {"columns": cols, "rows": rows, "cells": cells}
    return img, meta
