"""Seeded synthetic scenes with exact ground-truth edits, for the toy model and the quality benchmark.

A scene is a textured two-colour gradient background with antialiased shapes (circle, square,
triangle; solid or striped). Because every shape is drawn from parameters, the correct result of
every edit (move, resize, drag, paste, appearance, removal) can be drawn too: the benchmark
compares the pack's output with it. Plain PyTorch, no ComfyUI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

SIZE = 32
SUPERSAMPLE = 4
KINDS = ("circle", "square", "triangle")
MODES = ("move", "resize", "drag", "paste", "appearance", "remove")


@dataclass(frozen=True)
class Shape:
    kind: str
    cx: float  # centre, pixels (pixel i covers [i, i+1))
    cy: float
    rx: float  # half extent, pixels
    ry: float
    color: tuple[float, float, float]
    stripe_color: Optional[tuple[float, float, float]] = None
    stripe_period: float = 4.0
    stripe_angle: float = 0.0

    def moved(self, dx: float, dy: float) -> "Shape":
        return replace(self, cx=self.cx + dx, cy=self.cy + dy)

    def bbox(self) -> tuple[float, float, float, float]:
        return self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, self.cy + self.ry


@dataclass(frozen=True)
class Background:
    c0: tuple[float, float, float]
    c1: tuple[float, float, float]
    angle: float
    waves: tuple[tuple[float, float, float, float], ...]  # (period px, angle, phase, amplitude)


@dataclass
class Case:
    """One benchmark edit: the inputs a user gives and the exact expected result."""
    mode: str
    seed: int
    source: torch.Tensor  # [3, H, W] in [0, 1]
    expected: torch.Tensor  # the ground-truth edit
    background: torch.Tensor  # the clean background of the source
    object_mask: torch.Tensor  # [H, W] {0,1}: what the user paints (object, 1 px dilated)
    source_region: torch.Tensor  # [H, W] coverage > 0.5 of the object before the edit
    target_region: torch.Tensor  # same, after the edit (zero for removal)
    object_color: tuple[float, float, float]
    offset: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    points: list = field(default_factory=list)  # [[hx, hy], [tx, ty], ...]: handle, target alternating, pixels
    reference: Optional[torch.Tensor] = None  # paste/appearance: the other image
    reference_mask: Optional[torch.Tensor] = None
    editable: Optional[torch.Tensor] = None  # drag: the region the user lets change (object + where it goes)

    @property
    def guide_mask(self) -> torch.Tensor:
        """The mask given to Guidance Setup: the editable region for drag, else the painted object."""
        return self.editable if self.editable is not None else self.object_mask


def _grid(h: int, w: int, ss: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys = (torch.arange(h * ss, dtype=torch.float32) + 0.5) / ss
    xs = (torch.arange(w * ss, dtype=torch.float32) + 0.5) / ss
    return torch.meshgrid(ys, xs, indexing="ij")


def _inside(shape: Shape, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    u = (xx - shape.cx) / shape.rx
    v = (yy - shape.cy) / shape.ry
    if shape.kind == "circle":
        return u * u + v * v <= 1.0
    if shape.kind == "square":
        return (u.abs() <= 1.0) & (v.abs() <= 1.0)
    if shape.kind == "triangle":  # apex up, base at v = 1
        return (v <= 1.0) & (v >= -1.0) & (u.abs() <= (v + 1.0) / 2.0)
    raise ValueError(shape.kind)


def _pool(x: torch.Tensor, ss: int) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(x[None], ss)[0]


def coverage(shape: Shape, h: int = SIZE, w: int = SIZE, ss: int = SUPERSAMPLE) -> torch.Tensor:
    """[H, W] antialiased coverage of a shape, by supersampling."""
    yy, xx = _grid(h, w, ss)
    return _pool(_inside(shape, yy, xx).float()[None], ss)[0]


def shape_colors(shape: Shape, h: int = SIZE, w: int = SIZE, ss: int = SUPERSAMPLE) -> torch.Tensor:
    """[3, H, W] colour of the shape's surface; stripes move with the shape."""
    col = torch.tensor(shape.color).view(3, 1, 1)
    if shape.stripe_color is None:
        return col.expand(3, h, w).clone()
    yy, xx = _grid(h, w, ss)
    a = shape.stripe_angle
    d = (xx - shape.cx) * math.cos(a) + (yy - shape.cy) * math.sin(a)
    on = (torch.remainder(d / shape.stripe_period, 1.0) < 0.5).float()[None]
    sc = torch.tensor(shape.stripe_color).view(3, 1, 1)
    return _pool(col * (1 - on) + sc * on, ss)


