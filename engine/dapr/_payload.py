"""Payloads as ``dapr.ext.workflow`` writes and reads them.

Dapr's Python SDK encodes every input, output and event with ``json.dumps`` and its own
encoder: default separators (``{"a": 1}``), ASCII only, dataclasses, named tuples and
``SimpleNamespace`` objects as JSON objects marked ``"__durabletask_autoobject__": true``, and
pydantic-style models (anything with ``model_dump``/``model_validate``) as plain objects. A
marked object comes back as a ``SimpleNamespace``; a workflow or activity whose input
parameter is annotated with a model class receives that model. This module does the same, so
the JSON a Dapr program stores (and the values it gets back) are what it got from Dapr.

The engine passes ``msgspec.Raw`` through untouched: encoded values travel as ``Raw``, and what
the engine decodes (plain JSON values) is turned into Dapr's values by ``revive``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable
from functools import cache
from types import SimpleNamespace, UnionType
from typing import Any

import msgspec

AUTO_SERIALIZED = "__durabletask_autoobject__"
"""The key Dapr adds to an object it encoded from a dataclass, named tuple or namespace."""


def is_model(obj: object) -> bool:
    """True if ``obj`` implements the pydantic v2 model protocol (duck-typed, as Dapr does)."""
    return is_model_class(type(obj))


def is_model_class(cls: object) -> bool:
    """True if ``cls`` has ``model_dump`` and ``model_validate``."""
    return (
        inspect.isclass(cls)
        and callable(getattr(cls, "model_dump", None))
        and callable(getattr(cls, "model_validate", None))
    )


@cache
def _dump_takes_mode(cls: type) -> bool:
    try:
        params = inspect.signature(cls.model_dump).parameters  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return False
    return "mode" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def dump_model(model: Any) -> Any:
    """A model's JSON-compatible value (``model_dump(mode="json")`` where supported)."""
    if _dump_takes_mode(type(model)):  # type: ignore[arg-type]  # classes are hashable
        return model.model_dump(mode="json")
    return model.model_dump()


def coerce_to_model(value: Any, cls: type) -> Any:
    """Build ``cls`` from a decoded payload (dict, namespace or already a ``cls``).

    Raises:
        TypeError: the payload is neither an object nor a ``cls``.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, SimpleNamespace):
        value = vars(value)
    if isinstance(value, dict):
        return cls.model_validate(value)  # type: ignore[attr-defined]
    raise TypeError(
        f"cannot make a {cls.__name__} of a {type(value).__name__}; the payload must be a JSON "
        "object"
    )


def input_model_of(fn: Callable[..., Any]) -> tuple[bool, type | None]:
    """Whether ``fn(ctx, input)`` takes an input, and the model class annotated on it (if any).

    ``Optional[Model]`` and ``Model | None`` count as ``Model``; any other annotation is ignored,
    as in Dapr (a dataclass input arrives as a ``SimpleNamespace``).
    """
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False, None
    if len(params) < 2:
        return False, None
    annotation = params[1].annotation
    if annotation is inspect.Parameter.empty:
        return True, None
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(fn).get(params[1].name, annotation)
        except Exception:  # an unresolvable forward reference: no model
            return True, None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            annotation = members[0]
    return True, annotation if is_model_class(annotation) else None


class DaprJSONEncoder(json.JSONEncoder):
    """Dapr's encoder (``InternalJSONEncoder``), plus msgspec's types as a fallback."""

    def encode(self, o: Any) -> str:
        if isinstance(o, tuple) and hasattr(o, "_fields") and hasattr(o, "_asdict"):
            o = {**o._asdict(), AUTO_SERIALIZED: True}
        return super().encode(o)

    def default(self, o: Any) -> Any:
        if is_model(o):
            return dump_model(o)
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return {**dataclasses.asdict(o), AUTO_SERIALIZED: True}
        if isinstance(o, SimpleNamespace):
            return {**vars(o), AUTO_SERIALIZED: True}
        try:  # msgspec Structs, datetimes, UUIDs, ...: what the native API accepts
            return msgspec.to_builtins(o)
        except TypeError:
            return super().default(o)


def to_json(value: Any) -> str:
    """``value`` as Dapr's JSON text.

    Raises:
        TypeError: the value has no JSON form.
        ValueError: it holds NaN or an infinity (Dapr would store invalid JSON; refused here).
    """
    return json.dumps(value, cls=DaprJSONEncoder, allow_nan=False)


def encode(value: Any) -> msgspec.Raw | None:
    """``value`` as the raw JSON the engine stores (None stays None: no payload)."""
    if value is None:
        return None
    return msgspec.Raw(to_json(value).encode())


def revive(value: Any) -> Any:
    """A plain decoded JSON value as Dapr decodes it: marked objects become namespaces."""
    if isinstance(value, dict):
        items = {k: revive(v) for k, v in value.items()}
        if items.pop(AUTO_SERIALIZED, False):
            return SimpleNamespace(**items)
        return items
    if isinstance(value, list):
        return [revive(v) for v in value]
    return value


def from_json(text: str | bytes | None) -> Any:
    """Dapr's value of a JSON text (None for no payload)."""
    if text is None or text in ("", b""):
        return None
    return revive(msgspec.json.decode(text))


def input_value(value: Any, model: type | None) -> Any:
    """The input a workflow or activity receives: revived, and made a model if annotated."""
    value = revive(value)
    if value is None or model is None:
        return value
    return coerce_to_model(value, model)
