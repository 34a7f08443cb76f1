"""Frozen representation encoder: a timm ViT of one of the reference release's families (DINOv2 with registers,
SigLIP2, MAE), DINOv3, or a tiny seeded one.

The reference RAE keeps the encoder's final LayerNorm but removes its affine parameters, drops the CLS and
register tokens, and reshapes the patch tokens to a (B, C, h, w) latent. What its transformers implementations do
beyond the timm architecture (input normalization, position-table resizing, norm eps) is `Family`'s. RAEv2 reads
several blocks instead of the last (`EncoderConfig.readout`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn
from torch.nn import functional as F

from ..interop.diffusers_folder import is_diffusers_rae
from .serialization import check_keys, load_strict

UNUSED_HEADS = ("head.", "attn_pool.", "fc_norm.")  # pooling and classifier heads: the RAE reads the patch tokens


@dataclass(frozen=True)
class Family:
    """What the reference's transformers implementation of an encoder family does that the timm architecture does
    not say: how it resizes the position table to another input size (bicubic; DINOv2 antialiased in fp32), the
    eps of its LayerNorms where timm's differs (ViTMAE's config: 1e-12) and timm constructor arguments where timm's
    architecture differs (SigLIP's MLP uses the tanh GELU, timm's the exact one)."""

    name: str
    antialias: bool = True
    layer_norm_eps: float | None = None
    timm_kwargs: dict = field(default_factory=dict)


FAMILIES = {"dinov2": Family("dinov2"), "dinov3": Family("dinov3"),  # DINOv3: rotary positions, nothing to resize
            "mae": Family("mae", antialias=False, layer_norm_eps=1e-12),
            "siglip": Family("siglip", antialias=False, timm_kwargs={"act_layer": "gelu_tanh"}), "timm": Family("timm")}


def family_of(model: str) -> Family:
    """The family of a timm model name: by architecture (`*_dinov2`, `*_siglip_*`) or, for MAE, whose architecture
    is the plain ViT, by timm's pretrained tag (`vit_base_patch16_224.mae`); any other ViT is read as timm does."""
    arch, _, tag = model.partition(".")
    for name in ("dinov2", "dinov3", "siglip"):
        if name in arch.split("_"):
            return FAMILIES[name]
    return FAMILIES["mae" if tag == "mae" else "timm"]


