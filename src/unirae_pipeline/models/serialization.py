"""Model files as safetensors: weights plus JSON metadata (config, shapes, encoder fingerprint)."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

Blob = tuple[dict[str, torch.Tensor], dict[str, str]]


def to_blob(model: nn.Module, **meta: Any) -> Blob:
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    return tensors, {k: json.dumps(v) for k, v in meta.items()}


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
