"""What the sample's tests share: how an order ended."""

from __future__ import annotations

import msgspec

from engine import WorkflowClient, WorkflowStatus
from sample_order_app.model import OrderResult

ORDER_TIMEOUT = 30.0
"""Seconds a test waits for an order's saga to end."""


async def order_result(client: WorkflowClient, order_id: str) -> OrderResult:
    """The result of order ``order_id`` once its saga completed."""
    state = await client.wait_for_workflow_completion(order_id, timeout=ORDER_TIMEOUT)
    assert WorkflowStatus.COMPLETED == state.runtime_status
    assert state.serialized_output is not None
    return msgspec.json.decode(state.serialized_output, type=OrderResult)
