"""Building blocks shared by the decoder and the DiTs: positions, RMSNorm, SwiGLU, 2-D RoPE, the time and label
embedders."""

from __future__ import annotations

import math

import torch
from torch import nn


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed MAE/DiT 2-D sin-cos table of shape (grid*grid, dim), tokens in row-major order.

    Half of the channels encode the column (x) and half the row (y), as in MAE's
    `get_2d_sincos_pos_embed`, so tables match the reference checkpoints.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(grid, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([encode(gx), encode(gy)], dim=1).float()


class RMSNorm(nn.Module):
    """RMSNorm with a learnable gain, computed in fp32 for stability under bf16."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


class SwiGLU(nn.Module):
    """Gated MLP: one fused input projection split into value and gate halves."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(nn.functional.silu(a) * b)


class SplitSwiGLU(nn.Module):
    """The same gated MLP with separate value and gate matrices (RAEv2's names): Muon orthogonalizes each matrix on
    its own, so fusing them would change the update, not only the checkpoint's keys."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(nn.functional.silu(self.w1(x)) * self.w2(x))


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """Hidden width that keeps SwiGLU's parameter count close to a plain 4x MLP (LLaMA's 2/3 rule)."""
    return int(2 / 3 * mlp_ratio * dim)


class Rope2D(nn.Module):
    """Axial 2-D rotary embedding (EVA style): half of each head rotates with the row, half with the column.

    Adjacent channel pairs are rotated; frequencies are the language-model ones, 1/10000^(2i/d), d = head_dim/2.
    `extra_tokens` rows follow the grid unrotated (RAEv2's in-context time and class tokens have no position).
    `dtype` is the precision the angles are computed in (RAE: float64; RAEv2: float32, whose tables differ by ~1e-6).
    """

    def __init__(self, head_dim: int, grid: int, theta: float = 10000.0, extra_tokens: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
        axis_dim = head_dim // 2
        freqs = 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=dtype) / axis_dim)
        angles = torch.arange(grid, dtype=dtype)[:, None] * freqs[None]  # (grid, axis_dim/2)
        angles = angles.repeat_interleave(2, dim=-1)  # (grid, axis_dim): one angle per adjacent pair
        rows = angles[:, None, :].expand(grid, grid, axis_dim)
        cols = angles[None, :, :].expand(grid, grid, axis_dim)
        full = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
        full = torch.cat([full, full.new_zeros(extra_tokens, head_dim)])  # angle 0: the identity
        self.register_buffer("cos", full.cos().float(), persistent=False)
        self.register_buffer("sin", full.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x of shape (B, heads, N, head_dim)."""
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
        return x * self.cos.to(x.dtype) + rotated * self.sin.to(x.dtype)


def unpatchify(x: torch.Tensor, patch: int, channels: int) -> torch.Tensor:
    """(B, g*g, p*p*C) patch tokens in row-major order -> (B, C, g*p, g*p), as DiT's."""
    g = math.isqrt(x.shape[1])
    x = x.reshape(x.shape[0], g, g, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(x.shape[0], channels, g * patch, g * patch)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation; shift/scale are per sample (B, D) or per token (B, N, D)."""
    if shift.dim() == 2:
        shift, scale = shift[:, None], scale[:, None]
    return x * (1 + scale) + shift


def gate(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gated residual branch, per sample or per token like `modulate`."""
    return x * (g[:, None] if g.dim() == 2 else g)


def check_heads(name: str, width: int, heads: int) -> None:
    """Fail early, naming the parameter, when a width cannot be split into heads."""
    if width <= 0 or heads <= 0 or width % heads:
        raise ValueError(f"{name}: hidden size {width} is not divisible by num_heads {heads}")


def xavier_flat_(conv: nn.Conv2d) -> None:
    """Xavier-uniform init of a patch-embedding conv viewed as a Linear (DiT's recipe)."""
    nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
    nn.init.zeros_(conv.bias)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fixed_table(values: torch.Tensor) -> nn.Parameter:
    """A table the model initializes and does not train by default (sin-cos positions, Fourier frequencies): a frozen
    parameter, as the reference's, so that it travels with every checkpoint and `train_tables` can let it train."""
    return nn.Parameter(values, requires_grad=False)


class FourierTimeEmbed(nn.Module):
    """Fixed Gaussian Fourier features of t (not scaled by 1000) followed by an MLP."""

    def __init__(self, dim: int, num_freqs: int) -> None:
        super().__init__()
        self.W = fixed_table(torch.randn(num_freqs))  # named as the reference
        self.mlp = nn.Sequential(nn.Linear(2 * num_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.W[None] * 2 * math.pi  # the references' order of rounding
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class table with one extra row, the null class of classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)
