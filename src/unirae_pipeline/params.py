"""Typed params: a params.yaml group becomes a validated dataclass, errors naming the key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, TypeVar

T = TypeVar("T")


def build(cls: type[T], params: Any, name: str) -> T:
    """cls(**params) with errors that name the params key instead of a dataclass signature."""
    if not isinstance(params, dict):
        raise ValueError(f"params {name!r} must be a mapping, got {type(params).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = set(params) - fields, {f for f in fields if f not in params} - _defaulted(cls)
    if unknown or missing:
        raise ValueError(f"params {name!r}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    return cls(**params)


def _defaulted(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def run_key(**parts: Any) -> str:
    """A short hash of everything a run depends on: the name of its resume checkpoints or sample shards."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
