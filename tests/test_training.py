"""Training: LR schedules, EMA, batch streams and a real (short) Lightning fit that lowers the loss."""

from __future__ import annotations

import logging
import os
from functools import partial

import pytest
import torch
import yaml
from torch import nn

from unirae_pipeline.config.build import build
from unirae_pipeline.diffusion.transport import TransportConfig
from unirae_pipeline.models.dit import DiTConfig, build_dit
from unirae_pipeline.runtime.scratch import RunKey
from unirae_pipeline.training.data import TensorBatches
from unirae_pipeline.training.fit import TrainerConfig, fit
from unirae_pipeline.training.modules import TrainModule
from unirae_pipeline.training.objectives import dit_objective
from unirae_pipeline.training.optim import EMA, OptimConfig, lr_factor

from .conftest import runtime


def optim(**over) -> OptimConfig:
    base = dict(unit="steps", duration=100, batch_size=8, lr=1e-3, final_lr=1e-5, betas=[0.9, 0.95],
                weight_decay=0.0, warmup=10, schedule="cosine", decay_start=None, decay_end=None, ema_decay=0.9,
                grad_clip=1.0, fit_batch=False)
    return build(OptimConfig, {**base, **over}, "train_dit")  # as params.yaml's groups are built


def test_lr_schedules():
    cfg = optim()
    assert lr_factor(cfg, 0) == pytest.approx(0.1) and lr_factor(cfg, 9) == pytest.approx(1.0)
    assert lr_factor(cfg, 100) == pytest.approx(1e-2)  # final_lr / lr
    assert lr_factor(optim(schedule="linear"), 55) == pytest.approx(1 + (1e-2 - 1) * 0.5)
    assert lr_factor(optim(schedule="constant"), 99) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        optim(schedule="step")
    # the reference stage-2 shape: hold to decay_start, linear to final_lr at decay_end, then hold
    ref = optim(schedule="linear", warmup=0, decay_start=40, decay_end=80)
    assert [lr_factor(ref, s) for s in (0, 40)] == [1.0, 1.0]
    assert lr_factor(ref, 60) == pytest.approx(1 + (1e-2 - 1) * 0.5)
    assert lr_factor(ref, 80) == pytest.approx(1e-2) == lr_factor(ref, 99)
    with pytest.raises(ValueError, match="decay_start <= decay_end"):
        optim(decay_start=90, decay_end=80)


def test_recipes_in_epochs_convert_to_steps(params):
    from unirae_pipeline.training.fit import steps_per_epoch

    cfg = optim(unit="epochs", duration=800, warmup=0, schedule="linear", decay_start=40, decay_end=800)
    trainer = build(TrainerConfig, {**params["trainer"], "accumulate_grad_batches": 2}, "trainer")
    spe = steps_per_epoch(1_281_167, 256, trainer)  # ImageNet at batch 256 x 2 micro-batches
    assert spe == 2502
    steps = cfg.in_steps(spe)
    assert (steps.unit, steps.steps, steps.decay_start, steps.decay_end) == ("steps", 800 * spe, 40 * spe, 800 * spe)
    with pytest.raises(ValueError, match="in_steps"):
        _ = cfg.steps


def test_a_small_set_fits_the_batch_and_keeps_the_images_seen(params):
    """fit_batch halves a batch that leaves fewer than MIN_BATCHES_PER_EPOCH per epoch, the LRs by sqrt(2) and the
    step-counted times doubled each time; epochs keep their count; without fit_batch the recipe is unchanged (and the
    batch classes refuse a set smaller than it)."""
    from unirae_pipeline.training.fit import recipe_in_steps
    from unirae_pipeline.training.optim import MIN_BATCHES_PER_EPOCH

    trainer = build(TrainerConfig, params["trainer"], "trainer")
    cfg = optim(batch_size=128, duration=1000, warmup=50, decay_end=800, fit_batch=True)
    assert recipe_in_steps(cfg, 128 * MIN_BATCHES_PER_EPOCH, trainer, "train_dit") == cfg  # already fits
    small = recipe_in_steps(cfg, 100, trainer, "train_dit")  # 100 // 16 = 6 >= 4 > 100 // 32
    assert (small.batch_size, small.steps, small.warmup, small.decay_end) == (16, 8000, 400, 6400)
    assert (small.lr, small.final_lr) == pytest.approx((1e-3 / 8 ** 0.5, 1e-5 / 8 ** 0.5))
    assert small.batch_size * small.steps == cfg.batch_size * cfg.steps
    accumulated = build(TrainerConfig, {**params["trainer"], "accumulate_grad_batches": 2}, "trainer")
    assert recipe_in_steps(cfg, 100, accumulated, "train_dit").batch_size == 8  # the global batch counts
    assert recipe_in_steps(cfg, 3, trainer, "train_dit").batch_size == 1
    epochs = recipe_in_steps(optim(unit="epochs", duration=10, warmup=1, batch_size=64, fit_batch=True), 100,
                             trainer, "train_dit")
    assert (epochs.batch_size, epochs.steps, epochs.warmup) == (16, 10 * 6, 6)
    assert recipe_in_steps(optim(batch_size=128), 100, trainer, "train_dit").batch_size == 128


