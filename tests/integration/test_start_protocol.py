"""The public wire protocol (docs/protocol.md): any NATS client starts workflows with JSON."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import nats
import nats.js.errors
import pytest
import structlog
from nats.aio.msg import Msg

from engine import WorkflowRuntime, WorkflowStatus
from engine.core.events import ExecutionStarted

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# ---------------------------------------------------------------- plain NATS helpers
# These speak NATS only, as a service written in another language would: no jetloom import.


async def publish_start(
    nats_url: str, subject: str, body: bytes, headers: dict[str, str] | None = None
) -> int:
    """Publish a start event with JetStream and return its sequence in the work stream."""
    nc = await nats.connect(nats_url)
    try:
        ack = await nc.jetstream().publish(subject, body, headers=headers, timeout=10)
        return ack.seq
    finally:
        await nc.close()


async def read_dead_letters(
    nats_url: str, stream: str, subject: str, count: int, *, timeout: float = 15.0
) -> list[Msg]:
    """The first ``count`` messages on ``subject`` of the dead-letter stream, within ``timeout``."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().subscribe(subject, stream=stream, ordered_consumer=True)
        received: list[Msg] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(received) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                received.append(await sub.next_msg(timeout=left))
            except TimeoutError:
                break
        await sub.unsubscribe()
        return received
    finally:
        await nc.close()


async def has_pending_start(nats_url: str, work_stream: str, subject: str) -> bool:
    """True while an unacknowledged start event is still in the work-queue stream."""
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().get_last_msg(work_stream, subject)
        return True
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await nc.close()


# ----------------------------------------------------------------------- the app


def order_runtime(nats_url: str, prefix: str, runs: Counter[str]) -> WorkflowRuntime:
    """A runtime hosting workflow ``greet_order`` that calls activity ``shout`` once."""
    wfr = WorkflowRuntime(nats_url, prefix=prefix)

    @wfr.activity(name="shout")
    async def shout(ctx: Any, text: str) -> str:
        runs[ctx.workflow_id] += 1
        return text.upper()

    @wfr.workflow(name="greet_order")
    async def greet_order(ctx: Any, order: dict[str, Any]) -> dict[str, Any]:
        loud = await ctx.call_activity(shout, input=order["customer"])
        return {"greeting": f"HELLO {loud}", "qty": order["qty"]}

    return wfr


def start_body(instance_id: str | None = None, customer: str = "ada", qty: int = 2) -> bytes:
    """A valid start event's JSON body."""
    body: dict[str, Any] = {"input": {"customer": customer, "qty": qty}}
    if instance_id is not None:
        body["instance_id"] = instance_id
    return json.dumps(body).encode()


class TestStartFromAnyService:
    """Starting a workflow by publishing to ``<prefix>.start.<workflow>``."""

    async def test_plain_nats_start_completes(self, nats_url, prefix, client):
        """A start event published by a plain NATS client runs the workflow to its output."""
        runs: Counter[str] = Counter()
        async with order_runtime(nats_url, prefix, runs):
            await publish_start(
                nats_url, f"{prefix}.start.greet_order", start_body("order-42", "grace", 3)
            )
            state = await client.wait_for_workflow_completion("order-42", timeout=30)

        expected = ("greet_order", {"customer": "grace", "qty": 3})
        assert expected == (state.name, json.loads(state.serialized_input))
        output = {"greeting": "HELLO GRACE", "qty": 3}
        assert output == json.loads(state.serialized_output)
        assert WorkflowStatus.COMPLETED is state.runtime_status

    async def test_duplicate_start_events_run_once(self, nats_url, prefix, client):
        """The same start event published three times (once after completion) is one run."""
        runs: Counter[str] = Counter()
        subject = f"{prefix}.start.greet_order"
        async with order_runtime(nats_url, prefix, runs):
            await publish_start(nats_url, subject, start_body("order-7"))
            await publish_start(nats_url, subject, start_body("order-7"))
            await client.wait_for_workflow_completion("order-7", timeout=30)
            await publish_start(nats_url, subject, start_body("order-7"))
            # A later instance needs two workflow tasks and an activity round trip, so by
            # the time it completes the single worker has long handled the third start.
            await publish_start(nats_url, subject, start_body("order-8"))
            await client.wait_for_workflow_completion("order-8", timeout=30)
            still_pending = await has_pending_start(nats_url, f"{prefix.upper()}_WORK", subject)
            history = await client.get_history("order-7")
            state = await client.get_workflow_state("order-7")

        assert False is still_pending
        starts = [e for e in history if isinstance(e, ExecutionStarted)]
        assert [history[0]] == starts
        activity_runs = {"order-7": 1, "order-8": 1}
        assert activity_runs == dict(runs)
        assert WorkflowStatus.COMPLETED is state.runtime_status

    async def test_duplicate_start_of_a_finished_instance_changes_nothing(
        self, nats_url, prefix, client
    ):
        """A start event published again after its instance finished leaves the record as it
        was, last_updated_at included."""
        runs: Counter[str] = Counter()
        subject = f"{prefix}.start.greet_order"
        with structlog.testing.capture_logs() as logs:
            async with order_runtime(nats_url, prefix, runs):
                await publish_start(nats_url, subject, start_body("order-5"))
                finished = await client.wait_for_workflow_completion("order-5", timeout=30)
                await publish_start(nats_url, subject, start_body("order-5"))
                async with asyncio.timeout(20):
                    while not any(
                        e["event"] == "start.duplicate_ignored"
                        and e.get("instance_id") == "order-5"
                        for e in logs
                    ):
                        await asyncio.sleep(0.01)
                    while await has_pending_start(nats_url, f"{prefix.upper()}_WORK", subject):
                        await asyncio.sleep(0.01)
                after = await client.get_workflow_state("order-5")

        assert finished == after
        assert {"order-5": 1} == dict(runs)

    async def test_start_without_instance_id_gets_generated_id(self, nats_url, prefix, client):
        """A start event without instance_id runs under an id derived from its stream sequence."""
        runs: Counter[str] = Counter()
        work_stream = f"{prefix.upper()}_WORK"
        async with order_runtime(nats_url, prefix, runs):
            seq = await publish_start(nats_url, f"{prefix}.start.greet_order", start_body())
            expected_id = uuid.uuid5(uuid.NAMESPACE_URL, f"jetloom:{work_stream}:{seq}").hex
            state = await client.wait_for_workflow_completion(expected_id, timeout=30)
            listed = [s.instance_id async for s in client.list_workflows()]

        assert [expected_id] == listed
        assert WorkflowStatus.COMPLETED is state.runtime_status
        assert {expected_id: 1} == dict(runs)

    async def test_generated_id_follows_the_message_id(self, nats_url, prefix, client):
        """A start event without instance_id but with Nats-Msg-Id runs under the id derived
        from that message id (docs/protocol.md, Instance ids), known before publishing."""
        runs: Counter[str] = Counter()
        expected_id = uuid.uuid5(uuid.NAMESPACE_URL, "jetloom:msg-id:order-form-7").hex
        async with order_runtime(nats_url, prefix, runs):
            await publish_start(nats_url, f"{prefix}.start.greet_order", start_body(),
                                headers={"Nats-Msg-Id": "order-form-7"})
            state = await client.wait_for_workflow_completion(expected_id, timeout=30)

        assert WorkflowStatus.COMPLETED is state.runtime_status

    async def test_traceparent_is_recorded(self, nats_url, prefix, client):
        """The start event's traceparent header is recorded in execution_started."""
        runs: Counter[str] = Counter()
        async with order_runtime(nats_url, prefix, runs):
            await publish_start(
                nats_url,
                f"{prefix}.start.greet_order",
                start_body("traced-1"),
                headers={"traceparent": TRACEPARENT},
            )
            await client.wait_for_workflow_completion("traced-1", timeout=30)
            history = await client.get_history("traced-1")

        started = history[0]
        assert isinstance(started, ExecutionStarted)
        expected = TRACEPARENT
        assert expected == started.traceparent


