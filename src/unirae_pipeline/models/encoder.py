"""Frozen representation encoder: a timm ViT (DINOv2-with-registers family or a tiny seeded one).

The reference RAE keeps the encoder's final LayerNorm but removes its affine parameters, drops the CLS and
register tokens, and reshapes the patch tokens to a (B, C, h, w) latent.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn
from torch.nn import functional as F

from .imagenet import IMAGENET_MEAN, IMAGENET_STD
from .serialization import load_strict, read_state_dict


@dataclass(frozen=True)
class EncoderConfig:
    """`weights` is `none` (seeded random init), `hub` (timm's pretrained id, needs the network) or a file path."""

    model: str
    weights: str
    input_size: int
    overrides: dict = field(default_factory=dict)  # timm constructor overrides (the tiny default's sizes)

    def __post_init__(self) -> None:
        if self.input_size < 1:
            raise ValueError(f"encoder.input_size must be positive, got {self.input_size}")
        try:
            timm.models.get_arch_name(self.model)
            known = timm.is_model(self.model)
        except Exception:  # noqa: BLE001 - timm raises different errors for malformed names
            known = False
        if not known:
            raise ValueError(f"encoder.model {self.model!r} is not a timm model name")
        _ = self.latent_shape  # builds the architecture: bad overrides fail here, not in the first stage

    def timm_kwargs(self) -> dict:
        return {"num_classes": 0, "img_size": self.input_size, **self.overrides}

    @cached_property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of this encoder's latents, from a weightless build of its architecture (on the meta device)."""
        try:
            with torch.device("meta"):
                vit = timm.create_model(self.model, pretrained=False, **self.timm_kwargs())
        except Exception as err:  # noqa: BLE001 - timm raises TypeError, AssertionError, ValueError ...
            raise ValueError(f"encoder: timm cannot build {self.model!r} at encoder.input_size {self.input_size} with "
                             f"encoder.overrides {self.overrides}: {err}") from None
        return vit.embed_dim, *vit.patch_embed.grid_size

    def check_environment(self) -> None:
        """The weights file exists (checked when a stage that reads `encoder` starts)."""
        if self.weights not in ("none", "hub") and not Path(self.weights).is_file():
            raise FileNotFoundError(f"encoder.weights points to {self.weights!r}, which is not a file; "
                                    "set encoder.weights to a local checkpoint, 'hub' or 'none'")


class FrozenEncoder(nn.Module):
    """Images in [0, 1] of any square size -> raw latent (B, C, h, w); never trained."""

    def __init__(self, cfg: EncoderConfig, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vit = timm.create_model(cfg.model, pretrained=cfg.weights == "hub", **cfg.timm_kwargs())
        if cfg.weights not in ("none", "hub"):
            state = read_state_dict(cfg.weights, "encoder.weights")
            if any(k.startswith("embeddings.") for k in state):
                state = hf_dinov2_to_timm(state)
            if "pos_embed" in state:
                state["pos_embed"] = _resample_positions(state["pos_embed"], vit.pos_embed.shape[1])
            load_strict(vit, state, f"encoder.weights {cfg.weights!r}")
        # Affine-free final norm: every token is standardized over its channels, nothing learned on top.
        vit.norm = nn.LayerNorm(vit.embed_dim, eps=vit.norm.eps, elementwise_affine=False)
        self.vit = vit.eval().requires_grad_(False)
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.grid = vit.patch_embed.grid_size[0]
        self.channels = vit.embed_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)  # frozen: eval mode always, whatever the caller asks

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.channels, self.grid, self.grid

    def fingerprint(self) -> str:
        """Hash of the configuration and every weight, stored with the latents it produced."""
        h = hashlib.sha256(json.dumps(asdict(self.cfg), sort_keys=True).encode())
        for name, tensor in sorted(self.vit.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.cfg.input_size or images.shape[-2] != self.cfg.input_size:
            images = F.interpolate(images, size=(self.cfg.input_size,) * 2, mode="bicubic", align_corners=False)
        tokens = self.vit.forward_features((images - self.mean) / self.std)[:, self.num_prefix_tokens:]
        b, n, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, self.grid, self.grid)


def _resample_positions(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Patch position table resized to this input size: bicubic with antialiasing, in fp32, as HF DINOv2 does."""
    if pos_embed.shape[1] == num_patches:
        return pos_embed
    old, new = math.isqrt(pos_embed.shape[1]), math.isqrt(num_patches)
    return resample_abs_pos_embed(pos_embed.float(), new_size=(new, new), old_size=(old, old), num_prefix_tokens=0,
                                  interpolation="bicubic", antialias=True).to(pos_embed.dtype)


_HF_LAYER = {"norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
             "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
             "attention.o_proj": "attn.proj", "attention.output.dense": "attn.proj"}
_HF_QKV = (("attention.q_proj", "attention.k_proj", "attention.v_proj"),  # transformers >= 5
           ("attention.attention.query", "attention.attention.key", "attention.attention.value"))  # 4.x, the hub files


def hf_dinov2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face `Dinov2WithRegistersModel` state dict (the reference RAE encoder) in timm's layout.

    The CLS position embedding is folded into the CLS token (timm's DINOv2 adds positions to patches only);
    q/k/v are fused. Unknown keys are kept, so that the caller's strict check names them.
    """
    state = dict(state)
    out = {}
    pos = state.pop("embeddings.position_embeddings")
    out["cls_token"] = state.pop("embeddings.cls_token") + pos[:, :1]
    out["pos_embed"] = pos[:, 1:]
    out["reg_token"] = state.pop("embeddings.register_tokens")
    out["patch_embed.proj.weight"] = state.pop("embeddings.patch_embeddings.projection.weight")
    out["patch_embed.proj.bias"] = state.pop("embeddings.patch_embeddings.projection.bias")
    state.pop("embeddings.mask_token", None)
    out["norm.weight"], out["norm.bias"] = state.pop("layernorm.weight"), state.pop("layernorm.bias")
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    for i in layers:
        prefix = f"encoder.layer.{i}."
        for names in _HF_QKV:
            if f"{prefix}{names[0]}.weight" in state:
                for suffix in ("weight", "bias"):
                    parts = [state.pop(f"{prefix}{n}.{suffix}") for n in names]
                    out[f"blocks.{i}.attn.qkv.{suffix}"] = torch.cat(parts)
        for key in [k for k in state if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for src, dst in _HF_LAYER.items():
                if rest == src or rest.startswith(src + "."):
                    out[f"blocks.{i}.{dst}{rest[len(src):]}"] = state.pop(key)
    return {**out, **state}
