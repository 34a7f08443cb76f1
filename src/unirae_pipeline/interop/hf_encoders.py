"""Hugging Face transformers encoder weights in timm's layout: the three encoders the reference RAE loads
(`Dinov2WithRegistersModel`, `SiglipModel`'s vision tower, `ViTMAEForPreTraining`'s encoder) and DINOv3
(`DINOv3ViTModel`, timm's `vit_*_dinov3_qkvb`: rotary positions, q and v biases only).

Both layouts are read: the hub files (`save_pretrained`, transformers 4.x names) and transformers >= 5's in-memory
names. Pure key renaming plus q/k/v fusion; unknown keys are kept, so that the caller's strict load names them.
"""

from __future__ import annotations

import re

import torch

# transformers block names -> timm's; the families never share a name with different meanings
_LAYER = {"norm1": "norm1", "norm2": "norm2", "layernorm_before": "norm1", "layernorm_after": "norm2",
          "layer_norm1": "norm1", "layer_norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
          "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
          "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
          "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj", "self_attn.out_proj": "attn.proj",
          "mlp.up_proj": "mlp.fc1", "mlp.down_proj": "mlp.fc2"}
# DINOv3 in timm is an Eva: other names for the layer scales, and q/v biases apart (its k has none)
_EVA = {"layer_scale1.lambda1": "gamma_1", "layer_scale2.lambda1": "gamma_2", "attention.q_proj.bias": "attn.q_bias",
        "attention.v_proj.bias": "attn.v_bias"}
_QKV = (("attention.attention.query", "attention.attention.key", "attention.attention.value"),  # hub files
        ("attention.q_proj", "attention.k_proj", "attention.v_proj"),  # transformers >= 5
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))  # SigLIP
_BLOCK = re.compile(r"^(?:encoder\.|model\.)?layers?\.(\d+)\.(.+)$")
_WRAPPERS = ("vit.", "vision_model.")  # ViTMAEForPreTraining's encoder, SiglipModel's / SiglipVisionModel's tower
_UNUSED = ("decoder.", "text_model.", "head.", "logit_scale", "logit_bias", "embeddings.mask_token")  # MAE's pixel
# decoder, SigLIP's text tower and pooling head, the masked-modelling token: never part of the RAE encoder


def is_hf_layout(state: dict[str, torch.Tensor]) -> bool:
    return any(key.removeprefix(w).startswith("embeddings.") for key in state for w in ("", *_WRAPPERS))


def hf_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any of the four families' transformers state dicts in timm's layout (`vit_*_reg4_dinov2`,
    `vit_*_siglip_*`, `vit_*_patch16_224` for MAE, `vit_*_dinov3_qkvb`)."""
    state = {_unwrap(k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(_UNUSED)}
    rotary = "embeddings.register_tokens" in state and "embeddings.position_embeddings" not in state  # DINOv3
    out = _embeddings(state)
    for key in ("layernorm", "post_layernorm"):  # the final norm (its affine is dropped by the encoder)
        for suffix in ("weight", "bias"):
            if f"{key}.{suffix}" in state:
                out[f"norm.{suffix}"] = state.pop(f"{key}.{suffix}")
    blocks: dict[int, dict[str, torch.Tensor]] = {}
    for key in [k for k in state if _BLOCK.match(k)]:
        index, rest = _BLOCK.match(key).groups()
        blocks.setdefault(int(index), {})[rest] = state.pop(key)
    for i, block in sorted(blocks.items()):
        for names in _QKV:
            for suffix in ("weight", "bias"):
                if all(f"{n}.{suffix}" in block for n in names):
                    out[f"blocks.{i}.attn.qkv.{suffix}"] = torch.cat([block.pop(f"{n}.{suffix}") for n in names])
        for rest, value in block.items():
            names = {**_LAYER, **_EVA} if rotary else _LAYER
            src = next((s for s in names if rest.startswith(s + ".") or rest == s), None)
            out[f"blocks.{i}.{names[src]}{rest[len(src):]}" if src else f"blocks.{i}.{rest}"] = value
    return {**out, **state}


def _unwrap(key: str) -> str:
    for wrapper in _WRAPPERS:
        key = key.removeprefix(wrapper)
    return key


def _embeddings(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tokens, positions and the patch projection, popped from `state`."""
    out = {}
    if "embeddings.register_tokens" in state and "embeddings.position_embeddings" not in state:
        out["cls_token"] = state.pop("embeddings.cls_token")  # DINOv3: rotary positions, no table
        out["reg_token"] = state.pop("embeddings.register_tokens")
    elif "embeddings.register_tokens" in state:
        # DINOv2: timm adds positions to the patches only; the CLS position is folded into the CLS token
        pos = state.pop("embeddings.position_embeddings")
        out["cls_token"] = state.pop("embeddings.cls_token") + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
        out["reg_token"] = state.pop("embeddings.register_tokens")
    elif "embeddings.position_embedding.weight" in state:  # SigLIP: no CLS token, a table of patch positions
        out["pos_embed"] = state.pop("embeddings.position_embedding.weight")[None]
    elif "embeddings.position_embeddings" in state:  # MAE: the CLS row stays in the table, as in timm's ViT
        out["cls_token"] = state.pop("embeddings.cls_token")
        out["pos_embed"] = state.pop("embeddings.position_embeddings")
    for src in ("embeddings.patch_embeddings.projection", "embeddings.patch_embedding", "embeddings.patch_embeddings"):
        for suffix in ("weight", "bias"):
            if f"{src}.{suffix}" in state:
                out[f"patch_embed.proj.{suffix}"] = state.pop(f"{src}.{suffix}")
    return out
