"""Calling the HTTP API in tests, with every response checked against the OpenAPI document."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientSession
from jsonschema import Draft202012Validator

from engine.http import OPENAPI


def _template_of(path: str) -> str:
    """The OpenAPI path template a concrete path matches (the most literal one wins)."""
    matches = []
    for template in OPENAPI["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            matches.append((template.count("{"), template))
    assert matches, f"{path} is not in the OpenAPI document"
    return min(matches)[1]


def check_against_openapi(method: str, path: str, status: int, body: bytes) -> Any:
    """Assert the response is documented for that operation and status, and valid; its JSON."""
    template = _template_of(path.split("?", 1)[0].replace("%20", " "))
    operation = OPENAPI["paths"][template][method.lower()]
    documented = operation["responses"].get(str(status))
    assert documented is not None, f"{method} {path} answered undocumented status {status}"
    content = documented.get("content")
    if content is None:
        assert b"" == body
        return None
    value = json.loads(body)
    schema = {**content["application/json"]["schema"], "components": OPENAPI["components"]}
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(value)
    return value


@dataclass(frozen=True)
class Reply:
    """One HTTP response: status and decoded JSON body (None when empty)."""

    status: int
    body: Any


class Api:
    """Calls the served API and checks every response against the OpenAPI document."""

    def __init__(self, session: ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(self, method: str, path: str, data: bytes | str | None = None) -> Reply:
        async with self.session.request(
            method,
            self.base_url + path,
            data=data,
            headers={"Content-Type": "application/json"},
        ) as response:
            body = await response.read()
            status = response.status
        return Reply(status, check_against_openapi(method, path, status, body))

    async def post(self, path: str, data: bytes | str | None = None) -> Reply:
        return await self.call("POST", path, data)

    async def get(self, path: str) -> Reply:
        return await self.call("GET", path)
