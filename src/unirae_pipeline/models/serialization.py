"""Model files as safetensors: weights plus metadata (config, shapes, encoder fingerprint), each value stored as its
JSON text. `ModelFile` is the one type every stage hands over; the Kedro dataset does the JSON."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import CHECKSUM, verify_safetensors

# what a model file can hold: its catalog entry says which, and the reader checks it
KINDS = ("dit", "decoder", "stats", "extractor")


@dataclass(frozen=True)
class ModelFile:
    """One model file: what it holds (`kind`), its tensors and its metadata as decoded JSON values. A file without
    tensors (`empty`) says that a stage had nothing to train (train_guide with `guide.source: snapshot`)."""

    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model file kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def of(cls, kind: str, model: nn.Module, /, **meta: Any) -> ModelFile:
        """A model's weights (detached CPU copies) with its metadata (which may hold a `kind` of its own: the feature
        network of an extractor file)."""
        return cls(kind, {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}, meta)

    @classmethod
    def decode(cls, kind: str, tensors: dict[str, torch.Tensor], strings: dict[str, str], source: str) -> ModelFile:
        """The file's string metadata decoded; `source` (its path) names it in the error."""
        try:
            return cls(kind, tensors, {k: json.loads(v) for k, v in strings.items()})
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: metadata is not this pipeline's (not JSON: {err})") from None

    def encode(self) -> dict[str, str]:
        """The string metadata safetensors stores: each value's JSON text."""
        return {k: json.dumps(v) for k, v in self.meta.items()}

    @property
    def empty(self) -> bool:
        return not self.tensors

    def expect(self, kind: str) -> ModelFile:
        """This file, after checking that it holds a `kind` (a catalog entry pointed at the wrong file fails here)."""
        if self.kind != kind:
            raise ValueError(f"expected a {kind} model file, got a {self.kind} one: check the catalog entry's file")
        return self

    def check_finite(self, where: str) -> ModelFile:
        """This file, after checking that every float tensor is finite: NaN or Inf weights or statistics are refused
        before they are written (`where`: the file), never handed on as a result."""
        bad = {k: int((~torch.isfinite(v)).sum()) for k, v in self.tensors.items() if v.is_floating_point()}
        bad = {k: n for k, n in bad.items() if n}
        if bad:
            first, total = next(iter(bad)), sum(bad.values())
            raise FloatingPointError(f"{where}: refused to write a {self.kind} model file holding {total:,} "
                                     f"non-finite values in {len(bad)} tensor(s) (first: {first!r}); the stage that "
                                     "made it diverged or read non-finite inputs")
        return self

    def load_into(self, model: nn.Module) -> nn.Module:
        """`model` with this file's weights (strict), in eval mode."""
        return load_strict(model, self.tensors, f"{self.kind} model file").eval()


def digest(*files: ModelFile) -> str:
    """A hash of the weights and metadata of model files: what a cached result made from them depends on."""
    h = hashlib.sha256()
    for file in files:
        h.update(json.dumps(file.encode(), sort_keys=True).encode())
        for name in sorted(file.tensors):
            h.update(name.encode())
            h.update(file.tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


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


def read_model_file(path: str | Path, kind: str, param: str) -> ModelFile:
    """A model file this pipeline wrote (.safetensors), in one read; `param` names where it came from in errors."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"{param}: model file {str(path)!r} not found")
    verify_safetensors(path, restore(path))
    with safe_open(str(path), framework="pt") as f:
        strings = {k: v for k, v in (f.metadata() or {}).items() if k != CHECKSUM}
        return ModelFile.decode(kind, {k: f.get_tensor(k) for k in f.keys()}, strings, str(path))


def restore(path: str | Path) -> str:
    """How to get a damaged output back."""
    return (f"restore it with `dvc checkout {path}` (DVC's cache keeps the committed copy) or rerun the stage that "
            "writes it (`dvc repro -f -s <stage>`)")


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], param: str) -> nn.Module:
    """The one strict loader: load_state_dict(strict=True) with errors that name the params key and the first
    missing, unknown or wrongly shaped keys."""
    expected = check_keys(model, state, param)
    wrong = [(k, tuple(v.shape)) for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{param}: shape mismatch for {wrong[:8]}")
    model.load_state_dict(state, strict=True)
    return model
