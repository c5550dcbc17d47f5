"""Instance ids: what is accepted and how missing ones are made."""

from __future__ import annotations

import re
import uuid

from engine.core.errors import InvalidInstanceIdError

MAX_INSTANCE_ID_LENGTH = 64
_CHARACTERS = "A-Za-z0-9_-"
INSTANCE_ID_PATTERN = f"^[{_CHARACTERS}]{{1,{MAX_INSTANCE_ID_LENGTH}}}$"
"""The rule as a regular expression (the HTTP API's OpenAPI document shows it)."""
_INSTANCE_ID_CHARACTERS = re.compile(f"^[{_CHARACTERS}]+$")
_NOT_TOKEN = re.compile(f"[^{_CHARACTERS}]")


def has_instance_id_characters(text: str) -> bool:
    """True when ``text`` is one or more letters, digits, '-' or '_': the instance-id rule
    apart from its length."""
    return isinstance(text, str) and _INSTANCE_ID_CHARACTERS.match(text) is not None


def check_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if valid: 1-64 letters, digits, '-' or '_'."""
    if (
        not has_instance_id_characters(instance_id)
        or len(instance_id) > MAX_INSTANCE_ID_LENGTH
    ):
        raise InvalidInstanceIdError(
            f"invalid instance id {instance_id!r}: use 1-64 letters, digits, '-' or '_'"
        )
    return instance_id


def new_instance_id() -> str:
    """A fresh random instance id."""
    return uuid.uuid4().hex


def instance_id_for_message(origin: str, key: int | str) -> str:
    """A stable id for a start event without one: the same message yields the same id."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"jetloom:{origin}:{key}").hex


def app_token(app_id: str) -> str:
    """An application id as it appears in subjects and consumer names: characters other than
    letters, digits, '-' and '_' become '_' ('' stays '': no application)."""
    return _NOT_TOKEN.sub("_", app_id)
