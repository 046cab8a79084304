"""The generated catalog's item images: one PNG per item whose content follows its attributes (shape <- subcategory,
fill colour <- colour, pattern <- brand family), with jitter in position, size, rotation, shade and background noise.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["render_item_image"]


def _regular(n: int, phase: float = -np.pi / 2, radius: float = 1.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


def _star(n: int, inner: float) -> np.ndarray:
    pts = _regular(2 * n)
    pts[1::2] *= inner
    return pts


_UNIT_SHAPES: dict[str, np.ndarray] = {  # outlines in [-1, 1]^2, y pointing down
    "circle": _regular(32), "square": np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]),
    "triangle": _regular(3), "diamond": _regular(4), "pentagon": _regular(5), "hexagon": _regular(6),
    "star5": _star(5, 0.45), "star4": _star(4, 0.4), "sunburst": _star(10, 0.72), "ring": _regular(32),
    "cross": np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]),
    "ellipse_wide": _regular(32) * [1.0, 0.55], "ellipse_tall": _regular(32) * [0.55, 1.0],
    "bar_wide": np.array([[-1, -0.4], [1, -0.4], [1, 0.4], [-1, 0.4]]), "bar_tall": np.array([[-0.4, -1], [0.4, -1], [0.4, 1], [-0.4, 1]]),
    "triangle_down": _regular(3, phase=np.pi / 2), "trapezoid": np.array([[-0.5, -0.7], [0.5, -0.7], [1, 0.7], [-1, 0.7]]),
    "parallelogram": np.array([[-0.4, -0.7], [1, -0.7], [0.4, 0.7], [-1, 0.7]]),
    "half_disc": np.concatenate([_regular(32)[8:25], [[0.0, 0.0]]]) * [1, -1] + [0, 0.4],
    "arrow": np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]]),
    "tee": np.array([[-1, -0.9], [1, -0.9], [1, -0.4], [0.3, -0.4], [0.3, 1], [-0.3, 1], [-0.3, -0.4], [-1, -0.4]]),
    "hourglass": np.array([[-0.8, -1], [0.8, -1], [0.15, 0], [0.8, 1], [-0.8, 1], [-0.15, 0]]),
    "chevron": np.array([[-1, -0.7], [-0.4, -0.7], [0.4, 0], [-0.4, 0.7], [-1, 0.7], [-0.2, 0]]) + [0.3, 0],
    "ell": np.array([[-0.8, -1], [-0.2, -1], [-0.2, 0.4], [0.8, 0.4], [0.8, 1], [-0.8, 1]]),
}


def _pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean [size, size] mask of the pattern's accent pixels (random phase so copies differ)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) * (64.0 / size)
    if kind == "stripes":
        angle = rng.uniform(0.35, 1.2)
        return ((xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(0, 8)) % 8.0) < 3.5
    if kind == "dots":
        ox, oy = rng.uniform(0, 10, 2)
        return ((xx + ox) % 10.0 - 5.0) ** 2 + ((yy + oy) % 10.0 - 5.0) ** 2 < 2.6 ** 2
    if kind == "checks":
        ox, oy = rng.uniform(0, 12, 2)
        return ((np.floor((xx + ox) / 6.0) + np.floor((yy + oy) / 6.0)) % 2) == 1
    return np.zeros((size, size), dtype=bool)


def render_item_image(shape: str, rgb: tuple[int, int, int], pattern: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One item picture [size, size, 3] uint8: a patterned, coloured shape on a noisy light background."""
    centre = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    radius = size * rng.uniform(0.28, 0.38)
    angle = rng.uniform(-0.2, 0.2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mask_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_img)
    draw.polygon([tuple(p) for p in (_UNIT_SHAPES[shape] @ rot.T * radius + centre)], fill=255)
    if shape == "ring":  # punch the hole
        draw.polygon([tuple(p) for p in (_UNIT_SHAPES[shape] * 0.5 @ rot.T * radius + centre)], fill=0)
    mask = np.asarray(mask_img) > 0  # [S, S]
    base = np.clip(np.array(rgb, dtype=np.float64) + rng.uniform(-12, 12, 3), 0, 255)  # [3]
    accent = base * 0.5 if base.mean() > 90 else base + (255 - base) * 0.5  # darker stripes on light colours
    fill = np.where(_pattern(pattern, size, rng)[..., None], accent, base)  # [S, S, 3]
    background = np.array([238.0, 236.0, 230.0]) + rng.uniform(-6, 6, 3) + rng.normal(0, 5, (size, size, 3))  # [S, S, 3]
    return np.clip(np.where(mask[..., None], fill, background), 0, 255).astype(np.uint8)
