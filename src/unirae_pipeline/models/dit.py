"""DiT-DH: a DiT backbone plus a wide, shallow "DDT head" (RAE paper, section 4; reference `DiTwDDTHead`).

Conventions: x (B, C, H, W) is a normalized RAE latent, t in [0, 1] with 1 = pure noise, y in [0, num_classes]
where `num_classes` is the null (unconditional) label. The output is the flow-matching velocity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from timm.layers import PatchEmbed
from torch import nn
from torch.nn import functional as F

from ..config.build import Tagged, build_typed
from .dit_raev2 import RAEv2DiT, RAEv2DiTConfig, build_raev2_dit
from .layers import (
    FourierTimeEmbed,
    LabelEmbedder,
    RMSNorm,
    Rope2D,
    SwiGLU,
    check_heads,
    fixed_table,
    gate,
    modulate,
    sincos_pos_embed_2d,
    swiglu_hidden,
    unpatchify,
    xavier_flat_,
)
from .serialization import ModelFile


@dataclass(frozen=True)
class DiTConfig(Tagged):
    """Architecture of DiT-DH; the presets (tiny/S/B/L/XL) live in `conf/dit/`. `arch` tells the `dit` group's two
    architectures apart (RAEv2's: `dit_raev2.RAEv2DiTConfig`); files written before it existed are DiT-DH's."""

    hidden_size: int
    depth: int
    num_heads: int
    head_hidden_size: int
    head_depth: int
    head_num_heads: int
    mlp_ratio: float
    patch_size: int
    class_dropout_prob: float
    label_init_std: float
    fourier_features: int
    arch: Literal["dit_dh"] = "dit_dh"

    def __post_init__(self) -> None:
        check_heads("dit.hidden_size / dit.num_heads", self.hidden_size, self.num_heads)
        check_heads("dit.head_hidden_size / dit.head_num_heads", self.head_hidden_size, self.head_num_heads)
        for name in ("depth", "patch_size", "fourier_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"dit.{name} must be >= 1, got {getattr(self, name)}")
        if self.head_depth < 0:
            raise ValueError(f"dit.head_depth must be >= 0 (0 = plain LightningDiT), got {self.head_depth}")
        for name, width, heads in (("dit", self.hidden_size, self.num_heads),
                                   ("dit.head", self.head_hidden_size, self.head_num_heads)):
            if (width // heads) % 4:
                raise ValueError(f"{name}: head dimension {width // heads} must be divisible by 4 for 2-D RoPE")
        if not self.mlp_ratio > 0 or self.label_init_std < 0:
            raise ValueError(f"dit.mlp_ratio must be > 0 and dit.label_init_std >= 0, got {self.mlp_ratio} and "
                             f"{self.label_init_std}")
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(f"dit.class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}")

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, 2-D RoPE on q and k, no qk-norm."""

    def __init__(self, dim: int, heads: int, rope: Rope2D) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, hd)
        out = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """Pre-RMSNorm transformer block with 6-way adaLN from a per-sample (B, D) or per-token (B, N, D) condition."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, rope: Rope2D) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads, rope)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim, mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate(self.attn(modulate(self.norm1(x), shift1, scale1)), gate1)
        return x + gate(self.mlp(modulate(self.norm2(x), shift2, scale2)), gate2)


class FinalLayer(nn.Module):
    """RMSNorm, per-token shift/scale (no gate), linear to patch pixels."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm_final = RMSNorm(dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiTBackbone(nn.Module):
    """What DiT-DH and LightningDiT share: the sizes, the label dropout of classifier-free guidance, unpatchifying, and
    the reference's initialisation of the embeddings and the zeroed outputs. Each subclass creates its modules in the
    reference's order (seeded weights depend on it)."""

    def __init__(self, cfg: DiTConfig, in_channels: int, input_size: int, num_classes: int) -> None:
        super().__init__()
        if input_size % cfg.patch_size:
            raise ValueError(f"dit.patch_size {cfg.patch_size} does not divide the latent size {input_size}")
        self.cfg, self.in_channels, self.input_size, self.num_classes = cfg, in_channels, input_size, num_classes
        self.grid = input_size // cfg.patch_size

    def _init_embeddings_and_zero_outputs(self) -> None:
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=self.cfg.label_init_std)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in (*self.blocks, self.final_layer):
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def drop_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Classifier-free-guidance training: replace labels by the null class with the configured probability."""
        if not self.training or self.cfg.class_dropout_prob == 0:
            return y
        drop = torch.rand(y.shape, device=y.device) < self.cfg.class_dropout_prob
        return torch.where(drop, torch.full_like(y, self.num_classes), y)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.cfg.patch_size, self.in_channels)


class DiTDH(DiTBackbone):
    """DiT backbone (global adaLN from t and y) feeding a DDT head whose adaLN is per token.

    Module names follow the reference checkpoints: `s_embedder`/`pos_embed` feed the backbone ("s" stream),
    `x_embedder` the head, and `blocks` holds the backbone blocks followed by the head blocks.
    """

    def __init__(self, cfg: DiTConfig, in_channels: int, input_size: int, num_classes: int) -> None:
        super().__init__(cfg, in_channels, input_size, num_classes)
        p, d, dh, grid = cfg.patch_size, cfg.hidden_size, cfg.head_hidden_size, self.grid

        self.t_embedder = FourierTimeEmbed(d, cfg.fourier_features)
        self.y_embedder = LabelEmbedder(num_classes, d)
        self.s_embedder = PatchEmbed(input_size, p, in_channels, d, bias=True)
        self.pos_embed = fixed_table(sincos_pos_embed_2d(d, grid)[None])
        rope, head_rope = Rope2D(d // cfg.num_heads, grid), Rope2D(dh // cfg.head_num_heads, grid)
        self.blocks = nn.ModuleList(
            [DiTBlock(d, cfg.num_heads, cfg.mlp_ratio, rope) for _ in range(cfg.depth)]
            + [DiTBlock(dh, cfg.head_num_heads, cfg.mlp_ratio, head_rope) for _ in range(cfg.head_depth)])
        self.s_projector = nn.Linear(d, dh) if d != dh else nn.Identity()
        self.x_embedder = PatchEmbed(input_size, p, in_channels, dh, bias=True)  # the head re-reads x_t, RoPE only
        self.final_layer = FinalLayer(dh, p * p * in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Reference init: xavier patch embeds, N(0, std) label table, N(0, .02) time MLP, zero adaLN and output."""
        xavier_flat_(self.x_embedder.proj)
        xavier_flat_(self.s_embedder.proj)
        self._init_embeddings_and_zero_outputs()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        depth = self.cfg.depth
        t_emb = self.t_embedder(t)                                    # (B, D)
        c = F.silu(t_emb + self.y_embedder(self.drop_labels(y)))      # (B, D)
        s = self.s_embedder(x) + self.pos_embed                       # (B, N, D)
        for block in self.blocks[:depth]:
            s = block(s, c)
        s = self.s_projector(F.silu(t_emb[:, None] + s))              # (B, N, Dh): per-token head condition
        h = self.x_embedder(x)                                        # (B, N, Dh)
        for block in self.blocks[depth:]:
            h = block(h, s)
        return self.unpatchify(self.final_layer(h, s))                # (B, C, H, W)


