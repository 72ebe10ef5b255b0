"""Synthetic handwritten-looking digits: something learnable with no download and no system fonts.

Owns the drawing: Pillow's built-in scalable font (``ImageFont.load_default(size=…)``), a random
size, position and rotation per sample, Gaussian noise, all from one seed, so the same seed always
gives the same images. Returns numpy arrays; does not own batching, labels encoding or torch
tensors (``data``). Imports Pillow and numpy, not torch.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["SIDE", "draw_digits"]

SIDE = 28
_SIZES = range(18, 25)
_MAX_ANGLE = 12.0
_NOISE = 0.08
_MAX_SHIFT = 0.2


def draw_digits(count: int, *, seed: int) -> tuple[Any, Any]:
    """``count`` images as float32 ``[count, 28, 28]`` in [0, 1] and their labels as int64 ``[count]``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count, dtype=np.int64)
    images = np.empty((count, SIDE, SIDE), dtype=np.float32)
    sizes = rng.integers(_SIZES.start, _SIZES.stop, size=count)
    angles = rng.uniform(-_MAX_ANGLE, _MAX_ANGLE, size=count)
    shifts = rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, size=(count, 2))
    for i in range(count):
        glyph = _glyph(int(labels[i]), int(sizes[i]))
        canvas = Image.new("L", (SIDE, SIDE), 0)
        room_x, room_y = SIDE - glyph.width, SIDE - glyph.height
        x = round(room_x / 2 + shifts[i, 0] * max(room_x, 0))
        y = round(room_y / 2 + shifts[i, 1] * max(room_y, 0))
        canvas.paste(glyph, (x, y))
        canvas = canvas.rotate(float(angles[i]), resample=Image.Resampling.BILINEAR)
        images[i] = np.asarray(canvas, dtype=np.float32) / 255.0
    images += rng.normal(0.0, _NOISE, size=images.shape).astype(np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    return images, labels


@cache
def _glyph(digit: int, size: int) -> Image.Image:
    """The digit drawn tightly at ``size`` pixels, white on black."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(str(digit))
    image = Image.new("L", (max(right - left, 1), max(bottom - top, 1)), 0)
    ImageDraw.Draw(image).text((-left, -top), str(digit), fill=255, font=font, stroke_width=1, stroke_fill=255)
    return image


@cache
def _font(size: int) -> Any:
    return ImageFont.load_default(size=size)
