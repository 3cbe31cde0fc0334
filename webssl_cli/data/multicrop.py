"""DINOv2 multi-crop augmentation on uint8 arrays: simplejpeg decode, OpenCV and lookup tables.

Per image: 2 global crops (RandomResizedCrop at ``global_scale``) and N local crops (at
``local_scale``), each with a horizontal flip (0.5), colour jitter (0.8: brightness 0.4,
contrast 0.4, saturation 0.2, hue 0.1, in random order), grayscale (0.2), Gaussian blur
(sigma 0.1-2, 9x9 kernel, both scaled by ``blur_scale`` for small crops) and, on the second global crop, solarize (0.2). Blur probabilities
follow DINOv2's code (global 0 / 0.9, local 0.5; FACTS.md) or its written intent (1 / 0.1 / 0.5).

Crops stay uint8 (H, W, 3) here: normalisation happens batched on the training device, which
also keeps the bytes moved between processes 4x smaller. All randomness comes from the
Generator passed in, so a crop is a pure function of (image bytes, generator seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from webssl_cli.specs.train import CropConfig

BLUR_PROBS = {"dinov2-code": (0.0, 0.9, 0.5), "written": (1.0, 0.1, 0.5)}
MEAN = (0.485, 0.456, 0.406)  # ImageNet, applied on the device
STD = (0.229, 0.224, 0.225)

_IDENTITY = np.arange(256, dtype=np.float32)
cv2.setNumThreads(1)  # one image per core; OpenCV's own threads only fight the loader workers


class UndecodableImage(ValueError):
    pass


def decode_rgb(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB from JPEG (simplejpeg) or any format OpenCV reads."""
    try:
        if data[:2] == b"\xff\xd8":
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is one bad sample
        raise UndecodableImage(str(exc)) from exc
    if img is None or img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise UndecodableImage("not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def crop_box(
    rng: np.random.Generator, h: int, w: int, scale: tuple[float, float]
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, height, width): area in ``scale``, ratio 3/4-4/3."""
    area = h * w
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    # Fallback: the central crop at the closest allowed aspect ratio.
    in_ratio = w / h
    if in_ratio < 3 / 4:
        cw, ch = w, int(round(w / (3 / 4)))
    elif in_ratio > 4 / 3:
        ch, cw = h, int(round(h * (4 / 3)))
    else:
        cw, ch = w, h
    ch, cw = min(ch, h), min(cw, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def resized_crop(img: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop ``box`` and resize it to (size, size): bicubic, antialiased when shrinking 2x or more.

    OpenCV's INTER_AREA is 7x slower than bicubic at fractional ratios but fast at integer
    ones, so a shrink by r >= 2 first averages k = floor(r) x k blocks (exact box filter), then
    resizes the rest (ratio < 2) bicubically.
    """
    top, left, ch, cw = box
    k = min(ch, cw) // size
    if k >= 2:
        ch, cw = ch - ch % k, cw - cw % k
        patch = img[top : top + ch, left : left + cw]
        patch = cv2.resize(patch, (cw // k, ch // k), interpolation=cv2.INTER_AREA)
    else:
        patch = img[top : top + ch, left : left + cw]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_CUBIC)


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(table, 0, 255).round().astype(np.uint8))


def color_jitter(
    rng: np.random.Generator,
    img: np.ndarray,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
) -> np.ndarray:
    """torchvision's ColorJitter semantics: the four ops with random factors in random order."""
    factors = (
        rng.uniform(1 - brightness, 1 + brightness),
        rng.uniform(1 - contrast, 1 + contrast),
        rng.uniform(1 - saturation, 1 + saturation),
        rng.uniform(-hue, hue),
    )
    for op in rng.permutation(4):
        f = factors[op]
        if op == 0:
            img = _lut(img, _IDENTITY * f)
        elif op == 1:  # blend with the mean grey level
            mean = float(_gray(img).mean())
            img = _lut(img, _IDENTITY * f + mean * (1 - f))
        elif op == 2:  # blend with the grayscale image
            g = cv2.cvtColor(_gray(img), cv2.COLOR_GRAY2RGB)
            img = cv2.addWeighted(img, f, g, 1 - f, 0.0)
        else:  # rotate the hue channel (0-255 scale in OpenCV's _FULL conversions)
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL)
            shift = np.uint8(int(round(f * 255)) % 256)
            hsv[..., 0] += shift  # uint8 arithmetic wraps around, as hue should
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return img


def blur_kernel(blur_scale: float) -> int:
    """Side of the blur kernel: DINOv2's 9 px scaled, odd, at least 3."""
    return max(3, int(round(9 * blur_scale)) // 2 * 2 + 1)


def _solarize(img: np.ndarray) -> np.ndarray:
    table = np.where(_IDENTITY >= 128, 255 - _IDENTITY, _IDENTITY)
    return _lut(img, table)


def augment(
    rng: np.random.Generator,
    img: np.ndarray,
    size: int,
    scale: tuple[float, float],
    blur_p: float,
    solarize_p: float = 0.0,
    blur_scale: float = 1.0,
    hue: float = 0.1,
) -> np.ndarray:
    """One crop: resized crop -> flip -> jitter (0.8) -> grayscale (0.2) -> blur -> solarize."""
    h, w = img.shape[:2]
    out = resized_crop(img, crop_box(rng, h, w, scale), size)
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)
    if rng.random() < 0.8:
        out = color_jitter(rng, out, hue=hue)
    if rng.random() < 0.2:
        out = cv2.cvtColor(_gray(out), cv2.COLOR_GRAY2RGB)
    if rng.random() < blur_p:
        sigma = rng.uniform(0.1, 2.0) * blur_scale
        k = blur_kernel(blur_scale)
        out = cv2.GaussianBlur(out, (k, k), sigmaX=sigma, sigmaY=sigma)
    if rng.random() < solarize_p:
        out = _solarize(out)
    return out


@dataclass(frozen=True)
class MultiCrop:
    cfg: CropConfig

    def __call__(
        self, data: bytes | np.ndarray, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(global crops, local crops) of one image, each (size, size, 3) uint8."""
        img = decode_rgb(data) if isinstance(data, bytes | bytearray | memoryview) else data
        c = self.cfg
        g1, g2, loc = BLUR_PROBS[c.blur_probs]
        kw = {"blur_scale": c.blur_scale, "hue": c.hue}
        globals_ = [
            augment(rng, img, c.global_size, c.global_scale, g1, **kw),
            augment(rng, img, c.global_size, c.global_scale, g2, solarize_p=0.2, **kw),
        ]
        locals_ = [
            augment(rng, img, c.local_size, c.local_scale, loc, **kw) for _ in range(c.n_local)
        ]
        return globals_, locals_


@dataclass(frozen=True)
class SingleView:
    """The single-view augmentation of CLIP and MAE: one RandomResizedCrop (area in ``scale``,
    bicubic) to ``size`` and a horizontal flip (0.5); no colour or blur. The same call shape as
    ``MultiCrop``: ([the view], [])."""

    size: int
    scale: tuple[float, float]

    def __call__(
        self, data: bytes | np.ndarray, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        img = decode_rgb(data) if isinstance(data, bytes | bytearray | memoryview) else data
        h, w = img.shape[:2]
        out = resized_crop(img, crop_box(rng, h, w, self.scale), self.size)
        if rng.random() < 0.5:
            out = cv2.flip(out, 1)
        return [out], []
