"""Run a `TrainModule` with Lightning as configured by the `trainer` params group; return the loss curve."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass

import lightning as L
import pandas as pd
from lightning.pytorch.loggers import TensorBoardLogger

from .data import TensorBatches, loader
from .modules import TrainModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    accelerator: str
    devices: int | str
    num_nodes: int
    strategy: str
    precision: str
    accumulate_grad_batches: int  # global batch = batch_size x accumulate_grad_batches x devices x num_nodes
    log_every_n_steps: int
    progress_bar: bool

    def __post_init__(self) -> None:
        if str(self.precision) not in ("32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"):
            raise ValueError(f"trainer.precision {self.precision!r} is not one of 32, bf16-mixed, 16-mixed")
        if self.num_nodes < 1 or self.log_every_n_steps < 1 or self.accumulate_grad_batches < 1:
            raise ValueError("trainer.num_nodes, trainer.accumulate_grad_batches and trainer.log_every_n_steps must "
                             f"be >= 1: {asdict(self)}")


class LossHistory(L.Callback):
    """Collects (step, loss, lr) every `every` optimizer steps for the stage's DVC plot."""

    def __init__(self, every: int) -> None:
        self.every, self.rows = every, []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 1 or step % self.every == 0 or step == trainer.max_steps:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.rows.append({"step": step, "loss": float(outputs["loss"]), "lr": lr})


class EMASnapshot(L.Callback):
    """A copy of the EMA weights right after optimizer step `step` (an under-trained guide for AutoGuidance)."""

    def __init__(self, step: int) -> None:
        self.step, self.state = step, None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.state is None:
            self.state = {k: v.detach().cpu().clone() for k, v in module.ema.module.state_dict().items()}


def fit(module: TrainModule, batches: TensorBatches, cfg: TrainerConfig, name: str, seed: int,
        callbacks: tuple[L.Callback, ...] = ()) -> pd.DataFrame:
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # Lightning resets it to INFO on import
    L.seed_everything(seed, workers=True, verbose=False)
    history = LossHistory(cfg.log_every_n_steps)
    trainer = L.Trainer(
        max_steps=module.optim.steps, max_epochs=-1, accelerator=cfg.accelerator, devices=cfg.devices,
        num_nodes=cfg.num_nodes, strategy=cfg.strategy, precision=cfg.precision,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=module.optim.grad_clip or None, callbacks=[history, *callbacks],
        logger=TensorBoardLogger("logs", name=name), log_every_n_steps=cfg.log_every_n_steps,
        enable_checkpointing=False, enable_progress_bar=cfg.progress_bar, enable_model_summary=False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The EMA copy is in eval mode on purpose; Lightning warns about any such submodule.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 on torch >= 2.10
        trainer.fit(module, loader(batches))
    seconds = time.perf_counter() - start
    log.info("%s: %d steps of batch %d in %.1f s (%.0f samples/s), final loss %.4f", name, module.optim.steps,
             batches.batch_size, seconds, module.optim.steps * batches.batch_size / seconds, history.rows[-1]["loss"])
    return pd.DataFrame(history.rows)
