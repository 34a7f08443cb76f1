"""Converters for the released RAE checkpoints (bytetriper/RAE): DiT-DH, ViT decoders, latent statistics; and for
RAEv2's (nanovisionx/RAEv2): its DiT with the internal-guidance base head.

Each function takes an already loaded state dict (use `read_checkpoint`, which never unpickles code) and the
official config's keyword arguments, checks every key, and returns our module with identical outputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..models.decoder import DecoderConfig, ViTDecoder
from ..models.dit import DiTConfig, DiTDH
from ..models.dit_raev2 import RAEv2DiT, RAEv2DiTConfig
from ..models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ..models.layers import Rope2D
from ..models.serialization import load_strict, read_state_dict

_WRAPPERS = ("module.", "_orig_mod.")  # DDP and torch.compile prefixes


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A released checkpoint's weights: the EMA ones when it holds both (`serialization.read_state_dict`)."""
    return read_state_dict(path, f"official checkpoint {Path(path).name}", prefer=("ema", "model", "state_dict"))


def _strip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPERS:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ValueError(f"official {name} must be an int or a [backbone, head] pair, got {value!r}")


def _check_table(name: str, given: torch.Tensor, ours: torch.Tensor) -> None:
    if given.shape != ours.shape or not torch.allclose(given.float(), ours.float(), atol=1e-5):
        raise ValueError(f"{name} in the checkpoint differs from the fixed table this configuration implies")