class LightningDiT(DiTBackbone):
    """Plain LightningDiT (RAE paper section 3), selected by `dit.head_depth: 0`: one stream, c = t_emb + y_emb
    without the extra SiLU, a per-sample final layer, xavier-initialised Linears. Same block ingredients."""

    def __init__(self, cfg: DiTConfig, in_channels: int, input_size: int, num_classes: int) -> None:
        super().__init__(cfg, in_channels, input_size, num_classes)
        p, d, grid = cfg.patch_size, cfg.hidden_size, self.grid
        self.x_embedder = PatchEmbed(input_size, p, in_channels, d, bias=True)
        self.t_embedder = FourierTimeEmbed(d, cfg.fourier_features)
        self.y_embedder = LabelEmbedder(num_classes, d)
        self.pos_embed = fixed_table(sincos_pos_embed_2d(d, grid)[None])
        rope = Rope2D(d // cfg.num_heads, grid)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.mlp_ratio, rope) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(d, p * p * in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        xavier_flat_(self.x_embedder.proj)
        self._init_embeddings_and_zero_outputs()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.t_embedder(t) + self.y_embedder(self.drop_labels(y))  # (B, D)
        h = self.x_embedder(x) + self.pos_embed                         # (B, N, D)
        for block in self.blocks:
            h = block(h, c)
        return self.unpatchify(self.final_layer(h, c))


AnyDiTConfig = DiTConfig | RAEv2DiTConfig  # the `dit` group: DiT-DH (`arch: dit_dh`) or RAEv2's DiT (`arch: raev2`)


def build_dit(cfg: AnyDiTConfig, latent_shape: tuple[int, int, int], num_classes: int,
              seed: int) -> DiTBackbone | RAEv2DiT:
    """Seeded construction, so training and the untrained baseline of `sample` start from the same weights.

    `dit.head_depth: 0` builds the plain LightningDiT baseline, `dit.arch: raev2` RAEv2's DiT, anything else DiT-DH."""
    if isinstance(cfg, RAEv2DiTConfig):
        return build_raev2_dit(cfg, latent_shape, num_classes, seed)
    channels, size, _ = latent_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return (LightningDiT if cfg.head_depth == 0 else DiTDH)(cfg, channels, size, num_classes)


def dit_file(model: DiTBackbone | RAEv2DiT, **meta: Any) -> ModelFile:
    """A DiT's file: its weights, its architecture (`config`) and what else the writer knows (latent shape, classes,
    encoder fingerprint, seed, ...)."""
    return ModelFile.of("dit", model, config=model.cfg.to_dict(), **meta)


def dit_config(file: ModelFile) -> AnyDiTConfig:
    """The architecture a DiT file holds, built as the `dit` params group is."""
    return build_typed(AnyDiTConfig, file.expect("dit").meta["config"], "dit")


def dit_from_file(file: ModelFile) -> DiTBackbone | RAEv2DiT:
    """The DiT a file holds (DiT-DH, LightningDiT or RAEv2's)."""
    model = build_dit(dit_config(file), tuple(file.meta["latent_shape"]), file.meta["num_classes"], seed=0)
    return file.load_into(model)