class TestDeadLetters:
    """Unusable messages land on ``<prefix>.deadletter.<kind>`` and never stop a worker."""

    @pytest.mark.parametrize(
        ("workflow", "body", "problem"),
        [
            ("greet_order", b"{not json", "start event is not valid JSON"),
            ("greet_order", b"[1, 2]", "start event has the wrong shape"),
            ("greet_order", b'{"instance_id": 42}', "start event has the wrong shape"),
            ("greet_order", b'{"instance_id": "bad id!"}', "invalid instance id 'bad id!'"),
            ("no_such_flow", b'{"instance_id": "x-1"}', "unknown workflow 'no_such_flow'"),
            ("greet_order", b'{"id": "order-1", "input": {}}', "unknown field `id`"),
        ],
        ids=[
            "invalid-json", "json-list", "numeric-id", "invalid-id", "unknown-workflow",
            "unknown-field",
        ],
    )
    async def test_bad_start_event_is_dead_lettered(
        self, nats_url, prefix, client, workflow, body, problem
    ):
        """A bad start event is dead-lettered with a reason naming its problem; work goes on."""
        runs: Counter[str] = Counter()
        subject = f"{prefix}.start.{workflow}"
        async with order_runtime(nats_url, prefix, runs):
            await publish_start(nats_url, subject, body)
            letters = await read_dead_letters(
                nats_url, f"{prefix.upper()}_DEADLETTER", f"{prefix}.deadletter.start", 1
            )
            await publish_start(nats_url, f"{prefix}.start.greet_order", start_body("after-bad"))
            state = await client.wait_for_workflow_completion("after-bad", timeout=30)

        assert [body] == [m.data for m in letters]
        headers = letters[0].headers or {}
        assert problem in headers.get("Jetloom-Reason", ""), headers
        assert subject == headers.get("Jetloom-Original-Subject")
        assert WorkflowStatus.COMPLETED is state.runtime_status

    async def test_junk_on_inbox_is_dead_lettered(self, nats_url, prefix, client):
        """Junk published to an instance's inbox is dead-lettered and the worker keeps serving."""
        runs: Counter[str] = Counter()
        inbox = f"{prefix}.inbox.order-9"
        async with order_runtime(nats_url, prefix, runs):
            await publish_start(nats_url, inbox, b"\x00 definitely not a work item")
            letters = await read_dead_letters(
                nats_url, f"{prefix.upper()}_DEADLETTER", f"{prefix}.deadletter.inbox", 1
            )
            await publish_start(nats_url, f"{prefix}.start.greet_order", start_body("order-9"))
            state = await client.wait_for_workflow_completion("order-9", timeout=30)

        junk = [b"\x00 definitely not a work item"]
        assert junk == [m.data for m in letters]
        headers = letters[0].headers or {}
        assert "not a valid WorkItem" in headers.get("Jetloom-Reason", "")
        assert inbox == headers.get("Jetloom-Original-Subject")
        assert WorkflowStatus.COMPLETED is state.runtime_status