def test_ema_update_is_a_lerp():
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_tensor_batches_are_seeded_and_cover_each_epoch():
    data = torch.arange(10)
    first = [b[0] for _, b in zip(range(3), TensorBatches((data,), 3, seed=0))]
    again = [b[0] for _, b in zip(range(3), TensorBatches((data,), 3, seed=0))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert len(torch.cat(first).unique()) == 9  # one epoch: 3 full batches, no repeats
    with pytest.raises(ValueError, match="batch size"):
        TensorBatches((data,), 11, seed=0)


def test_short_dit_fit_lowers_the_loss(params, monkeypatch, caplog):
    """... and, logged to a file (no bar), reports its optimizer steps in heartbeat lines."""
    monkeypatch.setenv("UNIRAE_PROGRESS", "0")
    monkeypatch.setenv("UNIRAE_HEARTBEAT_S", "0")
    caplog.set_level(logging.INFO, logger="unirae_pipeline")
    torch.manual_seed(0)
    # Two classes, each a fixed latent: a tiny DiT must learn to move noise towards them.
    x = torch.randn(2, 64, 4, 4).repeat(64, 1, 1, 1)
    y = torch.arange(2).repeat(64)
    model = build_dit(build(DiTConfig, params["dit"], "dit"), (64, 4, 4), 2, seed=0)
    transport = TransportConfig("uniform", 4096, 0.0, 1.0, "mean_var")
    module = TrainModule(model, optim(duration=120, batch_size=32, lr=2e-3, warmup=5),
                         partial(dit_objective, transport=transport, shift=1.0))
    trainer = build(TrainerConfig, params["trainer"], "trainer")
    curve = fit(module, TensorBatches((x, y), 32, seed=0), trainer, runtime(), "test", seed=0)
    assert curve["step"].iloc[0] == 1 and curve["step"].iloc[-1] == 120
    assert curve["loss"].iloc[-1] < 0.5 * curve["loss"].iloc[0]
    assert not torch.equal(module.ema.module.final_layer.linear.weight, model.final_layer.linear.weight)
    beats = [r.getMessage() for r in caplog.records if "/120 step, " in r.getMessage()]
    assert beats[0].startswith("test: 1/120 step, ") and beats[-1].startswith("test: 120/120 step, ")


def test_non_finite_loss_stops_training(params):
    model = nn.Linear(2, 1)
    module = TrainModule(model, optim(duration=5, batch_size=2, warmup=0),
                         lambda m, batch: m(batch[0]).sum() * float("nan"))
    trainer = build(TrainerConfig, params["trainer"], "trainer")
    with pytest.raises(FloatingPointError, match="non-finite training loss at step 0"):
        fit(module, TensorBatches((torch.randn(4, 2),), 2, seed=0), trainer, runtime(), "test", seed=0)


def test_a_finite_divergence_stops_training_naming_the_lr_key(params):
    """A loss that blows up but stays finite (lr 1e3 reached 1e28 and was written as a result) stops the run at the
    step it passed 1e4 times the first step's loss, naming the params key to lower."""
    calls = []

    def objective(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        calls.append(None)
        return ((m(batch[0]) ** 2).mean() + 1) * (1e28 if len(calls) > 3 else 1.0)

    module = TrainModule(nn.Linear(2, 1), optim(duration=20, batch_size=2, warmup=0), objective)
    trainer = build(TrainerConfig, params["trainer"], "trainer")
    with pytest.raises(FloatingPointError, match=r"training loss [0-9.]+e\+28, over 1e\+04 times the first step's, at "
                                                 r"step 3: training diverged .* lower train_dit.lr \(now 0.001\)"):
        fit(module, TensorBatches((torch.randn(8, 2),), 2, seed=0), trainer, runtime(), "train_dit", seed=0)


def test_tensorboard_names_each_run_by_stage_and_run_key_with_its_params(params, tmp_path, monkeypatch):
    """`tensorboard --logdir logs` lists `<stage>/<run key>` (not version_0, version_1, ...), each run's params as
    hparams.yaml; a rerun of the same key (a resume) writes into the same run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    trainer = build(TrainerConfig, params["trainer"], "trainer")
    key = RunKey({"dit": {"depth": 3}, "seed": 0})
    for _ in range(2):
        module = TrainModule(nn.Linear(2, 1), optim(duration=4, batch_size=2, warmup=0),
                             lambda m, batch: (m(batch[0]) ** 2).mean())
        fit(module, TensorBatches((torch.randn(8, 2),), 2, seed=0), trainer, runtime(log_every_n_steps=1), "train_dit",
            seed=0, key=key)
    assert [p.relative_to(tmp_path / "logs").as_posix() for p in (tmp_path / "logs").glob("*/*")] == [
        f"train_dit/{key.key}"]
    run = tmp_path / "logs" / "train_dit" / key.key
    assert yaml.safe_load((run / "hparams.yaml").read_text()) == {"dit.depth": 3, "seed": 0}  # Lightning's record
    assert "loss" in EventAccumulator(str(run)).Reload().Tags()["scalars"]


def test_a_nan_loss_never_reaches_a_checkpoint(params, tmp_path, monkeypatch):
    """The loss turns NaN at step 7, between checkpoints (every 2 steps) and checks at logging steps (every 5): the
    run stops naming step 7 before writing the step-8 checkpoint, so the last one holds the finite step-6 state."""
    monkeypatch.chdir(tmp_path)
    calls = []

    def objective(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        calls.append(None)
        return (m(batch[0]) ** 2).mean() * (float("nan") if len(calls) > 7 else 1.0)

    module = TrainModule(nn.Linear(2, 1), optim(duration=20, batch_size=2, warmup=0), objective)
    trainer = build(TrainerConfig, params["trainer"], "trainer")
    run, key = runtime(checkpoint_every_n_steps=2, log_every_n_steps=5), RunKey({"test": "nan"})
    with pytest.raises(FloatingPointError, match="non-finite training loss at step 7"):
        fit(module, TensorBatches((torch.randn(8, 2),), 2, seed=0), trainer, run, "nan", seed=0, key=key)
    last = torch.load(tmp_path / ".cache" / "ckpts" / f"nan-{key.key}" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6 and len(calls) == 8  # stopped at the first check after the NaN step
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_a_damaged_resume_checkpoint_is_set_aside(params, tmp_path, monkeypatch):
    """A checkpoint truncated by a kill mid-write is not loaded (a traceback from deep inside torch): it is moved
    aside under a name that says so, and the run trains from the start."""
    monkeypatch.chdir(tmp_path)
    trainer = build(TrainerConfig, params["trainer"], "trainer")
    run, key = runtime(checkpoint_every_n_steps=2, log_every_n_steps=1), RunKey({"test": "damaged"})
    folder = key.folder(run.scratch_dir("ckpts"), prefix="damaged-")
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 half of a checkpoint")

    def dies(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise RuntimeError("the run dies at its first step")

    module = TrainModule(nn.Linear(2, 1), optim(duration=4, batch_size=2, warmup=0), dies)
    with pytest.raises(RuntimeError, match="dies"):  # a run that got past the check, then died: the folder stays
        fit(module, TensorBatches((torch.randn(8, 2),), 2, seed=0), trainer, run, "damaged", seed=0, key=key)
    assert not (folder / "last.ckpt").exists() and len(list(folder.glob("last.ckpt.damaged-*"))) == 1
    module = TrainModule(nn.Linear(2, 1), optim(duration=4, batch_size=2, warmup=0),
                         lambda m, batch: (m(batch[0]) ** 2).mean())
    curve = fit(module, TensorBatches((torch.randn(8, 2),), 2, seed=0), trainer, run, "damaged", seed=0, key=key)
    assert curve["step"].tolist() == [1, 2, 3, 4]  # from the start


class Payload:
    """Not a tensor: what a tampered checkpoint would unpickle into arbitrary code."""


def test_a_resume_checkpoint_with_other_objects_is_refused(params, tmp_path, monkeypatch):
    """Resume checkpoints are unpickled weights-only before Lightning sees them, on every supported torch."""
    monkeypatch.chdir(tmp_path)
    trainer = build(TrainerConfig, params["trainer"], "trainer")
    run, key = runtime(checkpoint_every_n_steps=2, log_every_n_steps=1), RunKey({"test": "payload"})
    folder = key.folder(run.scratch_dir("ckpts"), prefix="payload-")
    torch.save({"state_dict": {}, "payload": Payload()}, folder / "last.ckpt")
    module = TrainModule(nn.Linear(2, 1), optim(duration=4, batch_size=2, warmup=0),
                         lambda m, batch: (m(batch[0]) ** 2).mean())
    with pytest.raises(ValueError, match=r"last.ckpt: this resume checkpoint holds objects other than tensors"):
        fit(module, TensorBatches((torch.randn(8, 2),), 2, seed=0), trainer, run, "payload", seed=0, key=key)


def test_gradient_accumulation_steps_once_per_global_batch(params):
    """The official repo's bug, not ours: with accumulation k, optimizer, LR schedule and EMA step once per k."""
    calls = {"objective": 0, "ema": 0}
    model = nn.Linear(2, 1)

    def objective(m, batch):
        calls["objective"] += 1
        return m(batch[0]).pow(2).mean()

    cfg = optim(duration=4, batch_size=2, warmup=4, schedule="constant")
    module = TrainModule(model, cfg, objective)
    update = module.ema.update
    module.ema.update = lambda m: (calls.__setitem__("ema", calls["ema"] + 1), update(m))
    trainer = build(TrainerConfig, {**params["trainer"], "accumulate_grad_batches": 3}, "trainer")
    curve = fit(module, TensorBatches((torch.randn(64, 2),), 2, seed=0), trainer, runtime(), "test", seed=0)
    assert calls == {"objective": 12, "ema": 4}
    assert curve["step"].iloc[-1] == 4
    assert curve["step"].tolist() == [1, 4]  # one row per optimizer step, not per micro-batch
    assert curve["lr"].iloc[0] == pytest.approx(cfg.lr * lr_factor(cfg, 1))  # one schedule step per 3 micro-batches


def test_compiled_training_keeps_plain_weights(params):
    """`runtime.compile`: the steps run through torch.compile (inductor, here on the CPU), while the EMA, the state
    dict and therefore checkpoints and outputs hold the plain module's names."""
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 1))
    calls = []
    module = TrainModule(model, optim(duration=3, batch_size=8, warmup=0),
                         lambda m, batch: calls.append(type(m).__name__) or m(batch[0]).pow(2).mean())
    trainer = build(TrainerConfig, params["trainer"], "trainer")
    curve = fit(module, TensorBatches((torch.randn(32, 4),), 8, seed=0), trainer, runtime(compile=True), "test", seed=0)
    assert set(calls) == {"OptimizedModule"} and len(curve) >= 1 and curve["loss"].notna().all()
    assert sorted(module.state_dict()) == sorted(["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias",
                                                  *(f"ema.module.{k}" for k in model.state_dict())])
    assert not torch.equal(module.ema.module[0].weight, model[0].weight)