@dataclass(frozen=True)
class EncoderConfig:
    """`weights` is `none` (seeded random init), `hub` (timm's pretrained id, needs the network) or a file path."""

    model: str
    weights: str
    input_size: int
    overrides: dict = field(default_factory=dict)  # timm constructor overrides (the tiny default's sizes)
    layers: tuple[int, ...] = ()
    readout: Literal["last", "mean_plus_global"] = "last"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.input_size < 1:
            raise ValueError(f"encoder.input_size must be positive, got {self.input_size}")
        if (self.readout == "last") != (not self.layers):
            raise ValueError(f"encoder.readout {self.readout!r} with encoder.layers {list(self.layers)}: 'last' reads "
                             "the final block (layers: []), 'mean_plus_global' the blocks that layers lists")
        try:
            timm.models.get_arch_name(self.model)
            known = timm.is_model(self.model)
        except Exception:  # noqa: BLE001 - timm raises different errors for malformed names
            known = False
        if not known:
            raise ValueError(f"encoder.model {self.model!r} is not a timm model name")
        _ = self.latent_shape  # builds the architecture: bad overrides fail here, not in the first stage

    def timm_kwargs(self) -> dict:
        return {"num_classes": 0, "img_size": self.input_size, **self.family.timm_kwargs, **self.overrides}

    @property
    def family(self) -> Family:
        return family_of(self.model)

    @property
    def pixel_norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the encoder's inputs are normalized with, and the decoder's outputs de-normalized with: timm's
        pretrained config of `model` (the reference's image processors agree: ImageNet's for DINOv2 and MAE, 0.5 for
        SigLIP2)."""
        cfg = timm.models.get_pretrained_cfg(self.model)
        return tuple(cfg.mean), tuple(cfg.std)

    def meta_model(self) -> nn.Module:
        """This encoder's architecture without weights (on the meta device): bad overrides fail here, named."""
        try:
            with torch.device("meta"):
                return timm.create_model(self.model, pretrained=False, **self.timm_kwargs())
        except Exception as err:  # noqa: BLE001 - timm raises TypeError, AssertionError, ValueError ...
            raise ValueError(f"encoder: timm cannot build {self.model!r} at encoder.input_size {self.input_size} with "
                             f"encoder.overrides {self.overrides}: {err}") from None

    @cached_property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of this encoder's latents, from `meta_model`."""
        vit = self.meta_model()
        depth = len(vit.blocks)
        if any(not 0 <= i < depth for i in self.layers) or list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"encoder.layers {list(self.layers)} must be increasing 0-based block indices of "
                             f"{self.model!r}'s {depth} blocks")
        return vit.embed_dim, *vit.patch_embed.grid_size

    def identity(self) -> dict:
        """What names this encoder in its fingerprint: the params, without the readout's when it is the default
        (so the latents cached before RAEv2's readout existed keep their fingerprint and are reused)."""
        values = asdict(self)
        if self.readout == "last":
            del values["layers"], values["readout"]
        return values

    def check_environment(self) -> None:
        """The weights file exists (checked when a stage that reads `encoder` starts)."""
        if self.weights not in ("none", "hub") and not (Path(self.weights).is_file() or is_diffusers_rae(self.weights)):
            raise FileNotFoundError(f"encoder.weights points to {self.weights!r}, which is neither a file nor a "
                                    "diffusers AutoencoderRAE folder; set encoder.weights to a local checkpoint, 'hub' "
                                    "or 'none'")


