"""Payloads, states and policies as Dapr's SDK has them: pure logic, no server."""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import msgspec
import pytest
from pydantic import BaseModel

import engine
import engine.dapr as wf
from engine.core.events import FailureDetails as NativeFailure
from engine.dapr._payload import from_json, input_model_of, input_value, to_json
from engine.dapr._propagation import (
    HistoryLog,
    PropagationScope,
    received_history,
)
from engine.dapr._state import custom_status_text, status_of


@dataclass
class Order:
    cost: float
    product: str


class Approval(BaseModel):
    approver: str
    amount: float


Point = namedtuple("Point", "x y")


class TestEncoding:
    """Values are written as Dapr's ``json.dumps`` with its encoder writes them."""

    def test_separators(self) -> None:
        """Default json separators, as Dapr stores them: a space after ',' and ':'."""
        assert '{"a": 1, "b": [1, 2]}' == to_json({"a": 1, "b": [1, 2]})

    def test_dataclass_is_marked(self) -> None:
        """A dataclass becomes an object marked for decoding as a namespace."""
        assert (
            '{"cost": 2000, "product": "MyProduct", "__durabletask_autoobject__": true}'
            == to_json(Order(2000, "MyProduct"))
        )

    def test_named_tuple_is_marked(self) -> None:
        """A named tuple becomes a marked object too."""
        assert '{"x": 1, "y": 2, "__durabletask_autoobject__": true}' == to_json(Point(1, 2))

    def test_namespace_is_marked_and_left_alone(self) -> None:
        """A namespace is marked in the JSON but not changed itself."""
        ns = SimpleNamespace(a=1)
        assert '{"a": 1, "__durabletask_autoobject__": true}' == to_json(ns)
        assert {"a": 1} == vars(ns)

    def test_model_is_plain(self) -> None:
        """A pydantic model is a plain object (readable by any SDK)."""
        assert '{"approver": "Me", "amount": 2.5}' == to_json(Approval(approver="Me", amount=2.5))

    def test_msgspec_struct_falls_back(self) -> None:
        """msgspec Structs (the native API's types) encode too."""

        class Item(msgspec.Struct):
            sku: str

        assert '{"sku": "A1"}' == to_json(Item("A1"))

    def test_nan_is_refused(self) -> None:
        """NaN has no JSON: refused instead of stored as invalid JSON."""
        with pytest.raises(ValueError):
            to_json({"x": math.nan})


class TestDecoding:
    """Values come back as Dapr's decoder gives them."""

    def test_marked_object_is_a_namespace(self) -> None:
        """A marked object decodes to a SimpleNamespace, also nested in lists."""
        assert [SimpleNamespace(cost=2000, product="MyProduct")] == from_json(
            to_json([Order(2000, "MyProduct")])
        )

    def test_plain_object_is_a_dict(self) -> None:
        """Unmarked objects stay dicts."""
        assert {"approver": "Me", "amount": 2.5} == from_json(
            to_json(Approval(approver="Me", amount=2.5))
        )

    def test_annotated_model_input(self) -> None:
        """An input annotated with a model class (or Optional of it) arrives as the model."""

        def activity(ctx: object, approval: Approval | None) -> None: ...

        takes_input, model = input_model_of(activity)
        assert (True, Approval) == (takes_input, model)
        assert Approval(approver="Me", amount=1.0) == input_value(
            {"approver": "Me", "amount": 1.0}, model
        )

    def test_dataclass_annotation_is_not_a_model(self) -> None:
        """A dataclass-annotated input arrives as Dapr delivers it: a namespace."""

        def activity(ctx: object, order: Order) -> None: ...

        _, model = input_model_of(activity)
        assert SimpleNamespace(cost=1, product="p") == input_value(
            {"cost": 1, "product": "p", "__durabletask_autoobject__": True}, model
        )

    def test_no_input_parameter(self) -> None:
        """A function of the context alone takes no input."""

        def workflow(ctx: object) -> None: ...

        assert (False, None) == input_model_of(workflow)


class TestState:
    """WorkflowState and WorkflowStatus as Dapr reports them."""

    def native(self, **changes: object) -> engine.WorkflowState:
        fields: dict[str, object] = {
            "instance_id": "i1",
            "name": "wf",
            "runtime_status": engine.WorkflowStatus.COMPLETED,
            "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "last_updated_at": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
            "serialized_output": '"done"',
            "serialized_custom_status": '"step 2"',
            **changes,
        }
        return engine.WorkflowState(**fields)  # type: ignore[arg-type]

    def test_fields(self) -> None:
        """Times are naive UTC, a string custom status is the string itself."""
        state = wf.WorkflowState(self.native())
        assert wf.WorkflowStatus.COMPLETED == state.runtime_status
        assert datetime(2026, 1, 2, 3, 4, 5) == state.created_at
        assert '"done"' == state.serialized_output
        assert "step 2" == state.serialized_custom_status

    @pytest.mark.parametrize(("native", "dapr"), [
        (engine.WorkflowStatus.STALLED, wf.WorkflowStatus.STALLED),
        (engine.WorkflowStatus.CONTINUED_AS_NEW, wf.WorkflowStatus.RUNNING),
        (engine.WorkflowStatus.SUSPENDED, wf.WorkflowStatus.SUSPENDED),
        (engine.WorkflowStatus.PENDING, wf.WorkflowStatus.PENDING),
    ])
    def test_status(self, native: engine.WorkflowStatus, dapr: wf.WorkflowStatus) -> None:
        """Every engine status has Dapr's counterpart; CONTINUED_AS_NEW is RUNNING."""
        assert dapr == status_of(native)

    def test_custom_status_json_stays_json(self) -> None:
        """A custom status that is not a string is its JSON text."""
        assert '{"step": 2}' == custom_status_text('{"step": 2}')

    def test_failure(self) -> None:
        """failure_details has Dapr's fields, raise_if_failed raises, to_json has them."""
        state = wf.WorkflowState(self.native(
            runtime_status=engine.WorkflowStatus.FAILED, serialized_output=None,
            failure_details=NativeFailure(type="ValueError", message="bad", stack="trace"),
        ))
        assert ("ValueError", "bad", "trace") == (
            state.failure_details.error_type, state.failure_details.message,
            state.failure_details.stack_trace,
        )
        with pytest.raises(Exception, match="Orchestration 'i1' failed: bad"):
            state.raise_if_failed()
        assert {"message": "bad", "error_type": "ValueError", "stack_trace": "trace"} == (
            state.to_json()["failure_details"]
        )
        assert "FAILED" == state.to_json()["runtime_status"]


