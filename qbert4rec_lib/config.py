"""Frozen dataclass configs: validation, JSON round-trip and dotted overrides.

Every stage has one frozen ``@dataclass`` config (in its own module). This module holds the
helpers they share: :func:`check_config` (called by every config's ``__post_init__``: each field's
type, and its range or choices, with a one-line :class:`ConfigError` naming ``Class.field`` and
what is allowed), :func:`to_dict` / :func:`from_dict` for the JSON dumped beside every artifact,
and :func:`override` / :func:`override_path` for ``key=value`` overrides from the CLI or a
papermill parameter set (parsed and type-checked against the field's default, as minGPT's
configurator does).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import math
import numbers
from typing import Any, Mapping, Sequence, TypeVar

T = TypeVar("T")

__all__ = ["ConfigError", "ConfigTypeError", "check_config", "to_dict", "from_dict", "override", "override_path",
           "seed_everything", "torch_threads"]


class ConfigError(ValueError):
    """A config value out of its range or choices. The message names ``Class.field`` and what is allowed."""


class ConfigTypeError(ConfigError, TypeError):
    """A config value of the wrong type (also a ``TypeError``)."""


_INF = float("inf")


def _interval(spec: str) -> tuple[float, bool, float, bool]:
    """``"[1, inf)"`` -> (1, True, inf, False): bounds and whether each is included."""
    text = spec.replace(" ", "")
    if text[0] not in "[(" or text[-1] not in "])" or "," not in text:
        raise ValueError(f"bad interval {spec!r}; write e.g. '[1, inf)' or '(0, 1]'")
    lo, hi = text[1:-1].split(",")
    return float(lo), text[0] == "[", float(hi), text[-1] == "]"


def _describe(spec: str) -> str:
    lo, lo_in, hi, hi_in = _interval(spec)
    fmt = lambda x: str(int(x)) if float(x).is_integer() else str(x)  # noqa: E731
    if hi == _INF:
        return f"{'>=' if lo_in else '>'} {fmt(lo)}"
    return f"in {'[' if lo_in else '('}{fmt(lo)}, {fmt(hi)}{']' if hi_in else ')'}"


def _in_interval(value: float, spec: str) -> bool:
    lo, lo_in, hi, hi_in = _interval(spec)
    return (value > lo or (lo_in and value == lo)) and (value < hi or (hi_in and value == hi))


def _kind(field: dataclasses.Field) -> tuple[str, bool, str | None]:
    """(kind of the field's value, None allowed, element kind of a tuple) from its default and annotation."""
    annotation = (field.type if isinstance(field.type, str)
                  else field.type.__name__ if isinstance(field.type, type) else str(field.type))
    annotation = annotation.replace(" ", "")
    nullable = "None" in annotation.split("|")
    default = field.default if field.default is not dataclasses.MISSING else None
    element = None
    if annotation.startswith("tuple[") and annotation.endswith(",...]"):
        element = annotation[len("tuple["):-len(",...]")]
    if default is None:  # ``str | None = None``: the kind comes from the annotation
        base = next((a for a in annotation.split("|") if a != "None"), "")
        return ("tuple" if base.startswith("tuple") else base), True, element
    if dataclasses.is_dataclass(default):
        return type(default).__name__, nullable, None
    if isinstance(default, tuple) and element is None and default:  # ``tuple = (256, 128)``: elements like these
        kinds = {_scalar_kind(v) for v in default}
        element = kinds.pop() if len(kinds) == 1 else None
    kind = _scalar_kind(default) or ("tuple" if isinstance(default, tuple) else "")
    return kind, nullable, element  # "": an unknown kind, not checked


def _scalar_kind(value: Any) -> str | None:
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            return kind
    return None


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool) or type(value).__name__ == "bool_"
    if kind == "int":
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return True