class FrozenEncoder(nn.Module):
    """Images in [0, 1] of any square size -> raw latent (B, C, h, w); never trained. `state`: the weights that
    `encoder.weights` names, in timm's layout (`interop.encoder_weights.encoder_state` reads them); None for `none`
    (seeded random weights) and `hub` (timm's pretrained id).

    `rope_rescale` (a DINOv3 encoder only) lets `forward(..., rescale_rope=True)` run DINOv3's train-mode RoPE, as
    RAEv2's stage 1 runs it: each block multiplies the patch coordinates by its own factor, log-uniform in
    [1/rope_rescale, rope_rescale], drawn from the global generator in DINOv3's order (one per block). Nothing else of
    train mode applies (the encoder has no dropout), and the eval-mode latents and the fingerprint stay as they are."""

    def __init__(self, cfg: EncoderConfig, seed: int, state: dict[str, torch.Tensor] | None = None,
                 rope_rescale: float | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if (state is None) != (cfg.weights in ("none", "hub")):
            raise ValueError(f"encoder.weights {cfg.weights!r}: the encoder takes its state dict exactly when the "
                             "weights are a file or folder (interop.encoder_weights.encoder_state reads it)")
        if rope_rescale is not None and cfg.family.name != "dinov3":
            raise ValueError(f"the RoPE rescaling of DINOv3's train mode needs a DINOv3 encoder, not {cfg.model!r}")
        rope = {} if rope_rescale is None else {"rope_rescale_coords": rope_rescale}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vit = timm.create_model(cfg.model, pretrained=cfg.weights == "hub", **cfg.timm_kwargs(), **rope)
        vit.reset_classifier(0, "")  # no pooling head: the RAE reads the patch tokens
        # Affine-free final norm: every token is standardized over its channels, nothing learned on top.
        vit.norm = nn.LayerNorm(vit.embed_dim, eps=vit.norm.eps, elementwise_affine=False)
        if state is not None:
            param = f"encoder.weights {cfg.weights!r}"
            load_strict(vit, self._timm_state(vit, state, param), param)
        if cfg.family.layer_norm_eps is not None:
            for module in vit.modules():
                if isinstance(module, nn.LayerNorm):
                    module.eps = cfg.family.layer_norm_eps
        self.vit = vit.eval().requires_grad_(False)
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.rope_rescale = rope_rescale
        self.grid = vit.patch_embed.grid_size[0]
        self.channels = vit.embed_dim
        mean, std = cfg.pixel_norm
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def _timm_state(self, vit: nn.Module, state: dict[str, torch.Tensor], param: str) -> dict[str, torch.Tensor]:
        """Weights in timm's layout for `vit`: pooling heads and the final norm's affine (which the RAE drops) left
        out, the position table resized to `encoder.input_size` as the reference's implementation resizes it."""
        if "storage_tokens" in state:  # facebookresearch/dinov3's own layout (a native .pth): timm's converter
            state = timm.models.eva.checkpoint_filter_fn(state, vit)
        state = {k: v for k, v in state.items() if not k.startswith((*UNUSED_HEADS, "norm."))}
        check_keys(vit, state, param)  # a file of another family fails here, naming keys, not in the resizing
        if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
            prefix = vit.pos_embed.shape[1] - math.prod(vit.patch_embed.grid_size)
            state["pos_embed"] = resize_positions(state["pos_embed"], vit.patch_embed.grid_size, prefix,
                                                  self.cfg.family.antialias)
        return state

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)  # frozen: eval mode always, whatever the caller asks

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.channels, self.grid, self.grid

    def fingerprint(self) -> str:
        """Hash of the configuration and every weight, stored with the latents it produced."""
        h = hashlib.sha256(json.dumps(self.cfg.identity(), sort_keys=True).encode())
        for name, tensor in sorted(self.vit.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
        return h.hexdigest()[:16]

    @contextmanager
    def _rope_per_block(self) -> Iterator[None]:
        """Every block gets a freshly rescaled RoPE table, as DINOv3's block loop computes it in train mode (timm's
        forward computes one table for all blocks): the rope module is in train mode for each block's draw only."""
        rope = self.vit.rope

        def draw(block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            rope.train()
            try:
                return args, {**kwargs, "rope": rope.get_embed(shape=[self.grid, self.grid])}
            finally:
                rope.eval()

        hooks = [block.register_forward_pre_hook(draw, with_kwargs=True) for block in self.vit.blocks]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    @torch.no_grad()
    def forward(self, images: torch.Tensor, rescale_rope: bool = False) -> torch.Tensor:
        if images.shape[-1] != self.cfg.input_size or images.shape[-2] != self.cfg.input_size:
            images = F.interpolate(images, size=(self.cfg.input_size,) * 2, mode="bicubic", align_corners=False)
        x = (images - self.mean) / self.std
        if rescale_rope and self.rope_rescale is None:
            raise ValueError("rescale_rope=True needs an encoder built with rope_rescale")
        with self._rope_per_block() if rescale_rope else nullcontext():
            return self._readout(x)

    def _readout(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.readout == "last":
            tokens = self.vit.forward_features(x)[:, self.num_prefix_tokens:]
        else:  # RAEv2: each listed block through the final norm, their mean, plus the last one's mean over tokens
            blocks = self.vit.forward_intermediates(x, indices=list(self.cfg.layers), norm=True, output_fmt="NLC",
                                                    intermediates_only=True)
            tokens = torch.stack(blocks).mean(dim=0) + blocks[-1].mean(dim=1, keepdim=True)
        b, n, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, self.grid, self.grid)


def resize_positions(pos_embed: torch.Tensor, grid: tuple[int, int], prefix: int, antialias: bool) -> torch.Tensor:
    """A square position table (after `prefix` token rows, kept as they are) resized bicubically to `grid`, in fp32."""
    old = math.isqrt(pos_embed.shape[1] - prefix)
    return resample_abs_pos_embed(pos_embed.float(), new_size=list(grid), old_size=(old, old),
                                  num_prefix_tokens=prefix, interpolation="bicubic",
                                  antialias=antialias).to(pos_embed.dtype)
