"""Payload conversion: JSON in and out, decoded by type hints."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any, TypedDict

import msgspec
import pytest

from engine.core.codec import from_json, inspect_signature, to_json
from engine.core.errors import InputDecodeError


class Item(msgspec.Struct):
    sku: str
    qty: int


@dataclasses.dataclass
class Box:
    size: str


class Quote(TypedDict):
    provider: str
    price: float


class TestToJson:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, b"null"),
            (3, b"3"),
            ({"a": [1, "x"]}, b'{"a":[1,"x"]}'),
            (Item("s1", 2), b'{"sku":"s1","qty":2}'),
            (Box("L"), b'{"size":"L"}'),
        ],
    )
    def test_encodes_supported_values(self, value: Any, expected: bytes) -> None:
        """Structs, dataclasses and JSON values encode to compact JSON."""
        assert expected == bytes(to_json(value))

    def test_raw_passes_through(self) -> None:
        """Already-encoded JSON is not encoded again."""
        raw = msgspec.Raw(b'{"k":1}')

        assert raw is to_json(raw)

    def test_unencodable_value_names_the_type(self) -> None:
        """An object JSON cannot express raises TypeError naming its type."""
        with pytest.raises(TypeError, match="cannot encode object"):
            to_json(object())


class TestFromJson:
    @pytest.mark.parametrize(
        ("data", "type_", "expected"),
        [
            (b'{"sku":"s1","qty":2}', Item, Item("s1", 2)),
            (b'{"size":"L"}', Box, Box("L")),
            (b'{"provider":"dhl","price":3.5}', Quote, {"provider": "dhl", "price": 3.5}),
            (b"7", int, 7),
            (b"", Any, None),
        ],
    )
    def test_decodes_to_the_hint(self, data: bytes, type_: Any, expected: Any) -> None:
        """The type hint decides what the JSON becomes."""
        assert expected == from_json(msgspec.Raw(data), type_)

    def test_mismatch_names_the_field_and_what(self) -> None:
        """A value of the wrong type is reported with its JSON path and the payload's role."""
        with pytest.raises(InputDecodeError) as caught:
            from_json(b'{"sku":"s1","qty":"two"}', Item, what="input of activity 'reserve'")

        assert "input of activity 'reserve' does not match Item" in str(caught.value)
        assert "$.qty" in str(caught.value)

    def test_invalid_json_is_reported(self) -> None:
        """Bytes that are not JSON raise InputDecodeError."""
        with pytest.raises(InputDecodeError, match="not valid JSON"):
            from_json(b"{nope", Item)


class TestInspectSignature:
    def test_reads_input_and_output_types(self) -> None:
        """fn(ctx, input: T) -> R gives T and R."""

        def activity(ctx: Any, item: Item) -> Box:
            raise NotImplementedError

        assert (True, Item, Box) == _parts(inspect_signature(activity))

    def test_context_only_function_takes_no_input(self) -> None:
        """fn(ctx) takes no input."""

        def activity(ctx: Any) -> None:
            raise NotImplementedError

        assert (False, Any, Any) == _parts(inspect_signature(activity))

    def test_generator_output_is_plain_json(self) -> None:
        """A generator workflow's return hint is not used to decode its result."""

        def workflow(ctx: Any, n: int) -> Generator[Any, Any, int]:
            yield None
            return n

        assert (True, int, Any) == _parts(inspect_signature(workflow))

    def test_function_without_context_is_refused(self) -> None:
        """A function without a context parameter cannot be a workflow or activity."""

        def nothing() -> None:
            raise NotImplementedError

        with pytest.raises(TypeError, match="context"):
            inspect_signature(nothing)


def _parts(signature: Any) -> tuple[Any, Any, Any]:
    return (signature.takes_input, signature.input_type, signature.output_type)
