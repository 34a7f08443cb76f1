"""ODE/SDE samplers over the shifted time grid, with classifier-free guidance on an interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .transport import T_MAX, VelocityFn, shift_time


@dataclass(frozen=True)
class SamplerConfig:
    """`num_steps` grid points (the reference's 50 points = 49 Euler steps); guidance on t in [t_min, t_max]."""

    method: Literal["euler", "heun"]
    num_steps: int
    cfg_scale: float
    cfg_t_min: float
    cfg_t_max: float

    def __post_init__(self) -> None:
        if self.method not in ("euler", "heun"):
            raise ValueError(f"sample.method must be 'euler' or 'heun', got {self.method!r}")
        if self.num_steps < 2:
            raise ValueError(f"sample.num_steps must be >= 2 (grid points), got {self.num_steps}")
        if not 0 <= self.cfg_t_min <= self.cfg_t_max <= 1:
            raise ValueError("sample.cfg_t_min/cfg_t_max must satisfy 0 <= t_min <= t_max <= 1")


def time_grid(num_steps: int, s: float) -> torch.Tensor:
    """Decreasing grid from t = 1 (noise) to shift(1 - T_MAX), i.e. the reference's shifted linspace."""
    return shift_time(1 - torch.linspace(0, T_MAX, num_steps, dtype=torch.float64), s)


def guided_velocity(model: VelocityFn, null_label: int, scale: float, t_min: float, t_max: float) -> VelocityFn:
    """Wrap a conditional model with CFG: v = v_u + w (v_c - v_u) inside [t_min, t_max], else v_c."""
    if scale == 1.0:
        return model

    def velocity(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inside = bool(((t >= t_min) & (t <= t_max)).all())
        if not inside:
            return model(x, t, y)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        cond, uncond = both.chunk(2)
        return uncond + scale * (cond - uncond)

    return velocity


@torch.no_grad()
def sample_ode(velocity: VelocityFn, noise: torch.Tensor, y: torch.Tensor, grid: torch.Tensor,
               method: Literal["euler", "heun"]) -> torch.Tensor:
    """Integrate dx/dt = v from grid[0] (noise) to grid[-1] (data side); Heun adds a corrector per step."""
    x = noise
    for t_cur, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        t = torch.full((x.shape[0],), t_cur, device=x.device, dtype=x.dtype)
        v = velocity(x, t, y)
        x_next = x + (t_next - t_cur) * v
        if method == "heun":
            v_next = velocity(x_next, torch.full_like(t, t_next), y)
            x_next = x + (t_next - t_cur) * 0.5 * (v + v_next)
        x = x_next
    return x