def test_bf16_mixed_training_tracks_fp32(params):
    """The GPU presets' `trainer.precision: bf16-mixed` (autocast, fp32 master weights, fp32 RMSNorm), run here on the
    CPU: the same short DiT fit as in fp32 lands on nearly the same loss curve, and weights and EMA stay fp32."""
    x = torch.randn(2, 64, 4, 4, generator=torch.Generator().manual_seed(0)).repeat(32, 1, 1, 1)
    y = torch.arange(2).repeat(32)
    transport = TransportConfig("uniform", 4096, 0.0, 1.0, "mean_var")
    curves, modules = {}, {}
    for precision in ("32-true", "bf16-mixed"):
        model = build_dit(build(DiTConfig, params["dit"], "dit"), (64, 4, 4), 2, seed=0)
        modules[precision] = TrainModule(model, optim(duration=30, batch_size=16, lr=2e-3, warmup=5),
                                         partial(dit_objective, transport=transport, shift=1.0))
        trainer = build(TrainerConfig, {**params["trainer"], "precision": precision}, "trainer")
        curves[precision] = fit(modules[precision], TensorBatches((x, y), 16, seed=0), trainer,
                                runtime(log_every_n_steps=5), "test", seed=0)
    fp32, bf16 = curves["32-true"]["loss"].to_numpy(), curves["bf16-mixed"]["loss"].to_numpy()
    assert len(fp32) == len(bf16) and bf16[-1] < 0.8 * bf16[0]
    assert abs(bf16 - fp32).max() < 0.01 * fp32.max()  # same data, noise and times: only rounding differs (~0.1 %)
    module = modules["bf16-mixed"]
    assert all(p.dtype == torch.float32 for p in [*module.model.parameters(), *module.ema.module.parameters()])


