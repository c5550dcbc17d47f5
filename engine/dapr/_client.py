"""Dapr's synchronous ``DaprWorkflowClient``: the async client, run on a private loop thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from engine.dapr._history import UNSET, WorkflowHistoryEvent, WorkflowInstanceIdPage
from engine.dapr._loop import LoopThread
from engine.dapr._state import WorkflowState
from engine.dapr.aio import DaprWorkflowClient as AsyncDaprWorkflowClient


class DaprWorkflowClient:
    """Defines client operations for managing workflow instances (Dapr's sync client).

    Every call blocks until done; the NATS connection (``NATS_URL``) lives on a private event
    loop thread, so the client works from plain code and from inside another event loop
    alike. Dapr's sidecar settings (``host``, ``port``, ``max_grpc_message_length``) have no
    effect.
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
        self._async = AsyncDaprWorkflowClient(nats_url=nats_url, prefix=prefix)
        self._loop: LoopThread | None = None
        self._starting = threading.Lock()

    def _run(self, call: Any) -> Any:
        with self._starting:
            if self._loop is None:
                self._loop = LoopThread("dapr-workflow-client")
            loop = self._loop
        return loop.run(call)

    def schedule_new_workflow(
        self,
        workflow: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        start_at: datetime | None = None,
        reuse_id_policy: Any = None,
        app_id: str | None = None,
    ) -> str:
        """Schedules a new workflow instance for execution; returns its ID."""
        result: str = self._run(self._async.schedule_new_workflow(
            workflow, input=input, instance_id=instance_id, start_at=start_at,
            reuse_id_policy=reuse_id_policy, app_id=app_id,
        ))
        return result

    def get_workflow_state(
        self, instance_id: str, *, fetch_payloads: bool = True, app_id: str | None = None
    ) -> WorkflowState | None:
        """The instance's current state, or None if there is no such instance."""
        state: WorkflowState | None = self._run(self._async.get_workflow_state(
            instance_id, fetch_payloads=fetch_payloads, app_id=app_id
        ))
        return state

    def wait_for_workflow_start(
        self,
        instance_id: str,
        *,
        fetch_payloads: bool = False,
        timeout_in_seconds: int = 0,
        app_id: str | None = None,
    ) -> WorkflowState | None:
        """Wait until the instance has left PENDING (``timeout_in_seconds`` 0: no limit)."""
        state: WorkflowState | None = self._run(self._async.wait_for_workflow_start(
            instance_id, fetch_payloads=fetch_payloads, timeout_in_seconds=timeout_in_seconds,
            app_id=app_id,
        ))
        return state

    def wait_for_workflow_completion(
        self,
        instance_id: str,
        *,
        fetch_payloads: bool = True,
        timeout_in_seconds: int = 0,
        app_id: str | None = None,
    ) -> WorkflowState | None:
        """Wait until the instance has finished (``timeout_in_seconds`` 0: no limit).

        Raises:
            TimeoutError: it did not finish in time.
        """
        state: WorkflowState | None = self._run(self._async.wait_for_workflow_completion(
            instance_id, fetch_payloads=fetch_payloads, timeout_in_seconds=timeout_in_seconds,
            app_id=app_id,
        ))
        return state

    def raise_workflow_event(
        self,
        instance_id: str,
        event_name: str,
        *,
        data: Any = None,
        app_id: str | None = None,
    ) -> None:
        """Send an event to an instance (discarded if the instance has finished)."""
        self._run(self._async.raise_workflow_event(
            instance_id, event_name, data=data, app_id=app_id
        ))

    def terminate_workflow(
        self,
        instance_id: str,
        *,
        output: Any = None,
        recursive: bool = True,
        app_id: str | None = None,
    ) -> None:
        """Terminate an instance (and, with ``recursive``, its child workflows)."""
        self._run(self._async.terminate_workflow(
            instance_id, output=output, recursive=recursive, app_id=app_id
        ))

    def pause_workflow(self, instance_id: str, *, app_id: str | None = None) -> None:
        """Suspend an instance; returns once it is SUSPENDED."""
        self._run(self._async.pause_workflow(instance_id, app_id=app_id))

    def resume_workflow(self, instance_id: str, *, app_id: str | None = None) -> None:
        """Resume a suspended instance; returns once it is no longer SUSPENDED."""
        self._run(self._async.resume_workflow(instance_id, app_id=app_id))

    def purge_workflow(
        self, instance_id: str, recursive: bool = True, *, app_id: str | None = None
    ) -> None:
        """Remove a finished instance's history and state (and its children's)."""
        self._run(self._async.purge_workflow(instance_id, recursive, app_id=app_id))

    def list_workflow_instance_ids(
        self, *, page_size: int | None = None, continuation_token: str | None = None
    ) -> WorkflowInstanceIdPage:
        """One page of instance ids; pass the page's ``continuation_token`` for the next."""
        page: WorkflowInstanceIdPage = self._run(self._async.list_workflow_instance_ids(
            page_size=page_size, continuation_token=continuation_token
        ))
        return page

    def iter_workflow_instance_ids(self, *, page_size: int = 1024) -> Iterator[str]:
        """Every instance id, fetched page by page as the iteration goes."""
        token: str | None = None
        while True:
            page = self.list_workflow_instance_ids(page_size=page_size, continuation_token=token)
            yield from page.instance_ids
            if not page.continuation_token:
                return
            token = page.continuation_token

    def get_workflow_history(self, instance_id: str) -> list[WorkflowHistoryEvent]:
        """The instance's history events (its current run), oldest first."""
        events: list[WorkflowHistoryEvent] = self._run(
            self._async.get_workflow_history(instance_id)
        )
        return events

    def rerun_workflow_from_event(
        self,
        instance_id: str,
        event_id: int,
        *,
        new_instance_id: str | None = None,
        input: Any = UNSET,
        new_child_workflow_instance_id: str | None = None,
        app_id: str | None = None,
    ) -> str:
        """Rerun a finished instance from one of its activities, as a new instance (see
        ``engine.dapr.aio.DaprWorkflowClient.rerun_workflow_from_event``)."""
        rerun: str = self._run(self._async.rerun_workflow_from_event(
            instance_id, event_id, new_instance_id=new_instance_id, input=input,
            new_child_workflow_instance_id=new_child_workflow_instance_id, app_id=app_id,
        ))
        return rerun

    def close(self) -> None:
        """Close the connection and stop the client's thread."""
        with self._starting:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.run(self._async.aclose())
            loop.stop()

    def __enter__(self) -> DaprWorkflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