def load_official_dit(state_dict: dict[str, torch.Tensor], *, input_size: int, patch_size: Any = 1,
                      in_channels: int = 768, hidden_size: Any = (1152, 2048), depth: Any = (28, 2),
                      num_heads: Any = (16, 16), mlp_ratio: float = 4.0, class_dropout_prob: float = 0.1,
                      num_classes: int = 1000, use_qknorm: bool = False, use_swiglu: bool = True,
                      use_rope: bool = True, use_rmsnorm: bool = True, wo_shift: bool = False,
                      use_pos_embed: bool = True) -> DiTDH:
    """Our DiT-DH from an official `DiTwDDTHead` state dict; keyword names and defaults are the official config's."""
    unsupported = {"use_qknorm": (use_qknorm, False), "use_swiglu": (use_swiglu, True), "use_rope": (use_rope, True),
                   "use_rmsnorm": (use_rmsnorm, True), "wo_shift": (wo_shift, False),
                   "use_pos_embed": (use_pos_embed, True)}
    for key, (value, released) in unsupported.items():
        if bool(value) != released:
            raise ValueError(f"official DiT-DH with {key}={value} is not supported (released models: {released})")
    if _pair(patch_size, "patch_size") != (1, 1):
        raise ValueError(f"official DiT-DH patch_size {patch_size!r} is not supported (the released models use 1)")
    if class_dropout_prob <= 0:
        raise ValueError("official DiT-DH with class_dropout_prob=0 has no null-class row; not supported")
    state = _strip(state_dict)
    (d, dh), (depth_s, depth_h), (heads_s, heads_h) = (_pair(hidden_size, "hidden_size"), _pair(depth, "depth"),
                                                        _pair(num_heads, "num_heads"))
    if "t_embedder.W" not in state:
        raise KeyError("official DiT-DH state dict has no 't_embedder.W' (is this a DiT-DH checkpoint?)")
    cfg = DiTConfig(hidden_size=d, depth=depth_s, num_heads=heads_s, head_hidden_size=dh, head_depth=depth_h,
                    head_num_heads=heads_h, mlp_ratio=mlp_ratio, patch_size=1, class_dropout_prob=class_dropout_prob,
                    label_init_std=0.02, fourier_features=state["t_embedder.W"].shape[0])
    model = DiTDH(cfg, in_channels, input_size, num_classes)
    # RoPE tables are recomputed by our model; check that the checkpoint's agree, then drop them.
    ropes = {"enc_feat_rope": Rope2D(d // heads_s, input_size), "dec_feat_rope": Rope2D(dh // heads_h, input_size)}
    for name, rope in ropes.items():
        for part, ours in (("freqs_cos", rope.cos), ("freqs_sin", rope.sin)):
            if f"{name}.{part}" in state:
                _check_table(f"{name}.{part}", state.pop(f"{name}.{part}"), ours)
    state.setdefault("pos_embed", model.pos_embed.detach().clone())  # as trained (the reference's GPU trainer) or not
    load_strict(model, state, "official DiT-DH")
    return model.eval()


def load_raev2_dit(state_dict: dict[str, torch.Tensor], *, input_size: int, in_channels: int, patch_size: Any = 1,
                   hidden_size: Any = (1152, 2048), depth: Any = (28, 2), num_heads: Any = (16, 16),
                   mlp_ratio: float = 4.0, base_model_depth: int = 8, num_classes: int = 1000,
                   condition_type: str = "label", cond_arch: Any = None, cfg_dropout_prob: float = 0.1,
                   **unused: Any) -> RAEv2DiT:
    """Our RAEv2 DiT from a `DiTwDDTHeadIG` state dict (a released checkpoint's "ema"); keyword names and defaults
    are those of RAEv2's class and its config's `stage_2.params` (`cond_arch` its `conditioning.arch`, a dict or an
    object with `num_t_tokens`/`num_c_tokens`; the counts are also read from the weights). `cfg_dropout_prob`
    (`conditioning.cfg_dropout_prob`, the released 0.1) is the training's label dropout, recorded in the config."""
    if condition_type != "label":
        raise ValueError(f"RAEv2 DiT with condition_type={condition_type!r} is not supported (class labels only)")
    for key, value in unused.items():
        if key in ("enable_repa", "use_cfg_conds") and value:
            raise ValueError(f"RAEv2 DiT with {key}={value} is not supported (the released ImageNet models: False)")
        if key not in ("context_dim", "enable_repa", "use_cfg_conds", "repa_layer_depth", "z_dim"):
            raise TypeError(f"load_raev2_dit: unknown keyword {key!r}")
    p_s, p_x = _pair(patch_size, "patch_size")
    if p_s != p_x:
        raise ValueError(f"RAEv2 DiT with trunk and head patch sizes {p_s} != {p_x} is not supported")
    state = _strip(state_dict)
    for name in ("t_embedder.W", "t_embedder.learnable_tokens", "ctx_embedder.learnable_tokens"):
        if name not in state:
            raise KeyError(f"RAEv2 DiT state dict has no {name!r} (is this a DiTwDDTHeadIG checkpoint?)")
    tokens = {"num_t_tokens": state["t_embedder.learnable_tokens"].shape[0],
              "num_c_tokens": state["ctx_embedder.learnable_tokens"].shape[0]}
    for key, count in tokens.items():
        given = cond_arch.get(key) if isinstance(cond_arch, dict) else getattr(cond_arch, key, None)
        if given is not None and given != count:
            raise ValueError(f"RAEv2 DiT: cond_arch.{key}={given} but the weights hold {count} tokens")
    (d, dh), (depth_s, depth_h), (heads_s, heads_h) = (_pair(hidden_size, "hidden_size"), _pair(depth, "depth"),
                                                        _pair(num_heads, "num_heads"))
    cfg = RAEv2DiTConfig(hidden_size=d, depth=depth_s, num_heads=heads_s, head_hidden_size=dh, head_depth=depth_h,
                         head_num_heads=heads_h, mlp_ratio=mlp_ratio, patch_size=p_s, base_depth=base_model_depth,
                         time_tokens=tokens["num_t_tokens"], class_tokens=tokens["num_c_tokens"],
                         class_dropout_prob=cfg_dropout_prob, label_init_std=0.02,  # RAEv2's init
                         fourier_features=state["t_embedder.W"].shape[0])
    model = RAEv2DiT(cfg, in_channels, input_size, num_classes)
    # RAEv2 stores its RoPE tables; ours are computed: check that they agree, then drop them.
    ropes = {"enc_rope": model.blocks[0].attn.rope, "dec_rope": model.blocks[-1].attn.rope}
    for name, rope in ropes.items():
        for part, ours in (("freqs_cos", rope.cos), ("freqs_sin", rope.sin)):
            if f"{name}.{part}" in state:
                _check_table(f"{name}.{part}", state.pop(f"{name}.{part}"), ours)
    load_strict(model, state, "RAEv2 DiT")
    return model.eval()


def _decoder_key(key: str) -> str | None:
    """Official (HF ViTMAE-style) decoder key -> ours; None for the q/k/v parts fused separately."""
    fixed = {"trainable_cls_token": "cls_token", "decoder_norm.weight": "norm.weight", "decoder_norm.bias": "norm.bias",
             "decoder_pos_embed": "pos_embed"}
    if key in fixed:
        return fixed[key]
    if not key.startswith("decoder_layers."):
        return key
    _, index, rest = key.split(".", 2)
    mapping = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.output.dense": "attn.proj",
               "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}
    for src, dst in mapping.items():
        if rest.startswith(src + "."):
            return f"blocks.{index}.{dst}.{rest[len(src) + 1:]}"
    if rest.startswith("attention.attention."):
        return None
    return key


def official_decoder_state(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """An official decoder state dict in our `ViTDecoder`'s names: keys renamed, each block's query/key/value
    fused."""
    converted = {}
    for key, value in state.items():
        new = _decoder_key(key)
        if new is not None:
            converted[new] = value
    for i in range(depth):
        parts = [f"decoder_layers.{i}.attention.attention.{p}" for p in ("query", "key", "value")]
        for suffix in ("weight", "bias"):
            names = [f"{p}.{suffix}" for p in parts]
            if all(n in state for n in names):
                converted[f"blocks.{i}.attn.qkv.{suffix}"] = torch.cat([state[n] for n in names])
    return converted


def load_official_decoder(state_dict: dict[str, torch.Tensor], hidden_size: int, depth: int, num_heads: int,
                          mlp_dim: int, patch_size: int, latent_dim: int, num_patches: int,
                          image_mean: tuple[float, ...] = IMAGENET_MEAN,
                          image_std: tuple[float, ...] = IMAGENET_STD) -> ViTDecoder:
    """Our ViT decoder from an official `GeneralDecoder` state dict (e.g. the released ViT-XL `model.pt`).

    The result maps raw encoder latents (B, latent_dim, h, w) to images, with the official de-normalization:
    `image_mean`/`image_std` of the encoder's image processor (0.5 for the SigLIP2 decoder).
    """
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"num_patches {num_patches} is not a square grid")
    cfg = DecoderConfig(hidden_size=hidden_size, depth=depth, num_heads=num_heads, mlp_dim=mlp_dim,
                        patch_size=patch_size, noise_tau=0.0, noise_dist="uniform")
    model = ViTDecoder(cfg, latent_dim, grid, (image_mean, image_std))
    converted = official_decoder_state(_strip(state_dict), depth)
    converted.setdefault("pos_embed", model.pos_embed.detach().clone())  # trained by the reference's GPU trainer
    load_strict(model, converted, "official decoder")
    return model.eval()


def load_raev2_decoder(state_dict: dict[str, torch.Tensor], hidden_size: int, depth: int, num_heads: int,
                       mlp_dim: int, patch_size: int, latent_dim: int, num_patches: int) -> ViTDecoder:
    """Our ViT decoder from a released RAEv2 `decoder.pt`: RAE's `GeneralDecoder`, whose output RAEv2 takes as the
    image itself (no de-normalization: the identity pixel norm). Its `stats.pt` loads with `load_official_stats`."""
    return load_official_decoder(state_dict, hidden_size, depth, num_heads, mlp_dim, patch_size, latent_dim,
                                 num_patches, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))


def load_official_stats(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """{'mean', 'var'} of the full latent shape from an official `stat.pt` dict; a missing mean (the released
    DINOv2-B statistics are variance only) becomes zeros, as the reference treats it."""
    var = obj.get("var")
    if not isinstance(var, torch.Tensor):
        raise KeyError("official latent statistics need a 'var' tensor")
    mean = obj.get("mean")
    if mean is None:
        mean = torch.zeros_like(var)
    if mean.shape != var.shape:
        raise ValueError(f"official statistics: mean {tuple(mean.shape)} and var {tuple(var.shape)} differ")
    return {"mean": mean.float(), "var": var.float()}
