"""Instance ids: what is accepted and how missing ones are made."""

from __future__ import annotations

import re
import uuid

from engine.core.errors import InvalidInstanceIdError

_INSTANCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if valid: 1-64 letters, digits, '-' or '_'."""
    if not isinstance(instance_id, str) or not _INSTANCE_ID.match(instance_id):
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