def check_config(cfg: Any, ranges: Mapping[str, str] | None = None,
                 choices: Mapping[str, Sequence[Any]] | None = None) -> None:
    """Validate every field of a (frozen) dataclass config; raise :class:`ConfigError` naming the field.

    Types come from each field's default (or its annotation when the default is ``None``): an int field
    takes an int (not a bool), a float field any real number (finite), a bool field a bool, a str field a
    str, a tuple field a tuple (a list is converted: JSON and YAML give lists) whose elements match a
    ``tuple[int, ...]``-style annotation, a nested config field an instance of its class. ``ranges`` maps a
    field (or, for a tuple, each of its elements) to an interval such as ``"[1, inf)"`` or ``"(0, 1]"``;
    ``choices`` to the allowed values (for a tuple, of each element). Int fields not in ``ranges`` must be
    ``>= 0``, so fields added later are validated too.
    """
    ranges, choices = dict(ranges or {}), dict(choices or {})
    cls = type(cfg).__name__
    names = {f.name for f in dataclasses.fields(cfg)}
    for name in list(ranges) + list(choices):
        if name not in names:
            raise ValueError(f"check_config({cls}): no field {name!r}")  # a programming error in the config
    for field in dataclasses.fields(cfg):
        name, value = field.name, getattr(cfg, field.name)
        kind, nullable, element = _kind(field)
        where = f"{cls}.{name}"
        what = f"{where}: every element" if kind == "tuple" else where
        if value is None:
            if nullable or not kind:
                continue
            raise ConfigTypeError(f"{where} must be a {kind}, got None")
        if kind == "tuple" and isinstance(value, list):
            value = tuple(value)
            object.__setattr__(cfg, name, value)
        if kind == "tuple":
            if not isinstance(value, tuple):
                raise ConfigTypeError(f"{where} must be a tuple, got {type(value).__name__} ({value!r})")
            items = value
            if element and not all(_type_ok(v, element) for v in items):
                raise ConfigTypeError(f"{where} must hold {element}s, got {value!r}")
        elif kind and kind not in ("bool", "int", "float", "str"):  # a nested config
            if type(value).__name__ != kind:
                raise ConfigTypeError(f"{where} must be a {kind}, got {type(value).__name__}")
            continue
        elif kind and not _type_ok(value, kind):
            article = "an" if kind[0] in "aeiou" else "a"
            raise ConfigTypeError(f"{where} must be {article} {kind}, got {type(value).__name__} ({value!r})")
        else:
            items = (value,)
        number_kind = element if kind == "tuple" else kind
        for v in items:
            if number_kind == "float" and not math.isfinite(v):
                raise ConfigError(f"{what} must be a finite number, got {value!r}")
            spec = ranges.get(name, "[0, inf)" if number_kind == "int" else None)
            if spec is not None and number_kind in ("int", "float") and not _in_interval(v, spec):
                raise ConfigError(f"{what} must be {'an int' if number_kind == 'int' else 'a number'} "
                                  f"{_describe(spec)}, got {value!r}")
            if name in choices and v not in choices[name]:
                allowed = ", ".join(repr(c) for c in choices[name])
                raise ConfigError(f"{what} must be one of {allowed}, got {v!r}")


def to_dict(cfg: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict) -> T:
    """Build ``cls`` from a dict, rejecting unknown keys with a clear error."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise KeyError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k) if _has_defaults(cls) else None
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        kwargs[k] = v
    return cls(**kwargs)


def _has_defaults(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
        for f in dataclasses.fields(cls)
    )


def override(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that parses strings (``"0.1"``, ``"(1, 2)"``) to the field's type.

    A value of the wrong type (``levels=True`` for an int, ``"wide"`` for an int) is a :class:`ConfigTypeError`
    and an unknown field a ``KeyError``, each naming the field; the new config's ``__post_init__`` then checks
    ranges. A field whose default is ``None`` keeps a string that is not a Python literal as a string.
    """
    names = {f.name for f in dataclasses.fields(cfg)}
    cls = type(cfg).__name__
    parsed = {}
    for k, v in changes.items():
        if k not in names:
            raise KeyError(f"{cls} has no field {k!r}; known: {sorted(names)}")
        cur = getattr(cfg, k)
        if isinstance(v, str) and not isinstance(cur, str):
            try:
                v = ast.literal_eval(v.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                if cur is not None:
                    raise ConfigTypeError(f"{cls}.{k}: cannot parse {v!r} as a {type(cur).__name__}") from exc
        if isinstance(cur, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(cur, tuple) and isinstance(v, list):
            v = tuple(v)
        if cur is not None and v is not None:
            wrong = (not isinstance(v, type(cur)) or (isinstance(v, bool) and not isinstance(cur, bool))
                     or (isinstance(cur, bool) and not isinstance(v, bool)))
            if wrong:
                raise ConfigTypeError(f"{cls}.{k}: expected {type(cur).__name__}, got {type(v).__name__} ({v!r})")
        parsed[k] = v
    return dataclasses.replace(cfg, **parsed)


def override_path(cfg: T, dotted: str, value: Any) -> T:
    """Override a field given as a dotted path, ``"fusion.width"`` or ``"max_len"``; returns the new config.

    Every step but the last must name a nested config: ``"max_len.x"`` is a :class:`ConfigError` saying that
    ``max_len`` is a plain field, and an unknown name a ``KeyError`` listing the known ones.
    """
    head, _, rest = dotted.strip().partition(".")
    if not rest:
        return override(cfg, **{head: value})
    names = {f.name for f in dataclasses.fields(cfg)}
    if head not in names:
        raise KeyError(f"{type(cfg).__name__} has no section {head!r}; known: {sorted(names)}")
    section = getattr(cfg, head)
    if not dataclasses.is_dataclass(section):
        kind = type(section).__name__
        raise ConfigError(f"{type(cfg).__name__}.{head} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} field, not a section; "
                          f"set it with {head}=VALUE")
    return dataclasses.replace(cfg, **{head: override_path(section, rest, value)})


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU runs are then deterministic)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def torch_threads(n: int):
    """Use ``n`` torch CPU threads inside the block (0 = leave as is); the previous setting is restored.

    The kit's small models are dominated by per-operation overhead: on a 2-core machine one thread
    was several times faster than two (and far steadier when other processes share the cores), so
    stages 1 and 2 default to ``threads=1`` and feature building exposes ``FeatureConfig.torch_threads``.
    """
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
