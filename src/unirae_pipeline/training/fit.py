"""Run a `TrainModule` with Lightning as configured by the `trainer` params group; return the loss curve."""

from __future__ import annotations

import logging
import re
import shutil
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Literal

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from ..runtime import RuntimeConfig
from ..runtime.checkpoints import intact
from ..runtime.progress import Progress, show_progress
from ..runtime.ranks import claimed
from ..runtime.scratch import RunKey, flatten
from .data import KeyedBatches, TensorBatches
from .modules import TrainModule
from .optim import MIN_BATCHES_PER_EPOCH, OptimConfig

log = logging.getLogger(__name__)
# each training run's name (`fit`'s `name`) -> the learning rate to lower when it diverges (the guide trains by
# train_dit's recipe)
LR_KEYS = {"train_rae": "train_rae.lr", "train_dit": "train_dit.lr", "train_guide": "train_dit.lr",
           "classifier": "fid.train.lr"}


@dataclass(frozen=True)
class TrainerConfig:
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"]
    devices: int | str  # a count (-1: all), "auto", or the device ids as "0,1"
    num_nodes: int
    strategy: str
    precision: str
    accumulate_grad_batches: int  # global batch = batch_size x accumulate_grad_batches x devices x num_nodes

    def __post_init__(self) -> None:
        if str(self.precision) not in ("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"):
            raise ValueError(f"trainer.precision {self.precision!r} is not one of 32, bf16-mixed, 16-mixed")
        if isinstance(self.devices, int) and not (self.devices >= 1 or self.devices == -1) or \
                isinstance(self.devices, str) and not re.fullmatch(r"auto|-1|\d+(,\s*\d+)*,?", self.devices):
            raise ValueError(f"trainer.devices must be a count >= 1 (-1: all), 'auto' or ids like '0,1', got "
                             f"{self.devices!r}")
        if self.num_nodes < 1 or self.accumulate_grad_batches < 1:
            raise ValueError(f"trainer.num_nodes and trainer.accumulate_grad_batches must be >= 1: {asdict(self)}")


class LossHistory(L.Callback):
    """Collects (step, loss, lr) every `every` optimizer steps for the stage's DVC plot, and when each was logged
    (in this process: not part of the checkpointed state) for the throughput after warm-up."""

    def __init__(self, every: int) -> None:
        self.every, self.rows, self.clock = every, [], []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 0 or not outputs or (self.rows and self.rows[-1]["step"] == step):
            return  # before the first optimizer step, or a micro-batch of an accumulated one
        if step == 1 or step % self.every == 0 or step == trainer.max_steps:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.rows.append({"step": step, "loss": float(outputs["loss"]), "lr": lr,
                              **{k: float(v) for k, v in outputs.items() if k != "loss"}})
            self.clock.append((step, time.perf_counter()))  # after float(): the step has finished on the device

    def steady_rate(self, samples_per_step: int) -> float | None:
        """Samples/s between the first logged step after step 1 (compilation, warm-up) and the last one."""
        timed = [(s, t) for s, t in self.clock if s > 1]
        if len(timed) < 2:
            return None
        (s0, t0), (s1, t1) = timed[0], timed[-1]
        return (s1 - s0) * samples_per_step / (t1 - t0)

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])


