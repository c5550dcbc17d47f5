"""engine.dapr's rerun_workflow_from_event: Dapr's event ids (an activity's task id) on top of
the native rerun, against a real nats-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import engine.dapr as wf


@pytest.fixture
def runtime(nats_url: str, prefix: str) -> Iterator[wf.WorkflowRuntime]:
    wfr = wf.WorkflowRuntime(nats_url=nats_url, prefix=prefix)
    yield wfr
    wfr.shutdown()


def test_rerun_from_a_task_scheduled_event(
    runtime: wf.WorkflowRuntime, nats_url: str, prefix: str
) -> None:
    """A TASK_SCHEDULED event of get_workflow_history reruns with a new input; other events
    are refused (jetloom reruns from activities only)."""

    @runtime.activity
    def add_one(ctx: wf.WorkflowActivityContext, x: int) -> int:
        return x + 1

    @runtime.workflow
    def twice(ctx: wf.DaprWorkflowContext, x: int) -> Any:
        y = yield ctx.call_activity(add_one, input=x)
        z = yield ctx.call_activity(add_one, input=y)
        return z

    runtime.start()
    client = wf.DaprWorkflowClient(nats_url=nats_url, prefix=prefix)
    try:
        client.schedule_new_workflow(twice, input=1, instance_id="t1")
        client.wait_for_workflow_completion("t1", timeout_in_seconds=20)
        history = client.get_workflow_history("t1")
        second = [e for e in history if e.is_rerunnable][1]
        new_id = client.rerun_workflow_from_event("t1", second.event_id, input=10)
        state = client.wait_for_workflow_completion(new_id, timeout_in_seconds=20)
        with pytest.raises(ValueError, match="no activity with event id 99"):
            client.rerun_workflow_from_event("t1", 99)
    finally:
        client.close()
    assert "11" == state.serialized_output
