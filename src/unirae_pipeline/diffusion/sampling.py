"""ODE/SDE samplers over the shifted time grid, with classifier-free guidance on an interval."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from .sampler_config import SamplerConfig
from .transport import T_EPS, T_MAX, VelocityFn, shift_time, x_to_velocity


def with_guidance(cfg: SamplerConfig, model: VelocityFn, null_label: int,
                  guide: VelocityFn | None = None) -> VelocityFn:
    """The model's velocity with the configured guidance."""
    if cfg.guidance == "cfg":
        return guided_velocity(model, null_label, cfg.guidance_scale, cfg.guidance_t_min, cfg.guidance_t_max)
    if guide is None and cfg.guidance_scale > 1:
        raise ValueError("sample.sampler.guidance is 'autoguidance' but no guide model was given")
    return autoguided_velocity(model, guide, cfg.guidance_scale, cfg.guidance_t_min, cfg.guidance_t_max)


def module_velocity(net: nn.Module, device: torch.device | str, compile: bool) -> VelocityFn:
    """A velocity network in eval mode on `device`, through torch.compile if asked (one graph per batch shape: the
    batch is fixed and doubles under CFG, so no dynamic-shape code), its output cast to fp32 so that guidance
    arithmetic stays exact under autocast."""
    run = prepared(net, device, compile)
    return lambda x, t, y: run(x, t, y).float()


def prepared(net: nn.Module, device: torch.device | str, compile: bool) -> Callable[..., Any]:
    """The network in eval mode on `device`, compiled if asked (see `module_velocity`)."""
    net = net.eval().to(device)
    return torch.compile(net, dynamic=False) if compile else net


def raev2_velocity(cfg: SamplerConfig, net: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                   null_label: int) -> VelocityFn:
    """RAEv2's DiT under the configured guidance: internal guidance and CFG (`internally_guided_velocity`)."""
    if cfg.guidance == "autoguidance" and cfg.guidance_scale > 1:
        raise ValueError("sample.sampler.guidance 'autoguidance' guides DiT-DH with a second model; RAEv2's DiT "
                         "guides itself: set sample.sampler.guidance=cfg and use sample.sampler.ig_scale")
    return internally_guided_velocity(net, T_EPS, null_label, cfg.ig_scale, cfg.ig_t_min, cfg.ig_t_max,
                                      cfg.guidance_scale, cfg.guidance_t_min, cfg.guidance_t_max)


def time_grid(num_steps: int, s: float) -> torch.Tensor:
    """Decreasing grid from t = 1 (noise) to shift(1 - T_MAX), i.e. the reference's shifted linspace."""
    return shift_time(1 - torch.linspace(0, T_MAX, num_steps, dtype=torch.float64), s)


def raev2_time_grid(num_steps: int, s: float) -> torch.Tensor:
    """RAEv2's grid: `num_steps` + 1 points from t = 1 to t = 0 in fp32, shifted; Euler never evaluates the model at
    the last point, so x-prediction's division by t stays away from 0 (`x_to_velocity` clamps it anyway)."""
    return shift_time(torch.linspace(1.0, 0.0, num_steps + 1), s)


