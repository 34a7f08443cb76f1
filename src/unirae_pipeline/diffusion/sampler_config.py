"""The `sample.sampler` params group, apart from the integrators (`sampling`): check_params builds it, so editing the
sampler's code reruns the sample stage alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SamplerConfig:
    """`num_steps` grid points (the reference's 50 points = 49 Euler steps); `guidance` is classifier-free (`cfg`,
    the null class as the weak model) or `autoguidance` (a smaller or less trained guide model), applied on
    t in [guidance_t_min, guidance_t_max] with weight `guidance_scale` (1 = no guidance).

    `euler`/`heun` integrate the probability-flow ODE; `euler_maruyama` the reverse SDE with diffusion
    w(t) = sde_norm * t (vanishing at the data end), its last step without noise.
    """

    method: Literal["euler", "heun", "euler_maruyama"]
    num_steps: int
    guidance: Literal["cfg", "autoguidance"]
    guidance_scale: float
    guidance_t_min: float
    guidance_t_max: float
    sde_norm: float

    def __post_init__(self) -> None:
        if self.sde_norm < 0:
            raise ValueError(f"sample.sampler.sde_norm must be >= 0, got {self.sde_norm}")
        if self.num_steps < 2:
            raise ValueError(f"sample.sampler.num_steps must be >= 2 (grid points), got {self.num_steps}")
        if not self.guidance_scale >= 1:
            raise ValueError(f"sample.sampler.guidance_scale must be >= 1 (1: no guidance; the reference guides only "
                             f"above 1), got {self.guidance_scale}")
        if not 0 <= self.guidance_t_min <= self.guidance_t_max <= 1:
            raise ValueError("sample.sampler.guidance_t_min/guidance_t_max must satisfy 0 <= t_min <= t_max <= 1")

    @property
    def evaluations(self) -> int:
        """Network evaluations per batch (each guided by one more forward of the guide or the null class): one per
        step, two for Heun's corrector."""
        return (self.num_steps - 1) * (2 if self.method == "heun" else 1)
