"""vacated_trend: the vacated place's colour trend held to its surroundings' (no ComfyUI)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))
from dragon_core.plan import build_plan  # noqa: E402
from dragon_core.spec import GuidanceSpec  # noqa: E402
from dragon_core.geometry import ring_around  # noqa: E402
from dragon_core.trend import TrendFill  # noqa: E402

CPU = torch.device("cpu")


def _spec(mode="move", w=128, h=64, box=(16, 16, 40, 40), **kw) -> GuidanceSpec:
    mask = torch.zeros(h, w)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    return GuidanceSpec(mode=mode, width=w, height=h, object_mask=mask, **kw)


def _plane(coef: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[1, C, h, w]: a + b*x/w + c*y/h per channel, coef [C, 3]."""
    yy, xx = torch.meshgrid(torch.arange(h).float() / h, torch.arange(w).float() / w, indexing="ij")
    return (coef[:, 0, None, None] + coef[:, 1, None, None] * xx + coef[:, 2, None, None] * yy)[None]


def _fit(values: torch.Tensor, idx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-channel least-squares plane of values [1, C, h, w] on flat cells idx: its values there, [C, len]."""
    y, x = (idx // w).float() / h, (idx % w).float() / w
    a = torch.stack([torch.ones_like(x), x, y], -1)
    v = values.flatten(2)[0][:, idx]
    return (a @ torch.linalg.lstsq(a, v.T).solution).T


def test_trend_fill_gives_the_region_its_surroundings_plane_and_keeps_its_detail():
    """After apply, the region's predicted image has the plane of the clean source's ring (extrapolated), the
    region's own detail beyond its plane is untouched, and nothing outside the region moves. The shift of x
    equals the shift of x0 (VE latent), so the noise part of x is kept too."""
    h, w = 8, 12
    g = torch.Generator().manual_seed(3)
    region = torch.zeros(h, w, dtype=torch.bool)
    region[2:6, 3:7] = True
    ring = ring_around(region, ~region, 2)
    assert not bool((ring & region).any()) and bool(ring[0, 1]) and not bool(ring[0, 10])
    clean = _plane(torch.tensor([[0.5, 1.0, -2.0], [-1.0, 0.3, 0.8]]), h, w) + 0.01 * torch.randn(1, 2, h, w, generator=g)
    x0 = _plane(torch.tensor([[3.0, -4.0, 1.0], [2.0, 2.0, 2.0]]), h, w) + 0.3 * torch.randn(1, 2, h, w, generator=g)
    noise = torch.randn(1, 2, h, w, generator=g)
    x = x0 + 0.7 * noise
    fill = TrendFill(torch.nonzero(region.flatten(), as_tuple=True)[0], torch.nonzero(ring.flatten(), as_tuple=True)[0],
                     (h, w))
    out = fill.apply(x, x0, fill.target(clean))
    idx = fill.region
    new_x0 = out - 0.7 * noise
    assert torch.allclose(_fit(new_x0, idx, h, w), _extrapolated(clean, fill.ring, idx, h, w), atol=1e-4)
    detail = lambda v: v.flatten(2)[0][:, idx] - _fit(v, idx, h, w)  # noqa: E731
    assert torch.allclose(detail(new_x0), detail(x0), atol=1e-4)
    assert float(detail(x0).abs().max()) > 0.1  # there was detail to keep
    assert torch.equal(out[0][:, ~region], x[0][:, ~region])
    assert float((out - x).abs().max()) > 1.0  # x0's plane (3 - 4x + y) was far from the ring's


def _extrapolated(clean, ring, idx, h, w) -> torch.Tensor:
    """The ring's least-squares plane evaluated on idx."""
    def design(i):
        return torch.stack([torch.ones(len(i)), (i % w).float() / w, (i // w).float() / h], -1)
    sol = torch.linalg.lstsq(design(ring), clean.flatten(2)[0][:, ring].T).solution
    return (design(idx) @ sol).T


def test_move_trend_fills_the_vacated_cells_from_a_ring_around_the_old_place():
    """move: the region is the object's old place minus its new one; the ring lies within vacated_trend pixels
    of the old place and off both places; a painted reference_region replaces the ring; -1 is off."""
    # 128x64 image on a 16x8 latent: 8 px per cell; the object at cells (2:5, 2:5), moved 16 px = 2 cells right
    plan = build_plan(_spec(offset=(16.0, 0.0), vacated_trend=16), (8, 16), CPU)
    region = torch.zeros(8 * 16, dtype=torch.bool)
    region[plan.trend.region] = True
    want = torch.zeros(8, 16, dtype=torch.bool)
    want[2:5, 2:4] = True
    assert torch.equal(region.view(8, 16), want)
    ring = torch.zeros(8 * 16, dtype=torch.bool)
    ring[plan.trend.ring] = True
    ring = ring.view(8, 16)
    cols = torch.nonzero(ring, as_tuple=True)[1]
    assert int(cols.min()) == 0 and int(cols.max()) == 6  # 2 cells around cells 2-4, less the new place (4-6)
    assert not bool(ring[2:5, 2:7].any())
    assert build_plan(_spec(offset=(16.0, 0.0)), (8, 16), CPU).trend is None
    ref = torch.zeros(64, 128)
    ref[40:64, 96:128] = 1
    painted = build_plan(_spec(offset=(16.0, 0.0), vacated_trend=16, reference_region=ref), (8, 16), CPU).trend
    rows, cols = painted.ring // 16, painted.ring % 16
    assert int(rows.min()) == 5 and int(cols.min()) == 12


def test_remove_trend_fills_the_object_from_the_ring_around_it():
    plan = build_plan(_spec("remove", vacated_trend=8), (8, 16), CPU)
    assert sorted(plan.trend.region.tolist()) == [r * 16 + c for r in range(2, 5) for c in range(2, 5)]
    rows, cols = plan.trend.ring // 16, plan.trend.ring % 16
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (1, 5, 1, 5)