def render_background(bg: Background, h: int = SIZE, w: int = SIZE) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                            indexing="ij")
    d = ((xx - w / 2) * math.cos(bg.angle) + (yy - h / 2) * math.sin(bg.angle)) / max(h, w) + 0.5
    t = d.clamp(0, 1)[None]
    img = torch.tensor(bg.c0).view(3, 1, 1) * (1 - t) + torch.tensor(bg.c1).view(3, 1, 1) * t
    tex = torch.zeros(h, w)
    for period, ang, phase, amp in bg.waves:
        tex += amp * torch.sin(2 * math.pi * ((xx * math.cos(ang) + yy * math.sin(ang)) / period) + phase)
    return (img + tex[None]).clamp(0, 1)


def compose(background: torch.Tensor, shapes: list[Shape]) -> torch.Tensor:
    img = background.clone()
    h, w = img.shape[-2:]
    for s in shapes:
        a = coverage(s, h, w)[None]
        img = img * (1 - a) + shape_colors(s, h, w) * a
    return img


# ---------------------------------------------------------------- random draws

def _color(g: torch.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in torch.rand(3, generator=g))


def _far_color(g: torch.Generator, avoid: list, min_dist: float) -> tuple[float, float, float]:
    best, best_d = None, -1.0
    for _ in range(64):
        c = _color(g)
        d = min(math.dist(c, a) for a in avoid) if avoid else 9.0
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def random_background(g: torch.Generator) -> Background:
    c0 = _color(g)
    c1 = tuple(float(v) for v in (torch.tensor(c0) + (torch.rand(3, generator=g) - 0.5) * 0.6).clamp(0, 1))
    waves = tuple((4.0 + 8.0 * float(torch.rand(1, generator=g)), math.pi * float(torch.rand(1, generator=g)),
                   2 * math.pi * float(torch.rand(1, generator=g)), 0.02 + 0.05 * float(torch.rand(1, generator=g)))
                  for _ in range(2))
    return Background(c0, c1, 2 * math.pi * float(torch.rand(1, generator=g)), waves)


def random_shape(g: torch.Generator, bg: Background, size=(3.0, 6.0), striped: Optional[bool] = None,
                 margin: float = 1.0, h: int = SIZE, w: int = SIZE, kinds=KINDS) -> Shape:
    kind = kinds[int(torch.randint(len(kinds), (1,), generator=g))]
    r = size[0] + (size[1] - size[0]) * float(torch.rand(1, generator=g))
    aspect = 0.8 + 0.4 * float(torch.rand(1, generator=g))
    rx, ry = r * aspect ** 0.5, r / aspect ** 0.5
    cx = rx + margin + (w - 2 * rx - 2 * margin) * float(torch.rand(1, generator=g))
    cy = ry + margin + (h - 2 * ry - 2 * margin) * float(torch.rand(1, generator=g))
    color = _far_color(g, [bg.c0, bg.c1], 0.6)
    if striped is None:
        striped = bool(torch.rand(1, generator=g) < 0.3)
    stripe = _far_color(g, [color], 0.5) if striped else None
    return Shape(kind, cx, cy, rx, ry, color, stripe, 3.0 + 3.0 * float(torch.rand(1, generator=g)),
                 math.pi * float(torch.rand(1, generator=g)))


def training_batch(n: int, generator: torch.Generator, h: int = SIZE, w: int = SIZE) -> torch.Tensor:
    """[n, 3, H, W] random scenes in [0, 1]: 0-2 shapes (a few backgrounds alone, as removal needs)."""
    out = torch.empty(n, 3, h, w)
    for i in range(n):
        bg = random_background(generator)
        k = int(torch.multinomial(torch.tensor([0.1, 0.5, 0.4]), 1, generator=generator))
        shapes = [random_shape(generator, bg, h=h, w=w) for _ in range(k)]
        out[i] = compose(render_background(bg, h, w), shapes)
    return out


# ---------------------------------------------------------------- benchmark cases