def internally_guided_velocity(net: Callable[..., tuple[torch.Tensor, torch.Tensor]], t_eps: float, null_label: int,
                               ig_scale: float, ig_t_min: float, ig_t_max: float, cfg_scale: float = 1.0,
                               cfg_t_min: float = 0.0, cfg_t_max: float = 1.0,
                               uncond_ig_scale: float | None = None) -> VelocityFn:
    """The velocity of a two-head clean-latent predictor (RAEv2's DiT, `(full, base)`) under RAEv2's guidance.

    Internal guidance (IG): base + w (full - base) on [ig_t_min, ig_t_max], the base head as the weak model, one
    forward for both. With CFG above 1: IG on the conditional and the null-class halves of one doubled forward (the
    null half with `uncond_ig_scale`, default `ig_scale`), then CFG on [cfg_t_min, cfg_t_max]. Neither: the full head.
    Mixed as predictions of the clean latent in the sampler's dtype (autocast's bf16 outputs cast up), then turned
    into a velocity (`x_to_velocity`), in RAEv2's order.
    """
    use_ig = ig_scale > 1.0 or uncond_ig_scale not in (None, 1.0)  # RAEv2's `GuidanceConfig.use_ig`
    uncond_scale = ig_scale if uncond_ig_scale is None else uncond_ig_scale

    def mix(full: torch.Tensor, base: torch.Tensor, scale: float, t: torch.Tensor) -> torch.Tensor:
        return base + scale * (full - base) if use_ig and _inside(t, ig_t_min, ig_t_max) else full

    def velocity(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not (cfg_scale > 1.0 and _inside(t, cfg_t_min, cfg_t_max)):
            full, base = net(x, t, y)
            x_hat = mix(full.to(x.dtype), base.to(x.dtype), ig_scale, t)
        else:
            full, base = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
            (full_c, full_u), (base_c, base_u) = full.to(x.dtype).chunk(2), base.to(x.dtype).chunk(2)
            cond, uncond = mix(full_c, base_c, ig_scale, t), mix(full_u, base_u, uncond_scale, t)
            x_hat = uncond + cfg_scale * (cond - uncond)
        return x_to_velocity(x, x_hat, t, t_eps)

    return velocity


def guided_velocity(model: VelocityFn, null_label: int, scale: float, t_min: float, t_max: float) -> VelocityFn:
    """Wrap a conditional model with CFG: v = v_u + w (v_c - v_u) inside [t_min, t_max], else v_c; for w <= 1 the
    plain conditional model, as the reference (`sample_ddp.py` guides only for scale > 1)."""
    if scale <= 1.0:
        return model

    def velocity(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not _inside(t, t_min, t_max):
            return model(x, t, y)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        cond, uncond = both.chunk(2)
        return uncond + scale * (cond - uncond)

    return velocity


def autoguided_velocity(model: VelocityFn, guide: VelocityFn, scale: float, t_min: float,
                        t_max: float) -> VelocityFn:
    """AutoGuidance (Karras et al. 2024): v = v_g + w (v_main - v_g), the guide a smaller, under-trained model
    conditioned on the same labels; one forward of each model, no doubled batch. For w <= 1 the plain model."""
    if scale <= 1.0:
        return model

    def velocity(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        main = model(x, t, y)
        if not _inside(t, t_min, t_max):
            return main
        weak = guide(x, t, y)
        return weak + scale * (main - weak)

    return velocity


def _inside(t: torch.Tensor, t_min: float, t_max: float) -> bool:
    """Whether the (shared) time of a batch lies in the guidance interval, inclusive as the reference."""
    return bool(((t >= t_min) & (t <= t_max)).all())


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


@torch.no_grad()
def sample_sde(velocity: VelocityFn, noise: torch.Tensor, y: torch.Tensor, grid: torch.Tensor, norm: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler-Maruyama on the reverse SDE dx = [v - w/2 score] dt + sqrt(w) dW with w(t) = norm * t.

    On the linear path eps = x_t + (1 - t) v, so score = -(x_t + (1 - t) v) / t; w * score stays finite as t -> 0.
    Any w gives the same marginals as the ODE; the noise corrects integration error. The last step adds none.
    """
    x = noise
    steps = list(zip(grid[:-1].tolist(), grid[1:].tolist()))
    for i, (t_cur, t_next) in enumerate(steps):
        t = torch.full((x.shape[0],), t_cur, device=x.device, dtype=x.dtype)
        v = velocity(x, t, y)
        w_score = -norm * (x + (1 - t_cur) * v)  # w(t) * score, the 1/t cancelled
        dt = t_next - t_cur  # negative: from noise towards data
        x = x + (v - 0.5 * w_score) * dt
        if i < len(steps) - 1:
            # drawn on the CPU generator, so a seed gives the same noise on every device
            x = x + (norm * t_cur * -dt) ** 0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x


def integrate(velocity: VelocityFn, noise: torch.Tensor, y: torch.Tensor, grid: torch.Tensor, cfg: SamplerConfig,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the configured sampler over `grid`."""
    if cfg.method == "euler_maruyama":
        return sample_sde(velocity, noise, y, grid, cfg.sde_norm, generator)
    return sample_ode(velocity, noise, y, grid, cfg.method)