RANKS_SCRIPT = '''
import os, sys
import lightning as L
import torch
import yaml
from torch import nn
from unirae_pipeline.runtime import RuntimeConfig
from unirae_pipeline.runtime.scratch import RunKey
from unirae_pipeline.training.data import TensorBatches
from unirae_pipeline.training.fit import TrainerConfig, fit
from unirae_pipeline.training.modules import TrainModule
from unirae_pipeline.training.optim import OptimConfig

draws = []


def objective(model, batch):
    (x,) = batch
    t = torch.rand(len(x))  # as the DiT's training times: from the global generator
    draws.append(t)
    return (model(x).squeeze(-1) * t).pow(2).mean()


class Stop(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(os.environ.get("STOP_AT", "0")):
            os._exit(0)  # every rank at once, after the checkpoint of step 2: as a kill


torch.manual_seed(0)
module = TrainModule(nn.Linear(2, 1), OptimConfig("steps", 4, 4, 1e-2, 1e-3, (0.9, 0.95), 0.0, 0, "constant", None,
                                                  None, 0.9, 0.0, False), objective)
start = module.global_step
fit(module, TensorBatches((torch.randn(64, 2),), 4, seed=0), TrainerConfig("cpu", 2, 1, "ddp", "32-true", 1),
    RuntimeConfig(0, 1, 2, False, "cpu", ".cache", "logs"), "ranks", seed=3, callbacks=(Stop(),),
    key=RunKey({"run": 1}))
torch.save(torch.stack(draws), sys.argv[1] + os.environ["RANK"] + ".pt")
'''


