"""Drawing primitives for the synthetic corpus: palette, fonts, shapes, backgrounds, text.

Everything draws onto a PIL RGB image with a numpy Generator for randomness, so one seed gives
one picture. Fonts are the DejaVu family that ships inside matplotlib (nothing is downloaded).
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# A small palette so that colour questions have one right answer.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (34, 160, 60),
    "blue": (35, 80, 215),
    "yellow": (240, 215, 30),
    "orange": (245, 130, 20),
    "purple": (135, 55, 185),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOR_NAMES = tuple(PALETTE)

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "hexagon",
    "diamond",
    "arrow",
    "crescent",
)

FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSans-Oblique.ttf",
)


@lru_cache(maxsize=1)
def font_dir() -> Path:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise RuntimeError("matplotlib is not installed; its DejaVu fonts draw the synthetic text")
    return Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"


@lru_cache(maxsize=512)
def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / name), max(6, int(size)))


def luminance(rgb: tuple[int, int, int] | np.ndarray) -> float:
    r, g, b = (float(c) for c in rgb)
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


def contrasting(rgb: tuple[int, int, int], rng: np.random.Generator, min_diff: float) -> str:
    """A palette colour whose luminance differs from ``rgb`` by at least ``min_diff``."""
    base = luminance(rgb)
    ok = [n for n in COLOR_NAMES if abs(luminance(PALETTE[n]) - base) >= min_diff]
    if not ok:  # mid-grey backgrounds: take the farthest of black and white
        ok = ["black" if base > 0.5 else "white"]
    return str(ok[int(rng.integers(len(ok)))])


# ---- backgrounds ------------------------------------------------------------------------------
def smooth_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Low-frequency colour noise over a gradient: sky, walls, blurry scenery."""
    g = int(rng.integers(2, 6))
    coarse = rng.uniform(0, 255, size=(g, g, 3)).astype(np.float32)
    base = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    tint = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
    base = (base * tint + np.float32(rng.uniform(0, 80)) * (1 - tint)).astype(np.float32)
    # Fine grain so that flat regions do not look drawn.
    grain = rng.standard_normal(base.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def add_texture(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Repetitive patterns (stripes, checks, dots, foliage) that a text detector must not take for text."""
    h, w = arr.shape[:2]
    kind = int(rng.integers(5))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(6, 24)
    if kind == 0:
        angle = rng.uniform(0, math.pi)
        pat = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    elif kind == 1:
        pat = np.sign(np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period))
    elif kind == 2:
        pat = np.cos(xx * 2 * math.pi / period) + np.cos(yy * 2 * math.pi / period) - 1
    elif kind == 3:
        noise = rng.normal(0, 1, size=(h // 4 + 1, w // 4 + 1)).astype(np.float32)
        pat = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        # A facade: rows of windows, the classic false positive of text detectors.
        cw, ch = rng.uniform(8, 22), rng.uniform(8, 22)
        fx, fy = rng.uniform(0.4, 0.75), rng.uniform(0.4, 0.75)
        pat = (((xx % cw) < cw * fx) & ((yy % ch) < ch * fy)).astype(np.float32) * 2 - 1
    amp = rng.uniform(10, 45)
    out = arr.astype(np.float32) + amp * pat[..., None].astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


# ---- shapes -------------------------------------------------------------------------------------
def _regular(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(rot + 2 * math.pi * i / n), cy + r * math.sin(rot + 2 * math.pi * i / n))
        for i in range(n)
    ]


def draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, int, int],
    rot: float,
    bg: tuple[int, int, int] = (0, 0, 0),
) -> list[int]:
    """Draw one filled shape of radius ``r``; returns its bbox [x0, y0, x1, y1]."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.polygon(_regular(cx, cy, r * 1.2, 4, rot + math.pi / 4), fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular(cx, cy, r * 1.1, 3, rot - math.pi / 2), fill=fill)
    elif shape == "star":
        pts = []
        for i in range(10):
            rr = r * 1.15 if i % 2 == 0 else r * 0.45
            a = rot - math.pi / 2 + math.pi * i / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        draw.polygon(pts, fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, int(r * 0.35)))
    elif shape == "cross":
        t = r * 0.35
        for dx, dy in ((r, t), (t, r)):
            c, s = math.cos(rot), math.sin(rot)
            corners = [(-dx, -dy), (dx, -dy), (dx, dy), (-dx, dy)]
            draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=fill)
    elif shape == "hexagon":
        draw.polygon(_regular(cx, cy, r, 6, rot), fill=fill)
    elif shape == "diamond":
        c, s = math.cos(rot), math.sin(rot)
        corners = [(0, -r * 1.2), (r * 0.7, 0), (0, r * 1.2), (-r * 0.7, 0)]
        draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=fill)
    elif shape == "arrow":
        c, s = math.cos(rot), math.sin(rot)
        corners = [(-r, -r * 0.25), (0.1 * r, -r * 0.25), (0.1 * r, -r * 0.7), (r, 0)]
        corners += [(0.1 * r, r * 0.7), (0.1 * r, r * 0.25), (-r, r * 0.25)]
        draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=fill)
    elif shape == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        ox, oy = cx + 0.45 * r * math.cos(rot), cy + 0.45 * r * math.sin(rot)
        draw.ellipse([ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r], fill=bg)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    k = 1.2
    return [
        int(cx - k * r),
        int(cy - k * r),
        int(math.ceil(cx + k * r)),
        int(math.ceil(cy + k * r)),
    ]


