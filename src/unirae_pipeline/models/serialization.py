"""Model files as safetensors: weights plus JSON metadata (config, shapes, encoder fingerprint)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

Blob = tuple[dict[str, torch.Tensor], dict[str, str]]


def to_blob(model: nn.Module, **meta: Any) -> Blob:
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    return tensors, {k: json.dumps(v) for k, v in meta.items()}


def blob_digest(*blobs: Blob) -> str:
    """A hash of the weights and metadata of model files: what a cached result made from them depends on."""
    h = hashlib.sha256()
    for tensors, meta in blobs:
        h.update(json.dumps(meta, sort_keys=True).encode())
        for name in sorted(tensors):
            h.update(name.encode())
            h.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def blob_meta(blob: Blob) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in blob[1].items()}


def load_weights(model: nn.Module, blob: Blob) -> nn.Module:
    model.load_state_dict(blob[0], strict=True)
    return model.eval()


def check_fingerprints(**fingerprints: str) -> str:
    """All artefacts of one run must come from the same encoder; mixing caches is an error, not garbage."""
    values = set(fingerprints.values())
    if len(values) != 1:
        raise ValueError(f"encoder fingerprints differ between artefacts: {fingerprints}; "
                         "re-run the stages downstream of cache_latents")
    return values.pop()


def read_state_dict(path: str | Path | None, param: str,
                    prefer: tuple[str, ...] = ("state_dict", "model")) -> dict[str, Any]:
    """The one reader of every weights file: .safetensors, or a torch file loaded with weights_only (tensors and
    plain containers, never code), unwrapped to the first of `prefer` it holds (training checkpoints nest the
    weights). `param` names the params key in the errors. Pretrained weights are never downloaded."""
    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"{param}: weights file {str(path)!r} not found (nothing is downloaded; "
                                "put the file there or point the parameter at it)")
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is not a plain state dict
        raise ValueError(f"{param}: {str(path)!r} is not a plain tensor state dict: {err}") from None
    for key in prefer:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def check_keys(model: nn.Module, state: dict[str, torch.Tensor], param: str) -> dict[str, torch.Tensor]:
    """`model`'s state dict, after checking that `state` has its keys and no others (naming the first that differ)."""
    expected = model.state_dict()
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        raise KeyError(f"{param}: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                       f"unknown keys {unknown[:8]}{'...' if len(unknown) > 8 else ''}")
    return expected


def read_blob(path: str | Path, param: str) -> Blob:
    """A model file this pipeline wrote (.safetensors): its tensors and metadata, in one read."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"{param}: model file {str(path)!r} not found")
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], param: str) -> nn.Module:
    """The one strict loader: load_state_dict(strict=True) with errors that name the params key and the first
    missing, unknown or wrongly shaped keys."""
    expected = check_keys(model, state, param)
    wrong = [(k, tuple(v.shape)) for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{param}: shape mismatch for {wrong[:8]}")
    model.load_state_dict(state, strict=True)
    return model
