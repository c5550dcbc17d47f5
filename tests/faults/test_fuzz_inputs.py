"""Property-based: random bytes and random JSON at the start and inbox subjects."""

from __future__ import annotations

import asyncio
import json
import re

import nats
import pytest
from faultkit import TALLY, stream_messages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_start_like = st.fixed_dictionaries(
    {}, optional={"instance_id": _json | st.text(max_size=70), "input": _json}
)
_bodies = st.binary(max_size=64) | _json.map(lambda v: json.dumps(v).encode()) | _start_like.map(
    lambda v: json.dumps(v).encode()
)


def _start_is_invalid(body: bytes) -> bool:
    """Independent oracle: would the worker dead-letter this start event for 'echo'?"""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=lambda c: 1 / 0)
    except (UnicodeDecodeError, ValueError, ZeroDivisionError):
        return True
    if not isinstance(value, dict) or set(value) - {"instance_id", "input"}:
        return True  # not an object, or fields a start does not have (a misspelt "id")
    iid = value.get("instance_id")
    if iid is None or iid == "":
        return False
    return not (isinstance(iid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", iid))


_inbox_like = st.fixed_dictionaries(
    {}, optional={"instance_id": _json, "events": _json, "execution_id": _json}
)
_inbox_bodies = _bodies | _inbox_like.map(lambda v: json.dumps(v).encode())


def _inbox_is_invalid(body: bytes) -> bool:
    """Independent oracle: would the worker dead-letter this body as a WorkItem?"""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=lambda c: 1 / 0)
    except (UnicodeDecodeError, ValueError, ZeroDivisionError):
        return True
    if not isinstance(value, dict) or not isinstance(value.get("instance_id"), str):
        return True
    if not isinstance(value.get("execution_id", ""), str):
        return True
    return value.get("events", []) != []


def _run_property(strategy, one, loop: asyncio.AbstractEventLoop) -> None:
    """Run ``one(body)`` on ``loop`` for each hypothesis example (called in a thread)."""

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=strategy)
    def check(body: bytes) -> None:
        asyncio.run_coroutine_threadsafe(one(body), loop).result(timeout=60)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["start", "inbox"])
async def test_random_bodies_never_stop_the_worker(nats_url, prefix, client, workers, target):
    """Every invalid random body sent to the start (or a finished instance's inbox) subject adds
    exactly one dead letter, valid ones are used or dropped, and afterwards the same worker is
    alive and completes a valid workflow."""
    orch = await workers.spawn(nats_url, prefix, "orch", "--workflows")
    await client.schedule_new_workflow("echo", input=0, instance_id="done-1")
    await client.wait_for_workflow_completion("done-1", timeout=20)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sent = {"invalid": 0, "n": 0}
    subject = f"{prefix}.start.echo" if target == "start" else f"{prefix}.inbox.done-1"
    oracle = _start_is_invalid if target == "start" else _inbox_is_invalid

    async def one(body: bytes) -> None:
        sent["n"] += 1
        sent["invalid"] += oracle(body)
        await js.publish(subject, body)
        # Work is taken in order, so once a later start completed, the body was handled.
        marker = f"marker-{sent['n']}"
        await js.publish(f"{prefix}.start.echo", json.dumps({"instance_id": marker}).encode())
        await client.wait_for_workflow_completion(marker, timeout=20)
        dead = await stream_messages(nc, f"{prefix.upper()}_DEADLETTER")
        assert sent["invalid"] == dead, body

    try:
        strategy = _bodies if target == "start" else _inbox_bodies
        await asyncio.to_thread(_run_property, strategy, one, asyncio.get_running_loop())
        TALLY.bad_inputs += sent["invalid"]
        TALLY.dead_lettered += await stream_messages(nc, f"{prefix.upper()}_DEADLETTER")
        final = await client.schedule_new_workflow("echo", input="after")
        state = await client.wait_for_workflow_completion(final, timeout=20)
    finally:
        await nc.close()
    assert '"after"' == state.serialized_output
    assert orch.alive