# ---- text -------------------------------------------------------------------------------------
def text_size(fnt: ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    x0, y0, x1, y1 = fnt.getbbox(text)
    return int(x1 - x0), int(y1 - y0)


def draw_text(
    img: Image.Image,
    xy: tuple[float, float],
    text: str,
    fnt: ImageFont.FreeTypeFont,
    fill: tuple[int, int, int],
    angle: float = 0.0,
    plate: tuple[int, int, int] | None = None,
) -> list[int]:
    """Draw ``text`` with its top-left at ``xy``, rotated by ``angle`` degrees around that corner.

    ``plate`` draws a filled sign behind the text. Returns the bbox of the drawn ink.
    """
    x, y = xy
    if angle == 0.0 and plate is None:
        draw = ImageDraw.Draw(img)
        x0, y0, x1, y1 = draw.textbbox((x, y), text, font=fnt)
        draw.text((x, y), text, font=fnt, fill=fill)
        return [int(x0), int(y0), int(math.ceil(x1)), int(math.ceil(y1))]
    tw, th = text_size(fnt, text)
    pad = max(2, th // 3) if plate is not None else 2
    layer = Image.new("RGBA", (tw + 2 * pad, th + 2 * pad + th // 2), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    if plate is not None:
        d.rectangle([0, 0, layer.width - 1, layer.height - 1], fill=(*plate, 255))
    ox, oy = fnt.getbbox(text)[:2]
    d.text((pad - ox, pad - oy), text, font=fnt, fill=(*fill, 255))
    if angle:
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    img.paste(layer, (int(x), int(y)), layer)
    bbox = layer.getbbox() or (0, 0, layer.width, layer.height)
    return [int(x) + bbox[0], int(y) + bbox[1], int(x) + bbox[2], int(y) + bbox[3]]


def camera(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photographs are not crisp: sometimes defocus blur, sensor noise or both."""
    out = arr
    if rng.random() < 0.35:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.4, 1.1)))
    if rng.random() < 0.35:
        noisy = out.astype(np.float32)
        noisy += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(3, 9))
        out = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
    return out


def region_mean(arr: np.ndarray, box: list[int]) -> tuple[int, int, int]:
    h, w = arr.shape[:2]
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(w, max(x0 + 1, box[2])), min(h, max(y0 + 1, box[3]))
    m = arr[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    return int(m[0]), int(m[1]), int(m[2])