@pytest.mark.slow
def test_each_rank_draws_its_own_numbers_and_resumes_them(tmp_path):
    """Two CPU ranks (torchrun, gloo) draw different training times, seeded as the reference seeds its ranks; the
    same run twice draws the same; a run killed after its step-2 checkpoint resumes each rank's own stream."""
    import subprocess
    import sys

    (tmp_path / "ranks.py").write_text(RANKS_SCRIPT, encoding="utf-8")

    def run(out: str, folder: str, **env: str) -> list[torch.Tensor] | None:
        (tmp_path / folder).mkdir(exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(tmp_path / "ranks.py"), out], cwd=tmp_path / folder, capture_output=True,
                              text=True, env={**os.environ, **env})
        assert done.returncode == 0, done.stderr[-3000:]
        files = [tmp_path / folder / f"{out}{r}.pt" for r in (0, 1)]
        return [torch.load(f, weights_only=True) for f in files] if all(f.is_file() for f in files) else None

    first, again = run("a", "one"), run("a", "two")
    assert len(first[0]) == 4 and not torch.equal(first[0], first[1])  # the ranks' own streams
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # reproducible for a world size
    assert run("b", "three", STOP_AT="3") is None  # stopped after step 3, its checkpoint at step 2 kept
    resumed = run("c", "three")
    for rank in (0, 1):
        assert torch.equal(resumed[rank], first[rank][2:])  # steps 3 and 4, each rank's own numbers
