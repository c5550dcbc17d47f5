"""``dapr.ext.workflow.aio`` over jetloom: the asynchronous ``DaprWorkflowClient``."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

import engine
from engine import InstanceFinishedError, InstanceNotFoundError, InvalidInstanceIdError
from engine.dapr._context import name_of
from engine.dapr._history import (
    UNSET,
    WorkflowHistoryEvent,
    WorkflowInstanceIdPage,
    history_event,
)
from engine.dapr._payload import encode
from engine.dapr._state import WorkflowState

__all__ = ["DaprWorkflowClient"]

log = structlog.get_logger("jetloom.dapr")

STEERING_TIMEOUT = 60.0
"""Seconds pause/resume wait for the instance to take the new status (Dapr's default API
timeout, ``DAPR_API_TIMEOUT_SECONDS``)."""


class DaprWorkflowClient:
    """Async client for managing workflow instances (Dapr's ``aio.DaprWorkflowClient``).

    It connects to NATS (``NATS_URL``) on its first call, on the caller's event loop. Dapr's
    sidecar settings (``host``, ``port``, ``max_grpc_message_length``) have no effect.
    """

    def __init__(
        self,
        host: str | None = None,
        port: str | None = None,
        logger_options: Any = None,
        max_grpc_message_length: int | None = None,
        *,
        nats_url: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self._nats_url = nats_url
        self._prefix = prefix
        self._client: engine.WorkflowClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._connecting: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    async def _native(self) -> engine.WorkflowClient:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is loop:
            return self._client
        if self._connecting is None or self._connecting[0] is not loop:
            self._connecting = (loop, asyncio.Lock())
        async with self._connecting[1]:
            if self._client is None or self._client_loop is not loop:
                # A client belongs to one loop: a new loop (another asyncio.run) reconnects.
                self._client = await engine.WorkflowClient.connect(
                    self._nats_url, prefix=self._prefix
                )
                self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the connection."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> DaprWorkflowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def schedule_new_workflow(
        self,
        workflow: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        start_at: datetime | None = None,
        reuse_id_policy: Any = None,
        app_id: str | None = None,
    ) -> str:
        """Schedules a new workflow instance for execution.

        Args:
            workflow: the workflow function or its registered name.
            input: the JSON-serializable input.
            instance_id: the instance's id (default: a new random id).
            start_at: when to start it (naive datetimes are UTC; default: now).
            reuse_id_policy: deprecated in Dapr, no effect: an id can be reused once its
                instance has finished.
            app_id: the application whose runtimes run the instance (default: this process's,
                ``APP_ID``).

        Returns:
            The ID of the scheduled workflow instance.
        """
        if reuse_id_policy is not None:
            warnings.warn(
                "reuse_id_policy is deprecated and has no effect; an instance id can always be "
                "reused once its instance has finished",
                DeprecationWarning,
                stacklevel=2,
            )
        if start_at is not None and start_at.utcoffset() is None:
            start_at = start_at.replace(tzinfo=UTC)
        client = await self._native()
        return await client.schedule_new_workflow(
            name_of(workflow), input=encode(input), instance_id=instance_id, start_at=start_at,
            app_id=app_id,
        )

    async def get_workflow_state(
        self, instance_id: str, *, fetch_payloads: bool = True, app_id: str | None = None
    ) -> WorkflowState | None:
        """The instance's current state, or None if there is no such instance (also for an id
        jetloom cannot hold, see docs/dapr.md: no such instance can exist)."""
        client = await self._native()
        try:
            state = await client.get_workflow_state(instance_id, fetch_payloads=fetch_payloads)
        except InvalidInstanceIdError:
            return None
        return None if state is None else WorkflowState(state)

    async def wait_for_workflow_start(
        self,
        instance_id: str,
        *,
        fetch_payloads: bool = False,
        timeout_in_seconds: int = 0,
        app_id: str | None = None,
    ) -> WorkflowState | None:
        """Wait until the instance has left PENDING (``timeout_in_seconds`` 0: no limit).

        Returns None if there is no such instance.

        Raises:
            TimeoutError: it did not start in time.
        """
        client = await self._native()
        if await self.get_workflow_state(instance_id, fetch_payloads=False) is None:
            return None
        try:
            state = await client.wait_for_workflow_start(
                instance_id, timeout=_limit(timeout_in_seconds), fetch_payloads=fetch_payloads
            )
        except TimeoutError:
            raise TimeoutError("Timed-out waiting for the orchestration to start") from None
        return WorkflowState(state)

    async def wait_for_workflow_completion(
        self,
        instance_id: str,
        *,
        fetch_payloads: bool = True,
        timeout_in_seconds: int = 0,
        app_id: str | None = None,
    ) -> WorkflowState | None:
        """Wait until the instance is COMPLETED, FAILED or TERMINATED (``timeout_in_seconds``
        0: no limit). Returns None if there is no such instance.

        Raises:
            TimeoutError: it did not finish in time.
        """
        client = await self._native()
        if await self.get_workflow_state(instance_id, fetch_payloads=False) is None:
            return None
        try:
            state = await client.wait_for_workflow_completion(
                instance_id, timeout=_limit(timeout_in_seconds), fetch_payloads=fetch_payloads
            )
        except TimeoutError:
            raise TimeoutError("Timed-out waiting for the orchestration to complete") from None
        return WorkflowState(state)

    async def raise_workflow_event(
        self,
        instance_id: str,
        event_name: str,
        *,
        data: Any = None,
        app_id: str | None = None,
    ) -> None:
        """Send an event to an instance. Events for a finished or unknown instance are
        discarded (as Dapr documents), with a warning in the log."""
        client = await self._native()
        try:
            # Dapr sends no payload for falsy data (0, "", [], False): None arrives.
            await client.raise_workflow_event(
                instance_id, event_name, data=encode(data) if data else None
            )
        except (InstanceFinishedError, InstanceNotFoundError) as exc:
            log.warning("dapr.event_discarded", instance_id=instance_id, event=event_name,
                        reason=str(exc))

    async def terminate_workflow(
        self,
        instance_id: str,
        *,
        output: Any = None,
        recursive: bool = True,
        app_id: str | None = None,
    ) -> None:
        """Terminate an instance (and, with ``recursive``, its child workflows)."""
        client = await self._native()
        await client.terminate_workflow(
            instance_id, output=encode(output) if output else None, recursive=recursive
        )

    async def pause_workflow(self, instance_id: str, *, app_id: str | None = None) -> None:
        """Suspend an instance; returns once it is SUSPENDED (or has finished).

        Raises:
            TimeoutError: no worker took the pause within ``STEERING_TIMEOUT`` seconds.
        """
        client = await self._native()
        await client.pause_workflow(instance_id, timeout=STEERING_TIMEOUT)

    async def resume_workflow(self, instance_id: str, *, app_id: str | None = None) -> None:
        """Resume a suspended instance; returns once it is no longer SUSPENDED.

        Raises:
            TimeoutError: no worker took the resume within ``STEERING_TIMEOUT`` seconds.
        """
        client = await self._native()
        await client.resume_workflow(instance_id, timeout=STEERING_TIMEOUT)

    async def purge_workflow(
        self, instance_id: str, recursive: bool = True, *, app_id: str | None = None
    ) -> None:
        """Remove a finished instance's history and state (and its children's if recursive).
        An unknown instance is nothing to purge."""
        client = await self._native()
        with contextlib.suppress(InstanceNotFoundError):
            await client.purge_workflow(instance_id, recursive=recursive)

    async def list_workflow_instance_ids(
        self, *, page_size: int | None = None, continuation_token: str | None = None
    ) -> WorkflowInstanceIdPage:
        """One page of instance ids; pass the page's ``continuation_token`` for the next.

        Raises:
            ValueError: ``page_size`` is not between 1 and 4294967295, or the token is not one
                this client returned.
        """
        if page_size is not None and not 1 <= page_size <= 4294967295:
            raise ValueError("page_size must be between 1 and 4294967295")
        try:
            start = int(continuation_token) if continuation_token else 0
        except ValueError:
            raise ValueError(f"invalid continuation_token {continuation_token!r}") from None
        client = await self._native()
        ids = sorted([s.instance_id async for s in client.list_workflows()])
        end = len(ids) if page_size is None else start + page_size
        return WorkflowInstanceIdPage(
            instance_ids=ids[start:end], continuation_token=str(end) if end < len(ids) else None
        )

    async def iter_workflow_instance_ids(self, *, page_size: int = 1024) -> AsyncIterator[str]:
        """Every instance id, page by page."""
        token: str | None = None
        while True:
            page = await self.list_workflow_instance_ids(
                page_size=page_size, continuation_token=token
            )
            for instance_id in page.instance_ids:
                yield instance_id
            if not page.continuation_token:
                return
            token = page.continuation_token

    async def get_workflow_history(self, instance_id: str) -> list[WorkflowHistoryEvent]:
        """The instance's history events (its current run), oldest first.

        Raises:
            InstanceNotFoundError: no such instance.
        """
        client = await self._native()
        return [history_event(e) for e in await client.get_history(instance_id)]

    async def rerun_workflow_from_event(
        self,
        instance_id: str,
        event_id: int,
        *,
        new_instance_id: str | None = None,
        input: Any = UNSET,
        new_child_workflow_instance_id: str | None = None,
        app_id: str | None = None,
    ) -> str:
        """Rerun a finished instance from one of its activities, as a new instance.

        ``event_id`` is the ``event_id`` of a ``TASK_SCHEDULED`` event of
        ``get_workflow_history`` (the activity's task id); with ``input`` that activity runs
        again with it, else with its recorded input. jetloom reruns from activities only.
        ``new_child_workflow_instance_id`` and ``app_id`` are accepted and have no effect.

        Returns:
            The new instance's id.

        Raises:
            InstanceNotFoundError: no such instance.
            InstanceAlreadyRunningError: it has not finished.
            ValueError: ``event_id`` names no activity of the instance.
        """
        client = await self._native()
        history = await client.get_history(instance_id)
        position = next(
            (i for i, e in enumerate(history)
             if isinstance(e, engine.TaskScheduled) and e.task_id == event_id),
            None,
        )
        if position is None:
            raise ValueError(
                f"no activity with event id {event_id} in the history of {instance_id!r}; "
                "jetloom reruns from TASK_SCHEDULED events"
            )
        return await client.rerun_workflow_from_event(
            instance_id, position, new_instance_id=new_instance_id,
            input=None if input is UNSET else encode(input), overwrite_input=input is not UNSET,
        )


def _limit(timeout_in_seconds: float) -> float | None:
    """Dapr's timeout: 0 (or less) means no limit."""
    return timeout_in_seconds if timeout_in_seconds and timeout_in_seconds > 0 else None
