"""Muon for matrices and AdamW for the rest, as RAEv2 trains its DiT (`gmuon`: Dao-AILab's gram-newton-schulz Muon).

Muon replaces a matrix's momentum by the nearest semi-orthogonal matrix, approximated by a few Newton-Schulz steps
X <- a X + (b A + c A^2) X with A = X X^T. Polar Express (Amsel et al. 2025, arXiv 2505.16932) picks a different
(a, b, c) for each of the five steps; torch.optim.Muon holds one triple for every step, so it cannot run them. The
precisions are RAEv2's: momentum in the parameter's dtype, the update in bf16, the iteration in fp16 after a
Frobenius normalization in fp32 (`precision: fp32` iterates in fp32 instead: a CPU runs fp16 matrix products many
times slower than fp32 ones). Non-square matrices iterate on their Gram matrix (the same polynomial, computed on
the small side, restarted once), square ones on X itself.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import nn

from .optim import OptimConfig, lr_factor

# Polar Express's per-step coefficients for five steps, divided by (1.05, 1.05^3, 1.05^5) for safety: the preset
# RAEv2 trains with ("POLAR_EXPRESS_COEFFICIENTS").
_POLAR_EXPRESS = ((8.28721201814563, -23.595886519098837, 17.300387312530933),
                  (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
                  (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
                  (3.3184196573706015, -2.488488024314874, 0.51004894012372),
                  (2.300652019954817, -1.6689039845747493, 0.4188073119525673))
POLAR_EXPRESS = tuple((a / 1.05, b / 1.05**3, c / 1.05**5) for a, b, c in _POLAR_EXPRESS)
# Where the Gram iteration recomputes X and its Gram matrix: the position gram-newton-schulz's tuner picks for these
# coefficients (the condition of the accumulated polynomial under a perturbed smallest eigenvalue).
GRAM_RESTARTS = (2,)
NS_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def newton_schulz(x: torch.Tensor, coefficients: Sequence[tuple[float, float, float]] = POLAR_EXPRESS,
                  restarts: Sequence[int] = GRAM_RESTARTS, eps: float = 1e-7,
                  dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Semi-orthogonalize each matrix of a batch (B, m, n); iterated and returned in `dtype`."""
    tall = x.shape[-2] > x.shape[-1]
    x = x.float()
    x = (x / (x.norm(dim=(-2, -1), keepdim=True) + eps)).to(dtype)
    gram = (lambda m: m.mT @ m) if tall else (lambda m: m @ m.mT)
    apply = (lambda m, q: m @ q) if tall else (lambda m, q: q @ m)  # X <- X Q (tall) or Q X (wide, square)
    if x.shape[-2] == x.shape[-1]:
        for a, b, c in coefficients:
            s = gram(x)
            poly = torch.baddbmm(s, s, s, beta=b, alpha=c)                 # b A + c A^2
            x = torch.baddbmm(x, *((x, poly) if tall else (poly, x)), beta=a)  # a X + poly X
        return x
    # Gram form: accumulate the polynomial Q of the Gram matrix R, apply it to X only at a restart and at the end.
    r, q = gram(x), None
    eye = torch.eye(r.shape[-1], dtype=x.dtype, device=x.device).expand_as(r)
    last = len(coefficients) - 1
    for i, (a, b, c) in enumerate(coefficients):
        if i in restarts and i > 0:
            x, q = apply(x, q), None
            r = gram(x)
        z = torch.baddbmm(r, r, r, beta=b, alpha=c)                        # b R + c R^2
        q = z + a * eye if q is None else torch.baddbmm(q, q, z, beta=a)    # a Q + Q Z
        if i < last and i + 1 not in restarts:
            rz = torch.baddbmm(r, r, z, beta=a)                             # R (a + Z)
            r = torch.baddbmm(rz, z, rz, beta=a)                            # (a + Z) R (a + Z)
    return apply(x, q)


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, Newton-Schulz on matrices of one shape at a time, and the "rms_norm" LR adjustment
    (lr x 0.2 sqrt(max(m, n)): the update's RMS near AdamW's); decoupled weight decay lr x weight_decay."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, coefficients: Sequence[tuple[float, float, float]] = POLAR_EXPRESS,
                 restarts: Sequence[int] = GRAM_RESTARTS, eps: float = 1e-7,
                 dtype: torch.dtype = torch.float16) -> None:
        if not 0 <= momentum < 1 or lr < 0 or weight_decay < 0:
            raise ValueError(f"Muon needs 0 <= momentum < 1, lr >= 0, weight_decay >= 0: {momentum}, {lr}, "
                             f"{weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay})
        for group in self.param_groups:
            if any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon takes matrices only; give the other parameters to AdamW (muon_adamw)")
        self.coefficients, self.restarts, self.eps, self.dtype = tuple(coefficients), tuple(restarts), eps, dtype

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_shape = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    by_shape[(p.shape, p.dtype)].append(p)
            for (shape, _), params in by_shape.items():
                updates = torch.stack([self._momentum_update(p, group) for p in params])
                updates = newton_schulz(updates, self.coefficients, self.restarts, self.eps,
                                        self.dtype).to(torch.bfloat16)
                updates.mul_(group["lr"] * (0.2 * math.sqrt(max(shape))))
                for p, update in zip(params, updates):
                    p.mul_(1 - group["lr"] * group["weight_decay"]).sub_(update)
        return loss

    def _momentum_update(self, p: nn.Parameter, group: dict) -> torch.Tensor:
        """M <- mu M + g; the update mu M + g (Nesterov) or M, in bf16."""
        state = self.state[p]
        if not state:
            state["momentum"] = torch.zeros_like(p)
        buf, grad = state["momentum"], p.grad.to(p.dtype)
        buf.mul_(group["momentum"]).add_(grad)
        update = buf * group["momentum"] + grad if group["nesterov"] else buf
        return update.to(torch.bfloat16)


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the 2-D parameters and AdamW for the rest, stepped in that order, as one optimizer: its
    `param_groups` are both optimizers' (an LR scheduler moves every LR), its state dict holds both."""

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw
        self.defaults = {}
        self.param_groups = muon.param_groups + adamw.param_groups
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}
        self._optimizer_state_dict_pre_hooks, self._optimizer_state_dict_post_hooks = {}, {}
        self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = {}, {}

    @property
    def state(self) -> dict:  # noqa: D102 - both optimizers' per-parameter state
        return {**self.muon.state, **self.adamw.state}

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        loss = self.muon.step(closure)
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups


