"""Transport and samplers: shift, time distributions, loss target, Euler/Heun accuracy, CFG and its interval."""

from __future__ import annotations

import math

import pytest
import torch

from unirae_pipeline.diffusion.sampler_config import SamplerConfig
from unirae_pipeline.diffusion.sampling import guided_velocity, integrate, sample_ode, time_grid
from unirae_pipeline.diffusion.transport import (
    T_MAX,
    TransportConfig,
    flow_matching_loss,
    sample_time,
    shift_factor,
    shift_time,
)


def test_shift_factor_and_map():
    assert shift_factor((768, 16, 16), 4096) == pytest.approx(math.sqrt(48))
    s = math.sqrt(48)
    t = shift_time(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), s)
    assert torch.allclose(t, torch.tensor([0.0, 0.698, 0.874, 0.954, 1.0]), atol=1e-3)  # noise-ward at 256 px


@pytest.mark.parametrize("dist", ["uniform", "logit_normal"])
def test_time_distributions_stay_in_range(dist):
    cfg = TransportConfig(dist, 4096, 0.0, 1.0, "mean_var")
    t = sample_time(cfg, 20000, 1.0, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= T_MAX
    if dist == "uniform":
        assert abs(t.mean() - T_MAX / 2) < 0.01
    else:
        assert abs(t.median() - 0.5) < 0.02  # sigmoid(N(0,1)) is symmetric around 1/2


def test_loss_is_zero_for_the_true_velocity():
    x, noise = torch.randn(8, 4, 2, 2), torch.randn(8, 4, 2, 2)
    t = torch.rand(8)
    # x_t = (1-t) x + t eps; the velocity eps - x can be recovered exactly when the model knows x and eps.
    oracle = lambda x_t, t_, y: noise - x  # noqa: E731
    assert flow_matching_loss(oracle, x, torch.zeros(8, dtype=torch.long), t, noise) == 0
    zero = lambda x_t, t_, y: torch.zeros_like(x_t)  # noqa: E731
    assert flow_matching_loss(zero, x, None, t, noise) == pytest.approx(float((noise - x).pow(2).mean()))


def test_time_grid_matches_the_reference_grid():
    grid = time_grid(50, 1.0)
    assert len(grid) == 50 and grid[0] == 1.0 and grid[-1] == pytest.approx(1 - T_MAX)
    shifted = time_grid(50, math.sqrt(48))
    assert shifted[-1] == pytest.approx(shift_time(torch.tensor(1 - T_MAX, dtype=torch.float64), math.sqrt(48)))


@pytest.mark.parametrize("method,tol", [("euler", 1e-6), ("heun", 1e-6)])
def test_samplers_transport_noise_to_data_on_a_straight_path(method, tol):
    # For a single data point x0 the exact velocity field is (x_t - x0) / t: straight lines to x0.
    x0 = torch.tensor([[1.5, -2.0]])
    velocity = lambda x, t, y: (x - x0) / t[:, None]  # noqa: E731
    noise = torch.tensor([[0.3, 0.7]])
    grid = torch.cat([torch.linspace(1, 0.01, 20, dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)])
    out = sample_ode(velocity, noise, None, grid[:-1], method)
    expected = x0 + (noise - x0) * 0.01  # still at t = 0.01 on the line
    assert torch.allclose(out, expected, atol=tol)


def test_euler_is_first_and_heun_second_order():
    velocity = lambda x, t, y: -x * t[:, None] * 4  # noqa: E731  dx/dt = -4 t x  ->  x(0) = x(1) e^2
    x1 = torch.tensor([[1.0]], dtype=torch.float64)

    def error(method: str, points: int) -> float:
        grid = torch.linspace(1, 0, points, dtype=torch.float64)
        return (sample_ode(velocity, x1, None, grid, method) - math.exp(2.0)).abs().item()

    euler = error("euler", 41) / error("euler", 81)
    heun = error("heun", 41) / error("heun", 81)
    assert 1.7 < euler < 2.3 and 3.5 < heun < 4.5  # halving the step: error /2 and /4


def test_cfg_combines_on_the_interval_only():
    calls = []

    def model(x, t, y):
        calls.append(len(y))
        return torch.where(y[:, None] == 10, torch.zeros_like(x), torch.ones_like(x))  # null -> 0, cond -> 1

    v = guided_velocity(model, null_label=10, scale=3.0, t_min=0.2, t_max=0.6)
    x, y = torch.zeros(4, 2), torch.tensor([0, 1, 2, 3])
    assert torch.allclose(v(x, torch.full((4,), 0.5), y), torch.full((4, 2), 3.0))  # 0 + 3 (1 - 0)
    assert calls[-1] == 8  # conditional and null halves in one batch
    assert torch.allclose(v(x, torch.full((4,), 0.9), y), torch.ones(4, 2))  # outside: conditional only
    assert calls[-1] == 4
    assert guided_velocity(model, 10, 1.0, 0, 1) is model  # scale 1 costs no extra forward


def test_sampler_config_errors_name_the_key():
    from unirae_pipeline.config.build import build

    fields = ("method", "num_steps", "guidance", "guidance_scale", "guidance_t_min", "guidance_t_max", "sde_norm",
              "ig_scale", "ig_t_min", "ig_t_max")

    def sampler(*values):
        return build(SamplerConfig, dict(zip(fields, values)), "sample.sampler")

    with pytest.raises(ValueError, match="'sample.sampler.method' must be one of 'euler', 'heun', 'euler_maruyama'"):
        sampler("rk4", 50, "cfg", 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="guidance_t_min"):
        sampler("euler", 50, "cfg", 1.0, 0.8, 0.2, 1.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="ig_t_min/ig_t_max must satisfy"):
        sampler("euler", 50, "cfg", 1.0, 0.0, 1.0, 1.0, 1.78, 0.5, 0.1)
    with pytest.raises(ValueError, match="ig_scale must be >= 1"):
        sampler("euler", 50, "cfg", 1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="'sample.sampler.guidance' must be 'cfg' or 'autoguidance'"):
        sampler("euler", 50, "pag", 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0)


def gaussian_velocity(mu: float, s: float):
    """Exact flow-matching velocity for 1-D data N(mu, s^2) on x_t = (1 - t) x0 + t eps."""

    def velocity(x, t, y):
        t = t[:, None]
        var = (1 - t) ** 2 * s ** 2 + t ** 2
        centred = x - (1 - t) * mu
        x0 = mu + (1 - t) * s ** 2 / var * centred
        eps = t / var * centred
        return eps - x0

    return velocity


@pytest.mark.parametrize("method", ["euler", "heun", "euler_maruyama"])
def test_samplers_reach_the_data_distribution(method):
    mu, s = 2.0, 0.5
    cfg = SamplerConfig(method, 101, "cfg", 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(20000, 1, generator=generator, dtype=torch.float64)
    grid = time_grid(cfg.num_steps, 1.0)
    out = integrate(gaussian_velocity(mu, s), noise, None, grid, cfg, generator)
    assert abs(out.mean() - mu) < 0.02 and abs(out.std() - s) < 0.02


def test_sde_differs_from_ode_only_by_noise():
    cfg = SamplerConfig("euler_maruyama", 21, "cfg", 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0)  # zero diffusion: the Euler ODE
    noise, grid, v = torch.randn(5, 1), time_grid(21, 1.0).float(), gaussian_velocity(0.0, 1.0)
    assert torch.allclose(integrate(v, noise, None, grid, cfg), sample_ode(v, noise, None, grid, "euler"))


def test_autoguidance_extrapolates_from_the_guide():
    from unirae_pipeline.diffusion.sampling import autoguided_velocity

    main = lambda x, t, y: torch.ones_like(x)  # noqa: E731
    guide = lambda x, t, y: torch.zeros_like(x)  # noqa: E731
    v = autoguided_velocity(main, guide, scale=1.42, t_min=0.0, t_max=0.5)
    x = torch.zeros(2, 3)
    assert torch.allclose(v(x, torch.full((2,), 0.3), None), torch.full((2, 3), 1.42))
    assert torch.allclose(v(x, torch.full((2,), 0.8), None), torch.ones(2, 3))  # outside the interval: main only
    assert autoguided_velocity(main, guide, 1.0, 0.0, 1.0) is main


def test_bf16_autocast_sampling_matches_fp32(params):
    from unirae_pipeline.config.build import build
    from unirae_pipeline.models.dit import DiTConfig, build_dit

    model = build_dit(build(DiTConfig, params["dit"], "dit"), (64, 4, 4), 10, seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)  # leave the zero init, so the velocity is not trivially 0
    v = guided_velocity(lambda x, t, y: model(x, t, y).float(), 10, 2.0, 0.0, 1.0)
    noise, y, grid = torch.randn(4, 64, 4, 4), torch.arange(4), time_grid(6, 0.5).float()
    fp32 = sample_ode(v, noise, y, grid, "euler")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = sample_ode(v, noise, y, grid, "euler")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert (bf16 - fp32).abs().max() / fp32.abs().max() < 0.05
    assert not torch.equal(bf16, fp32)  # autocast really ran in bf16