class TestRetryPolicy:
    """Dapr's RetryPolicy stands for an engine policy."""

    def test_non_retryable_error(self) -> None:
        """NonRetryableError is never retried."""
        policy = wf.RetryPolicy(first_retry_interval=timedelta(seconds=1),
                                max_number_of_attempts=3)
        assert not policy.obj.is_retryable("NonRetryableError")
        assert policy.obj.is_retryable("ValueError")

    def test_zero_interval(self) -> None:
        """A first interval of 0 is accepted, as in Dapr."""
        policy = wf.RetryPolicy(first_retry_interval=timedelta(0), max_number_of_attempts=2)
        assert timedelta(0) == policy.first_retry_interval
        assert policy.obj.first_retry_interval > timedelta(0)

    def test_validation(self) -> None:
        """Dapr's checks and messages."""
        with pytest.raises(ValueError, match="max_number_of_attempts must be >= 1"):
            wf.RetryPolicy(first_retry_interval=timedelta(1), max_number_of_attempts=0)


class TestRegistration:
    """Dapr's naming rules for registered functions."""

    def test_decorator_keeps_the_name(self) -> None:
        """The decorated name carries the registered name; calling it returns the function."""
        wfr = wf.WorkflowRuntime()

        @wfr.activity(name="renamed")
        def act(ctx: object, x: int) -> int:
            return x

        assert "renamed" == act._dapr_alternate_name
        assert 5 == act()(None, 5)

    def test_registered_twice(self) -> None:
        """A function registers once."""
        wfr = wf.WorkflowRuntime()

        def act(ctx: object) -> None: ...

        wfr.register_activity(act)
        with pytest.raises(ValueError, match="already registered as act"):
            wfr.register_activity(act)

    def test_alternate_name(self) -> None:
        """alternate_name names a function for registration."""
        wfr = wf.WorkflowRuntime()

        @wfr.workflow
        @wf.alternate_name("other_name")
        def flow(ctx: object) -> None: ...

        assert "other_name" == flow._dapr_alternate_name


class TestPropagation:
    """History travels beside an input and is read back on the other side."""

    def test_round_trip(self) -> None:
        """A propagated log, sent as JSON, reads back as the same history."""
        log = HistoryLog("app1", "parent-1", "checkout")
        when = datetime(2026, 1, 1)
        call = log.scheduled("taskScheduled", "validate", when, '"m-42"')
        log.closed("taskCompleted", call, when, output='{"valid": true}')
        sent = msgspec.json.encode(log.envelope(PropagationScope.OWN_HISTORY, None))
        history = received_history(msgspec.json.decode(sent))
        assert history is not None
        parent = history.get_workflows()[-1]
        assert ("app1", "parent-1", "checkout") == (parent.app_id, parent.instance_id,
                                                    parent.name)
        result = parent.get_last_activity_by_name("validate")
        assert (True, '{"valid": true}', '"m-42"') == (result.completed, result.output,
                                                      result.input)
        assert None is received_history(None)

    def test_not_found(self) -> None:
        """A query without a match raises PropagationNotFoundError."""
        log = HistoryLog("app1", "p", "wf")
        sent = msgspec.json.encode(log.envelope(PropagationScope.LINEAGE, None))
        history = received_history(msgspec.json.decode(sent))
        assert history is not None
        with pytest.raises(wf.PropagationNotFoundError):
            history.get_workflows()[0].get_last_activity_by_name("nope")


class TestDeterministicHelpers:
    """The workflow context's helpers give what Dapr's give for the same instance and time."""

    class _Native:
        instance_id = "order-7"
        workflow_name = "checkout"
        current_utc_datetime = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)

    def test_uuid4_matches_dapr(self) -> None:
        """uuid4()/new_guid() follow Dapr's (and .NET's) deterministic UUIDs call by call."""
        from dapr.ext.workflow._durabletask.deterministic import deterministic_uuid_v5

        ctx = wf.DaprWorkflowContext(self._Native(), app_id="shop")  # type: ignore[arg-type]
        naive = datetime(2026, 3, 4, 5, 6, 7, 890000)
        assert [deterministic_uuid_v5("order-7", naive, n) for n in range(3)] == [
            ctx.uuid4(), ctx.new_guid(), ctx.uuid4()
        ]

    def test_now_with_sequence(self) -> None:
        """Each call is one microsecond later; times are naive UTC as in Dapr."""
        ctx = wf.DaprWorkflowContext(self._Native(), app_id="shop")  # type: ignore[arg-type]
        first, second = ctx.now_with_sequence(), ctx.now_with_sequence()
        assert (datetime(2026, 3, 4, 5, 6, 7, 890000), timedelta(microseconds=1)) == (
            first, second - first
        )