def muon_adamw(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.95),
               weight_decay: float = 0.0, momentum: float = 0.95, nesterov: bool = True,
               eps: float = 1e-8, precision: Literal["fp16", "fp32"] = "fp16") -> MuonAdamW:
    """RAEv2's `gmuon` split: every parameter with two dimensions (Linear weights, the class table, the learned
    tokens) to Muon, the others (biases, norm gains, 4-D patch convolutions, Fourier frequencies) to AdamW."""
    params = [p for p in params if p.requires_grad]
    matrices, rest = [p for p in params if p.ndim == 2], [p for p in params if p.ndim != 2]
    muon = Muon(matrices, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                dtype=NS_DTYPES[precision])
    adamw = torch.optim.AdamW(rest or [nn.Parameter(torch.empty(0))], lr=lr, betas=betas, eps=eps,
                              weight_decay=weight_decay)
    return MuonAdamW(muon, adamw)


def muon_optimizer(cfg: OptimConfig, params: Iterable[nn.Parameter],
                   ) -> tuple[MuonAdamW, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer of a recipe with `muon` (train_dit's, RAEv2's): Muon + AdamW, one per-step schedule moving
    both LRs (RAEv2 resets every group's LR from the same factor)."""
    muon = cfg.muon
    opt = muon_adamw(params, cfg.lr, cfg.betas, cfg.weight_decay, muon.momentum, muon.nesterov,
                     precision=muon.precision)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg, step))
