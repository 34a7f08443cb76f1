"""The one Lightning module of every training stage (stage 1 subclasses it in `rae`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn

from .optim import EMA, OptimConfig, build_optimizer

# the loss, or {"loss": the loss, other names: terms to log}
Objective = Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor | dict[str, torch.Tensor]]
OptimizerFactory = Callable[[OptimConfig, Iterable[nn.Parameter]],
                            tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]]
DIVERGED = 1e4  # a loss this many times the first step's (at least 1) is a divergence, not training


class TrainModule(L.LightningModule):
    """AdamW (or `make_optimizer`'s) + per-step schedule, EMA after every optimizer step, `loss` logged per step. A
    recipe with `train_tables` (DiT-DH's, the decoder's) trains every parameter, the frozen tables too, as the
    reference's `model.requires_grad_(True)` does; otherwise they stay as initialized."""

    def __init__(self, model: nn.Module, optim: OptimConfig, objective: Objective | None,
                 make_optimizer: OptimizerFactory = build_optimizer) -> None:
        super().__init__()
        self.make_optimizer = make_optimizer  # train_dit's recipe may ask for Muon (training.muon)
        if getattr(optim, "train_tables", False):  # only the recipes of models with fixed tables have the key
            model.requires_grad_(True)
        self.model, self.optim, self.objective = model, optim, objective
        self.ema = EMA(model, optim.ema_decay)
        self._first_bad: torch.Tensor | None = None  # on the device: the first diverged step, else -1
        self._first_loss: torch.Tensor | None = None  # |loss| of this process's first step (at least 1)
        self._bad_loss: torch.Tensor | None = None  # the loss of the first diverged step
        self.lr_key = "the stage's lr"  # the params key to lower when it diverges (`fit` names it)

    def compile_model(self) -> None:
        """Train through torch.compile of the model; the EMA, checkpoints and outputs keep the plain module."""
        self.__dict__["_compiled"] = torch.compile(self.model)  # not a registered submodule: no state_dict prefix

    @property
    def net(self) -> nn.Module:
        """The model as training calls it: compiled when asked for."""
        return self.__dict__.get("_compiled", self.model)

    def compute_loss(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """{"loss": the loss to minimize, other names: detached terms for the logs and the loss curve}."""
        out = self.objective(self.net, batch)
        return out if isinstance(out, dict) else {"loss": out}

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self.compute_loss(batch)
        self._watch(out["loss"])
        self.log("loss", out["loss"], prog_bar=True, on_step=True, on_epoch=False)
        terms = {k: v.detach() for k, v in out.items() if k != "loss"}
        self.log_dict(terms, on_step=True, on_epoch=False)
        return {"loss": out["loss"], **terms}

    def configure_optimizers(self):
        opt, sched = self.make_optimizer(self.optim, self.model.parameters())
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _watch(self, loss: torch.Tensor) -> None:
        """Note the first diverged step on the device, without a host sync (checking it every step would stall the
        GPU's queue once per step): a non-finite loss, or one `DIVERGED` times this process's first (a finite
        divergence: lr 1e3 reaches 1e28 and would be written as a result). `_check` reads it at every logging step,
        before each checkpoint and at the end, so no checkpoint or output holds weights trained on it."""
        loss = loss.detach().float()
        if self._first_loss is None:
            self._first_loss = loss.abs().nan_to_num(1.0).clamp_min(1.0)
            self._first_bad, self._bad_loss = torch.full_like(loss, -1, dtype=torch.long), torch.zeros_like(loss)
        bad = ~torch.isfinite(loss) | (loss.abs() > DIVERGED * self._first_loss)
        new = bad & (self._first_bad < 0)
        self._first_bad = torch.where(new, self.global_step, self._first_bad)
        self._bad_loss = torch.where(new, loss, self._bad_loss)

    def _check(self) -> None:
        if self._first_bad is not None and (step := int(self._first_bad)) >= 0:
            loss = float(self._bad_loss)
            what = ("non-finite training loss" if not math.isfinite(loss) else
                    f"training loss {loss:.3g}, over {DIVERGED:.0e} times the first step's,")
            raise FloatingPointError(f"{what} at step {step}: training diverged and stopped (the last checkpoint, if "
                                     f"any, holds the state before it); lower {self.lr_key} (now {self.optim.lr:g}) "
                                     "or check the inputs")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.global_step % self.trainer.log_every_n_steps == 0:  # Lightning syncs to log here anyway
            self._check()

    def on_train_end(self) -> None:
        self._check()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every rank's generator states (CPU, and the GPU's when training on one), gathered here because rank zero
        alone writes the file: label dropout, times and noise continue exactly, each rank its own stream."""
        self._check()
        states = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda"
                                            else [])
        gathered = [self.all_gather(s.to(self.device)).cpu() for s in states]
        checkpoint["rng_states"] = [g.view(self.trainer.world_size, -1) for g in gathered]  # (ranks, state) each

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint["rng_states"]
        if states[0].shape[0] != self.trainer.world_size:
            raise ValueError(f"this resume checkpoint was written by {states[0].shape[0]} ranks, this run has "
                             f"{self.trainer.world_size}: their random streams cannot continue; delete it to train "
                             "from step 0")
        self._resumed_rng = [s[self.trainer.global_rank].clone() for s in states]  # set_state misreads a view

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Restored here, not on load: creating the data iterator draws from the global RNG in between.
        if getattr(self, "_resumed_rng", None) is not None:
            torch.set_rng_state(self._resumed_rng[0])
            if len(self._resumed_rng) > 1:
                torch.cuda.set_rng_state(self._resumed_rng[1], self.device)
            self._resumed_rng = None

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.model)  # once per optimizer step, not per micro-batch