class EMASnapshot(L.Callback):
    """A copy of the EMA weights right after optimizer step `step` (an under-trained guide for AutoGuidance)."""

    def __init__(self, step: int) -> None:
        self.step, self.state = step, None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.state is None:
            self.state = {k: v.detach().cpu().clone() for k, v in module.ema.module.state_dict().items()}

    def state_dict(self) -> dict:
        return {"state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.state = state["state"]


class ResumeData(L.Callback):
    """Resumed runs continue the batch stream where the checkpoint left it, so that they equal an unbroken run."""

    def __init__(self, batches: TensorBatches | KeyedBatches, micro_batches: int) -> None:
        self.batches, self.micro_batches = batches, micro_batches

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        # Runs during the restore, before the data iterator exists.
        self.batches.start = checkpoint["global_step"] * self.micro_batches


@contextmanager
def tf32(enabled: bool):
    """fp32 matmuls and convolutions on TF32 tensor cores (on) or in full fp32 (off) inside the block, as a stage's
    recipe says: the reference turns TF32 on in its stage-2 trainer, samplers and statistics script, not in stage 1.
    bf16 autocast is unaffected; CPUs ignore it."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def replicas(cfg: TrainerConfig) -> int:
    """Batches in one optimizer step: accumulation x devices x nodes (the global batch over the per-device one)."""
    devices = cfg.devices if isinstance(cfg.devices, int) else 1 if cfg.accelerator == "cpu" else None
    if devices is None:
        raise ValueError("trainer.devices must be a number when a recipe counts epochs or fits its batch")
    return cfg.accumulate_grad_batches * devices * cfg.num_nodes


def steps_per_epoch(num_samples: int, batch_size: int, cfg: TrainerConfig) -> int:
    """Optimizer steps in one pass over the data: the global batch is batch x accumulation x devices x nodes."""
    return num_samples // (batch_size * replicas(cfg))


def recipe_in_steps(recipe: OptimConfig, num_samples: int, cfg: TrainerConfig, key: str) -> OptimConfig:
    """A stage's recipe for its `num_samples` training items, counted in optimizer steps: its batch fitted to the
    set (`OptimConfig.fitted`, logged when it changes) and its epochs converted. `key`: the recipe's params group."""
    if recipe.unit == "steps" and not recipe.fit_batch:
        return recipe  # nothing to convert: a multi-device run with devices "auto" needs no count
    fitted = recipe.fitted(num_samples, replicas(cfg))
    if fitted.batch_size != recipe.batch_size:
        log.info("%s: %d training items hold fewer than %d batches of %d (%s.fit_batch): batch %d, lr %.3g, "
                 "duration %g %s", key, num_samples, MIN_BATCHES_PER_EPOCH, recipe.batch_size, key,
                 fitted.batch_size, fitted.lr, fitted.duration, fitted.unit)
    return fitted.in_steps(steps_per_epoch(num_samples, fitted.batch_size, cfg))


class RankSeed(L.Callback):
    """Each rank draws its own random numbers (noise, times, label dropout, latent noise, augmentations), seeded as
    the reference seeds its ranks: `seed * world + rank`. Set once the ranks exist, before the first batch; the
    model was built before, from `seed` alone, so every rank starts from the same weights. One process: `seed`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        L.seed_everything(self.seed * trainer.world_size + trainer.global_rank, workers=True, verbose=False)


class Heartbeat(L.Callback):
    """Optimizer steps done, their rate and the time left, in the log at most every heartbeat period
    (`progress.Progress`), when no progress bar is drawn: a training logged to a file is never silent."""

    def __init__(self, name: str, steps: int) -> None:
        self.name, self.steps, self.counter, self.seen = name, steps, None, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen = trainer.global_step  # a resumed run counts from where it resumed
        self.counter = Progress(self.steps, self.name, unit="step", initial=self.seen)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step > self.seen and trainer.is_global_zero:
            self.counter.update(trainer.global_step - self.seen)
        self.seen = trainer.global_step


def fit(module: TrainModule, batches: TensorBatches | KeyedBatches, cfg: TrainerConfig, runtime: RuntimeConfig,
        name: str, seed: int, callbacks: tuple[L.Callback, ...] = (), key: RunKey | None = None) -> pd.DataFrame:
    """Train to `module.optim.steps` optimizer steps. With `runtime.checkpoint_every_n_steps` and a `key` (everything
    the run's result depends on), checkpoints go to <runtime.scratch>/ckpts/<name>-<its key>/ and a rerun with the
    same key resumes from the last one (model, EMA, optimizer, schedule, RNG, data position); another key never
    does."""
    if not log.isEnabledFor(logging.DEBUG):  # UNIRAE_LOG_LEVEL=DEBUG keeps Lightning's messages
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # Lightning resets it to INFO on import
    L.seed_everything(seed, workers=True, verbose=False)
    module.lr_key = LR_KEYS.get(name, module.lr_key)
    if runtime.compile:
        module.compile_model()
    history = LossHistory(runtime.log_every_n_steps)
    every = runtime.checkpoint_every_n_steps
    ckpt_dir = key.folder(runtime.scratch_dir("ckpts"), prefix=f"{name}-") if key and every else None
    extra: list[L.Callback] = [RankSeed(seed), ResumeData(batches, cfg.accumulate_grad_batches)]
    if not show_progress():  # no bar: a log line every heartbeat period instead
        extra.append(Heartbeat(name, module.optim.steps))
    if ckpt_dir is not None:
        extra.append(ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=every,
                                     save_last=True, save_top_k=0))
    resume = ckpt_dir is not None and (ckpt_dir / "last.ckpt").is_file() and intact(ckpt_dir / "last.ckpt", name)
    if resume:
        log.info("%s: resuming from %s", name, ckpt_dir / "last.ckpt")
    manual = not module.automatic_optimization  # steps, accumulates and clips itself (stage 1's two steps)
    if manual:
        module.accumulate = cfg.accumulate_grad_batches
    # one TensorBoard run per stage and run key (a resumed run continues its own), its params as hparams
    logger = TensorBoardLogger(runtime.logs_dir, name=name, version=key.key if key else None, default_hp_metric=False)
    if key is not None:
        logger.log_hyperparams(flatten(key.params))
    strategy = cfg.strategy
    if strategy == "ddp" and getattr(module, "partly_unused", False):
        strategy = "ddp_find_unused_parameters_true"  # e.g. the discriminator heads before they start training
    trainer = L.Trainer(
        max_steps=module.optim.steps, max_epochs=-1, accelerator=cfg.accelerator, devices=cfg.devices,
        num_nodes=cfg.num_nodes, strategy=strategy, precision=cfg.precision,
        accumulate_grad_batches=1 if manual else cfg.accumulate_grad_batches,
        gradient_clip_val=None if manual else module.optim.grad_clip or None, callbacks=[history, *callbacks, *extra],
        logger=logger, log_every_n_steps=runtime.log_every_n_steps,
        enable_checkpointing=ckpt_dir is not None, enable_progress_bar=show_progress(), enable_model_summary=False,
        use_distributed_sampler=False)  # our batch streams take each rank's slice of every global batch themselves
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The EMA copy is in eval mode on purpose; Lightning warns about any such submodule.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 on torch >= 2.10
        # Stage 1 steps itself: its checkpoints hold the state after step `global_step`, what a resume continues from
        warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")
        with claimed(ckpt_dir) if ckpt_dir is not None else nullcontext():  # the same run twice is refused
            trainer.fit(module, batches.loader(), ckpt_path=str(ckpt_dir / "last.ckpt") if resume else None)
    resumed_at = batches.start // cfg.accumulate_grad_batches  # set by ResumeData when a checkpoint was restored
    seconds, steps = time.perf_counter() - start, trainer.global_step - resumed_at
    per_step = batches.batch_size * cfg.accumulate_grad_batches * trainer.world_size  # the global batch
    steady = history.steady_rate(per_step)
    log.info("%s: %d steps of global batch %d in %.1f s (%.0f samples/s; %s after warm-up), final loss %.4f", name,
             steps, per_step, seconds, steps * per_step / seconds, f"{steady:.0f}" if steady else "n/a",
             history.rows[-1]["loss"])
    if ckpt_dir is not None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: the stage's outputs now hold the result
    return pd.DataFrame(history.rows)
