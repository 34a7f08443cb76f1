"""Typed params: a params.yaml group becomes a validated, frozen dataclass (its sub-groups too), errors naming the
key; `plain` turns one back into the params.yaml values it was built from; `read_params` reads the file."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class _PlainLoader(yaml.SafeLoader):
    """Safe YAML without anchors and aliases: Hydra writes none, and nine nested aliases expand a few lines to
    billions of values (a "billion laughs" file exhausts memory before any check can name a key)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ValueError(f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                             "read in params files; write the values out (Hydra's composition never writes them)")
        return super().compose_node(parent, index)


def read_params(path: str | Path) -> dict:
    """A params file (params.yaml) as plain YAML values; a syntax error, an alias or a non-mapping root is a
    ValueError naming the file."""
    try:
        params = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_PlainLoader)  # noqa: S506 - a SafeLoader
    except (ValueError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: {err}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of params groups, got {type(params).__name__}")
    return params


def build(cls: type[T], params: Any, name: str) -> T:
    """cls(**params), the fields typed as a dataclass (or `dataclass | None`) built from their sub-mappings, with
    errors that name the params key instead of a dataclass signature. `name` is the group's dotted key ("" for the
    root of params.yaml)."""
    hints = typing.get_type_hints(cls)
    if not isinstance(params, dict):
        meant = [f"{name}.{key}={params}" for key, hint in hints.items()
                 if typing.get_origin(hint) is typing.Literal and params in typing.get_args(hint)]
        raise ValueError(f"params {name or 'params.yaml'!r} must be a mapping, got {params!r}"
                         + (f" (did you mean {meant[0]}?)" if meant else ""))
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = set(params) - fields, {f for f in fields if f not in params} - _defaulted(cls)
    if unknown:  # one line: the full key, and the existing key closest to it
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, sorted(fields - set(params)) or sorted(fields), n=1)
        full = f"{name}.{key}" if name else key
        raise ValueError(f"params {full!r} is not a key of params.yaml"
                         + (f" (did you mean {name + '.' if name else ''}{close[0]}?)" if close else "")
                         + (f"; also unknown: {sorted(unknown)[1:]}" if len(unknown) > 1 else ""))
    if missing:
        raise ValueError(f"params {name or 'params.yaml'!r}: missing keys {sorted(missing)}")
    values = {key: _field(hints[key], value, f"{name}.{key}" if name else key) for key, value in params.items()}
    try:
        return cls(**values)
    except ValueError as err:  # a check of the group's own: say which group, when it does not
        if name and name not in str(err):
            raise ValueError(f"params {name!r}: {err}") from None
        raise


class Tagged:
    """A params group that is one of several dataclasses told apart by their `arch` field (a one-value Literal), as
    `dit` is. Nodes annotate such a group by this base: Kedro validates a dataclass parameter but not a union of them,
    and warns at every run that it passes one as a raw mapping (here it never does: the hook hands the built tree)."""


def build_typed(hint: Any, value: Any, name: str) -> Any:
    """A value checked against a type hint: a dataclass (or a union of them) built from its mapping, errors naming
    the params key `name`."""
    return _field(hint, value, name)


def _field(hint: Any, value: Any, name: str) -> Any:
    """A field's value, checked against its annotation: a sub-group (a dataclass type) is built from its mapping; of a
    union of groups, the one whose `arch` (a one-value Literal) the mapping names (absent: the first)."""
    options = _options(hint)
    groups = [t for t in options if dataclasses.is_dataclass(t)]
    if len(groups) > 1 and isinstance(value, dict):
        tags = {typing.get_args(typing.get_type_hints(g)["arch"])[0]: g for g in groups}
        arch = value.get("arch", next(iter(tags)))
        if arch not in tags:
            raise ValueError(f"params '{name}.arch' must be one of {', '.join(map(repr, tags))}, got {arch!r}")
        return build(tags[arch], value, name)
    if groups and not (value is None and type(None) in options):
        return build(groups[0], value, name)
    ok, wanted = _matches(hint, value)
    if not ok:
        raise ValueError(f"params {name!r} must be {wanted}, got {value!r}")
    return value


def _options(hint: Any) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _matches(hint: Any, value: Any) -> tuple[bool, str]:
    """Whether a YAML value (str, int, float, bool, None, list, mapping) has the annotated type, and that type in
    words. Numbers are not converted: `lr: 1` stays the int the run keys were made from."""
    if len(options := _options(hint)) > 1:
        found = [_matches(option, value) for option in options]
        return any(ok for ok, _ in found), " or ".join(words for _, words in found)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is type(None):
        return value is None, "null"
    if hint is bool:
        return isinstance(value, bool), "true or false"
    if hint is int:
        return number and isinstance(value, int), "an integer"
    if hint is float:  # NaN and infinity pass YAML (.nan, .inf) and every range check (NaN compares false)
        return number and (isinstance(value, int) or math.isfinite(value)), "a finite number"
    if hint is str:
        return isinstance(value, str), "a string"
    if origin is typing.Literal:
        words = " or ".join(map(repr, args)) if len(args) < 3 else f"one of {', '.join(map(repr, args))}"
        return any(value == a and type(value) is type(a) for a in args), words
    if origin is tuple:  # tuple[int, ...] (any length) or tuple[float, float]
        items = args[:1] if len(args) == 2 and args[1] is Ellipsis else args
        ok = isinstance(value, (list, tuple)) and (items is not args or len(value) == len(args))
        ok = ok and all(_matches(items[min(i, len(items) - 1)], v)[0] for i, v in enumerate(value))
        plural = {int: "integers", float: "numbers", str: "strings"}.get(items[0], str(items[0]))
        return ok, f"a list of {plural}" if items is not args else f"a list of {len(args)} {plural}"
    if hint is dict or origin is dict:
        return isinstance(value, dict), "a mapping"
    return True, str(hint)


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
