"""The `sample.sampler` params group, apart from the integrators (`sampling`): check_params builds it, so editing the
sampler's code reruns the sample stage alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SamplerConfig:
    """`num_steps` grid points (the reference's 50 points = 49 Euler steps); `guidance` is classifier-free (`cfg`,
    the null class as the weak model) or `autoguidance` (a smaller or less trained guide model), applied on
    t in [guidance_t_min, guidance_t_max] with weight `guidance_scale` (1 = no guidance). RAEv2's DiT (two heads) also
    takes internal guidance, its base head the weak model, weight `ig_scale` on [ig_t_min, ig_t_max] (1 = none);
    AutoGuidance is DiT-DH's only. A RAEv2 DiT's grid runs to t = 0 (RAEv2's), DiT-DH's to 1 - 0.999 (RAE's).

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
    ig_scale: float
    ig_t_min: float
    ig_t_max: float

    def __post_init__(self) -> None:
        if self.sde_norm < 0:
            raise ValueError(f"sample.sampler.sde_norm must be >= 0, got {self.sde_norm}")
        if self.num_steps < 2:
            raise ValueError(f"sample.sampler.num_steps must be >= 2 (grid points), got {self.num_steps}")
        if not self.guidance_scale >= 1:
            raise ValueError(f"sample.sampler.guidance_scale must be >= 1 (1: no guidance; the reference guides only "
                             f"above 1), got {self.guidance_scale}")
        for key in ("guidance", "ig"):
            low, high = getattr(self, f"{key}_t_min"), getattr(self, f"{key}_t_max")
            if not 0 <= low <= high <= 1:
                raise ValueError(f"sample.sampler.{key}_t_min/{key}_t_max must satisfy 0 <= t_min <= t_max <= 1, "
                                 f"got {low} and {high}")
        if not self.ig_scale >= 1:
            raise ValueError(f"sample.sampler.ig_scale must be >= 1 (1: no internal guidance), got {self.ig_scale}")

    @property
    def evaluations(self) -> int:
        """Network evaluations per batch (each guided by one more forward of the guide or the null class): one per
        step, two for Heun's corrector."""
        return (self.num_steps - 1) * (2 if self.method == "heun" else 1)
