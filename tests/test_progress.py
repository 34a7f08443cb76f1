"""Progress off a terminal: heartbeat lines instead of bars, counted in the units of the work (optimizer steps,
network evaluations of the sampler)."""

from __future__ import annotations

import logging

import pytest
import torch

from unirae_pipeline.diffusion.sampler_config import SamplerConfig
from unirae_pipeline.diffusion.sampling import integrate
from unirae_pipeline.runtime.progress import Progress, heartbeat_s, progress


def test_without_bars_a_heartbeat_logs_done_rate_and_time_left(monkeypatch, caplog):
    monkeypatch.setenv("UNIRAE_PROGRESS", "0")
    monkeypatch.setenv("UNIRAE_HEARTBEAT_S", "0")  # every update (60 s by default)
    with caplog.at_level(logging.INFO, logger="unirae_pipeline"):
        assert list(progress(range(3), "scoring", total=3, unit="block")) == [0, 1, 2]
        counter = Progress(10, "train_dit", unit="step", initial=4)  # a run resumed at step 4
        counter.update(2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all(line.startswith("scoring: ") for line in lines[:3])
    assert lines[2].startswith("scoring: 3/3 block, ") and "block/s" in lines[2]
    assert lines[3].startswith("train_dit: 6/10 step, ") and "s left" in lines[3]
    monkeypatch.setenv("UNIRAE_HEARTBEAT_S", "60")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unirae_pipeline"):
        list(progress(range(100), "quick", total=100))  # well inside a period: nothing
    assert caplog.records == []
    monkeypatch.setenv("UNIRAE_HEARTBEAT_S", "soon")
    with pytest.raises(ValueError, match="UNIRAE_HEARTBEAT_S"):
        heartbeat_s()


def test_the_time_left_follows_the_rate_of_the_last_period(monkeypatch, caplog):
    """100 steps in the first minute, then 1 per minute (the machine got busy): the estimate says 898 minutes left at
    the new rate, not the 9 that the rate since the start would still claim."""
    monkeypatch.setenv("UNIRAE_PROGRESS", "0")
    monkeypatch.setenv("UNIRAE_HEARTBEAT_S", "60")
    clock = iter([0.0, 60.0, 120.0])
    monkeypatch.setattr("unirae_pipeline.runtime.progress.time.perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="unirae_pipeline"):
        counter = Progress(1000, "train_dit", unit="step")
        counter.update(100)
        counter.update(1)
    first, second = (r.getMessage() for r in caplog.records)
    assert first.endswith("100/1000 step, 1.67 step/s, about 540 s left")
    assert second.endswith("101/1000 step, 0.02 step/s, about 53940 s left")


@pytest.mark.parametrize("method,steps", [("euler", 5), ("heun", 5), ("euler_maruyama", 4)])
def test_the_sampling_progress_counts_every_network_evaluation(method, steps):
    """`SamplerConfig.evaluations` (the sampling bar's total) is the number of velocity calls a batch makes."""
    cfg = SamplerConfig(method, steps, "cfg", 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0)
    calls = []

    def velocity(x, t, y):
        calls.append(t)
        return torch.zeros_like(x)

    integrate(velocity, torch.randn(2, 4), torch.zeros(2, dtype=torch.long), torch.linspace(1, 0, steps), cfg)
    assert len(calls) == cfg.evaluations