def _regions(shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    cov = coverage(shape)
    painted = torch.nn.functional.max_pool2d((cov > 0.05).float()[None, None], 3, 1, 1)[0, 0]
    return painted, (cov > 0.5).float()


def _offset(g: torch.Generator, shape: Shape, lo: float, hi: float, scale: float = 1.0) -> tuple[float, float]:
    """A displacement of lo..hi px keeping the (scaled) shape inside the image with a 1 px margin."""
    rx, ry = shape.rx * scale, shape.ry * scale
    for _ in range(200):
        d = lo + (hi - lo) * float(torch.rand(1, generator=g))
        a = 2 * math.pi * float(torch.rand(1, generator=g))
        dx, dy = round(d * math.cos(a)), round(d * math.sin(a))
        nx, ny = shape.cx + dx, shape.cy + dy
        if rx + 1 <= nx <= SIZE - rx - 1 and ry + 1 <= ny <= SIZE - ry - 1 and math.hypot(dx, dy) >= lo:
            return float(dx), float(dy)
    raise RuntimeError("no room to move the shape")  # cannot happen for the sizes drawn here


def make_case(mode: str, seed: int) -> Case:
    """The benchmark case `seed` of a mode: one solid object on a textured background."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    g = torch.Generator().manual_seed(seed * 7919 + MODES.index(mode))
    bg = random_background(g)
    background = render_background(bg)
    obj = random_shape(g, bg, size=(4.0, 6.0), striped=False, margin=2.0)
    source = compose(background, [obj])
    painted, src_region = _regions(obj)
    kw: dict = {}
    if mode == "move":
        dx, dy = _offset(g, obj, 6.0, 10.0)
        new = obj.moved(dx, dy)
        kw["offset"] = (dx, dy)
        # the same move as one handle->target pair (the object's centre and where it goes): how a user drags it
        hx, hy = round(obj.cx, 1), round(obj.cy, 1)
        kw["points"] = [[hx, hy], [round(hx + dx, 1), round(hy + dy, 1)]]
    elif mode == "resize":
        scale = [0.7, 1.3][int(torch.randint(2, (1,), generator=g))] + 0.1 * float(torch.rand(1, generator=g))
        dx, dy = _offset(g, obj, 3.0, 7.0, scale)
        new = replace(obj.moved(dx, dy), rx=obj.rx * scale, ry=obj.ry * scale)
        kw.update(offset=(dx, dy), scale=scale)
    elif mode == "drag":
        # drag the object by a handle on it: the whole object follows the drag
        dx, dy = _offset(g, obj, 4.0, 8.0)
        new = obj.moved(dx, dy)
        hx = obj.cx + (float(torch.rand(1, generator=g)) - 0.5) * obj.rx
        hy = obj.cy + (float(torch.rand(1, generator=g)) - 0.5) * obj.ry
        kw["points"] = [[round(hx, 1), round(hy, 1)], [round(hx + dx, 1), round(hy + dy, 1)]]
        kw["offset"] = (dx, dy)
        # drag's mask is the editable region (the official code requires one): a user paints the object
        # and the place it is dragged to, so the guidance may change both and holds everything else
        kw["editable"] = torch.maximum(painted, _regions(new)[0])
    elif mode == "paste":
        # the object comes from another scene; it lands `offset` away from where it sits there
        rbg = random_background(g)
        dx, dy = _offset(g, obj, 4.0, 10.0)
        reference = compose(render_background(rbg), [obj])
        new = obj.moved(dx, dy)
        source = background.clone()  # the base image has no object
        kw.update(offset=(dx, dy), reference=reference, reference_mask=painted)
        painted = torch.zeros_like(painted)
        src_region = torch.zeros_like(src_region)
    elif mode == "appearance":
        rbg = random_background(g)
        ref = random_shape(g, rbg, size=(4.0, 6.0), striped=True, margin=2.0)
        ref = replace(ref, color=_far_color(g, [bg.c0, bg.c1, obj.color], 0.5))
        reference = compose(render_background(rbg), [ref])
        rpainted, _ = _regions(ref)
        new = replace(obj, color=ref.color, stripe_color=ref.stripe_color, stripe_period=ref.stripe_period,
                      stripe_angle=ref.stripe_angle)
        kw.update(reference=reference, reference_mask=rpainted)
    else:  # remove
        new = None
    expected = compose(background, [new] if new is not None else [])
    tgt_region = _regions(new)[1] if new is not None else torch.zeros_like(src_region)
    color = (new or obj).color
    return Case(mode, seed, source, expected, background, painted, src_region, tgt_region, color, **kw)


def cases(mode: str, seeds) -> list[Case]:
    return [make_case(mode, s) for s in seeds]
