"""Typed params: a params.yaml group becomes a validated, frozen dataclass (its sub-groups too), errors naming the
key; `plain` turns one back into the params.yaml values it was built from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def build(cls: type[T], params: Any, name: str) -> T:
    """cls(**params), the fields typed as a dataclass (or `dataclass | None`) built from their sub-mappings, with
    errors that name the params key instead of a dataclass signature. `name` is the group's dotted key ("" for the
    root of params.yaml)."""
    if not isinstance(params, dict):
        raise ValueError(f"params {name or 'params.yaml'!r} must be a mapping, got {type(params).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = set(params) - fields, {f for f in fields if f not in params} - _defaulted(cls)
    if unknown or missing:
        raise ValueError(f"params {name or 'params.yaml'!r}: unknown keys {sorted(unknown)}, "
                         f"missing keys {sorted(missing)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: _field(hints[key], value, f"{name}.{key}" if name else key) for key, value in params.items()})


def _field(hint: Any, value: Any, name: str) -> Any:
    """A sub-group's value: built when its type is a dataclass; None where the type allows it."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    groups = [t for t in options if dataclasses.is_dataclass(t)]
    if not groups or (value is None and type(None) in options):
        return value
    return build(groups[0], value, name)


def _defaulted(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def plain(value: Any) -> Any:
    """A built group back as the params.yaml values it came from (tuples as lists); anything else unchanged."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value)))
    return value


def run_key(**parts: Any) -> str:
    """A short hash of everything a run depends on: the name of its resume checkpoints or sample shards."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
