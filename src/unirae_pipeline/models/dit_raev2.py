"""RAEv2's DiT (`DiTwDDTHeadIG`, nanovisionx/RAEv2 `src/stage2/models/DDT.py`): a trunk conditioned in context, a DDT
head, and a base head that predicts from the trunk's early blocks for internal guidance.

Differences from DiT-DH (`dit.py`) that change results: no adaLN in the trunk (time and class enter as tokens appended
to the patches, unrotated by RoPE), RMS-normalized queries and keys, separate q/k/v and SwiGLU matrices, no absolute
position table, labels dropped by the objective rather than the model, and two outputs. Conventions: x (B, C, H, W) a
normalized latent, t in [0, 1] with 1 = noise, y in [0, num_classes] (num_classes = the null class); both outputs are
predictions of the clean latent (x-prediction), `(full, base)`. Module names and creation order are RAEv2's, so its
checkpoints load without renaming and a seeded construction draws the same initial weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from timm.layers import PatchEmbed
from torch import nn
from torch.nn import functional as F

from ..config.build import Tagged
from .layers import (
    FourierTimeEmbed,
    LabelEmbedder,
    RMSNorm,
    Rope2D,
    SplitSwiGLU,
    check_heads,
    modulate,
    swiglu_hidden,
    unpatchify,
    xavier_flat_,
)


@dataclass(frozen=True)
class RAEv2DiTConfig(Tagged):
    """Architecture of RAEv2's DiT (`dit.arch: raev2`): trunk (hidden_size, depth, num_heads), DDT head (head_*), the
    base head after `base_depth` trunk blocks, the numbers of in-context time and class tokens, and the probability
    that the objective drops a label to the null class (RAEv2's `conditioning.cfg_dropout_prob`; the model itself
    never drops one)."""

    hidden_size: int
    depth: int
    num_heads: int
    head_hidden_size: int
    head_depth: int
    head_num_heads: int
    mlp_ratio: float
    patch_size: int
    base_depth: int
    time_tokens: int
    class_tokens: int
    class_dropout_prob: float
    label_init_std: float
    fourier_features: int
    arch: Literal["raev2"] = "raev2"

    def __post_init__(self) -> None:
        for name, width, heads in (("dit", self.hidden_size, self.num_heads),
                                   ("dit.head", self.head_hidden_size, self.head_num_heads)):
            check_heads(f"{name} hidden size / num_heads", width, heads)
            if (width // heads) % 4:
                raise ValueError(f"{name}: head dimension {width // heads} must be divisible by 4 for 2-D RoPE")
        for name in ("depth", "head_depth", "patch_size", "time_tokens", "class_tokens", "fourier_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"dit.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.base_depth <= self.depth:
            raise ValueError(f"dit.base_depth must be in [1, dit.depth={self.depth}], got {self.base_depth}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"dit.mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.label_init_std < 0:
            raise ValueError(f"dit.label_init_std must be >= 0, got {self.label_init_std}")
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(f"dit.class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}")

    def to_dict(self) -> dict:
        return asdict(self)


class QKNormAttention(nn.Module):
    """Self-attention with separate q/k/v projections, per-head RMSNorm on q and k, then 2-D RoPE."""

    def __init__(self, dim: int, heads: int, rope: Rope2D) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.q_norm, self.k_norm = RMSNorm(dim // heads), RMSNorm(dim // heads)
        self.rope = rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(self.rope(self.q_norm(q)), self.rope(self.k_norm(k)), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TrunkBlock(nn.Module):
    """Pre-RMSNorm attention and SwiGLU residuals with no modulation: the condition is part of the sequence."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope: Rope2D) -> None:
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.attn = QKNormAttention(dim, heads, rope)
        self.mlp = SplitSwiGLU(dim, swiglu_hidden(dim, mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class HeadBlock(TrunkBlock):
    """The trunk block with gated 6-way adaLN from a per-token condition (B, N, D): the DDT head's block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope: Rope2D) -> None:
        super().__init__(dim, heads, mlp_ratio, rope)
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln_modulation(c).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class OutputLayer(nn.Module):
    """RMSNorm, per-token shift/scale, linear to patch values (RAEv2's `DDTFinalLayer`, zero-initialized)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.linear = nn.Linear(dim, out_dim)
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def zero_(self) -> OutputLayer:
        for layer in (self.linear, self.adaln_modulation[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        return self

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaln_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class TimeTokens(FourierTimeEmbed):
    """Fourier features of t through an MLP, returned alone (the heads' condition) and added to learned tokens."""

    def __init__(self, dim: int, num_freqs: int, tokens: int) -> None:
        super().__init__(dim, num_freqs)
        self.learnable_tokens = nn.Parameter(torch.normal(0.0, dim**-0.5, (tokens, dim)))

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = super().forward(t)[:, None]  # (B, 1, D)
        return emb, self.learnable_tokens + emb


class ClassTokens(LabelEmbedder):
    """The class table (with the null row) added to learned tokens."""

    def __init__(self, num_classes: int, dim: int, tokens: int) -> None:
        super().__init__(num_classes, dim)
        self.learnable_tokens = nn.Parameter(torch.normal(0.0, dim**-0.5, (tokens, dim)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.learnable_tokens + super().forward(y)[:, None]


class RAEv2DiT(nn.Module):
    """`forward(x, t, y) -> (full, base)`: the DDT head's and the base head's predictions of the clean latent."""

    def __init__(self, cfg: RAEv2DiTConfig, in_channels: int, input_size: int, num_classes: int) -> None:
        super().__init__()
        if input_size % cfg.patch_size:
            raise ValueError(f"dit.patch_size {cfg.patch_size} does not divide the latent size {input_size}")
        self.cfg, self.in_channels, self.input_size, self.num_classes = cfg, in_channels, input_size, num_classes
        p, d, dh, grid = cfg.patch_size, cfg.hidden_size, cfg.head_hidden_size, input_size // cfg.patch_size
        self.num_patches = grid * grid
        self.s_embedder = PatchEmbed(input_size, p, in_channels, d, bias=True)
        self.x_embedder = PatchEmbed(input_size, p, in_channels, dh, bias=True)
        self.s_projector = nn.Linear(d, dh) if d != dh else nn.Identity()
        self.t_embedder = TimeTokens(d, cfg.fourier_features, cfg.time_tokens)
        self.ctx_embedder = ClassTokens(num_classes, d, cfg.class_tokens)
        tokens = cfg.time_tokens + cfg.class_tokens
        rope = Rope2D(d // cfg.num_heads, grid, extra_tokens=tokens, dtype=torch.float32)  # as RAEv2 trained
        head_rope = Rope2D(dh // cfg.head_num_heads, grid, dtype=torch.float32)
        self.blocks = nn.ModuleList(
            [TrunkBlock(d, cfg.num_heads, cfg.mlp_ratio, rope) for _ in range(cfg.depth)]
            + [HeadBlock(dh, cfg.head_num_heads, cfg.mlp_ratio, head_rope) for _ in range(cfg.head_depth)])
        self.final_layer = OutputLayer(dh, p * p * in_channels)
        self.initialize_weights()
        self.base_final_layer = OutputLayer(d, p * p * in_channels).zero_()  # created after the init, as RAEv2's

    def initialize_weights(self) -> None:
        """RAEv2's init: xavier patch embeds, N(0, label_init_std) class table (RAEv2's: .02), N(0, .02) time MLP,
        zero adaLN and output; every other Linear keeps PyTorch's default."""
        xavier_flat_(self.x_embedder.proj)
        xavier_flat_(self.s_embedder.proj)
        nn.init.normal_(self.ctx_embedder.embedding_table.weight, std=self.cfg.label_init_std)
        for block in self.blocks[self.cfg.depth:]:
            nn.init.zeros_(block.adaln_modulation[-1].weight)
            nn.init.zeros_(block.adaln_modulation[-1].bias)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        self.final_layer.zero_()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, p, c = self.num_patches, self.cfg.patch_size, self.in_channels
        t_emb, t_tokens = self.t_embedder(t)                                       # (B, 1, D), (B, nt, D)
        h = torch.cat([self.s_embedder(x), t_tokens, self.ctx_embedder(y)], dim=1)  # (B, N + nt + nc, D)
        for i, block in enumerate(self.blocks[:self.cfg.depth]):
            h = block(h)
            if i + 1 == self.cfg.base_depth:
                early = h[:, :n]
        s = self.s_projector(F.silu(t_emb + h[:, :n]))                             # (B, N, Dh): per-token condition
        out = self.x_embedder(x)
        for block in self.blocks[self.cfg.depth:]:
            out = block(out, s)
        full = unpatchify(self.final_layer(out, s), p, c)
        b = F.silu(t_emb + early)
        return full, unpatchify(self.base_final_layer(b, b), p, c)


def build_raev2_dit(cfg: RAEv2DiTConfig, latent_shape: tuple[int, int, int], num_classes: int,
                    seed: int) -> RAEv2DiT:
    """Seeded construction (the global generator, as RAEv2's: the same seed draws the same initial weights)."""
    channels, size, _ = latent_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RAEv2DiT(cfg, channels, size, num_classes)
