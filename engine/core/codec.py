"""Payload conversion: Python values <-> JSON, decoded by the callee's type hints."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from engine.core.errors import InputDecodeError
from engine.core.events import NULL

_encoder = msgspec.json.Encoder()
_NO_TYPE: Any = Any


def to_json(value: object) -> msgspec.Raw:
    """Encode a value (Struct, dataclass, TypedDict, primitive, ...) as raw JSON."""
    if isinstance(value, msgspec.Raw):
        return value
    if value is None:
        return NULL
    try:
        return msgspec.Raw(_encoder.encode(value))
    except TypeError as exc:
        raise TypeError(
            f"cannot encode {type(value).__name__} as JSON ({exc}); use a msgspec Struct, "
            "dataclass, TypedDict or JSON-compatible value"
        ) from exc


def from_json(raw: msgspec.Raw | bytes, type_: Any = _NO_TYPE, *, what: str = "payload") -> Any:
    """Decode raw JSON to ``type_`` (Any: plain JSON values).

    Raises:
        InputDecodeError: the JSON does not fit the type; the message names the field.
    """
    data = bytes(raw) if isinstance(raw, msgspec.Raw) else raw
    if not data:
        data = b"null"
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise InputDecodeError(f"{what} does not match {_type_name(type_)}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InputDecodeError(f"{what} is not valid JSON: {exc}") from None


def _type_name(type_: Any) -> str:
    return getattr(type_, "__name__", None) or repr(type_)


NO_DEFAULT: Any = inspect.Parameter.empty
"""``Signature.input_default`` of an input parameter without a default."""


class Signature(msgspec.Struct, frozen=True):
    """What the engine needs to know of a workflow or activity function's signature."""

    takes_input: bool
    input_type: Any
    output_type: Any
    input_default: Any = NO_DEFAULT
    """The input parameter's default, used when a call carries no input (JSON null)."""

    def input_of(self, raw: msgspec.Raw, *, what: str) -> Any:
        """The input argument of a call carrying ``raw``: decoded to the input type, or the
        parameter's default when there is no input (absent and ``null`` are the same on the
        wire).

        Raises:
            InputDecodeError: the JSON does not fit the input type.
        """
        if self.input_default is not NO_DEFAULT and bytes(raw) in (b"", b"null"):
            return self.input_default
        return from_json(raw, self.input_type, what=what)


def inspect_signature(fn: Callable[..., Any]) -> Signature:
    """Read ``fn(ctx, input) -> output``'s input and output types from its hints."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TypeError(
            f"{fn.__qualname__} must take a context as its first parameter: fn(ctx[, input])"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to plain JSON
        hints = {}
    takes_input = len(params) >= 2
    input_type = hints.get(params[1].name, Any) if takes_input else Any
    input_default = params[1].default if takes_input else NO_DEFAULT
    output_type = hints.get("return", Any)
    if output_type is None or output_type is type(None):
        output_type = Any
    if inspect.isgeneratorfunction(fn) or _is_generator_type(output_type):
        output_type = Any
    return Signature(
        takes_input=takes_input,
        input_type=input_type,
        output_type=output_type,
        input_default=input_default,
    )


def _is_generator_type(t: Any) -> bool:
    origin = typing.get_origin(t)
    return origin is not None and getattr(origin, "__name__", "") in {"Generator", "Iterator"}
