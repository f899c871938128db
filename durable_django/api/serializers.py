"""Serializers of the API: runs, step results, parallel groups and waits as stored, the body of a
start request, the query parameters of the list endpoints, and workflow descriptions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import context
from ..definition import find_workflow
from ..models import (
    BlockKind,
    GroupStatus,
    InputKind,
    ParallelGroup,
    RunStatus,
    StepKind,
    StepResult,
    StepStatus,
    Wait,
    WaitKind,
    WaitStatus,
    WorkflowRun,
)
from ..waits import can_answer

# Deeper input is refused: steps copy and merge contexts, and the engine's JSON handling recurses.
MAX_INPUT_DEPTH = 100

_JSON_TYPES = ((dict, "object"), (list, "array"), (str, "string"), (bool, "boolean"), (int, "number"))


def json_type(value: Any) -> str:
    """The JSON name of the type of ``value`` (``"array"`` for a list), for error messages."""
    if value is None:
        return "null"
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return "number" if isinstance(value, float) else type(value).__name__


def storage_problem(value: Any) -> str | None:
    """Why the parsed JSON ``value`` cannot be stored as a run's input, or ``None``."""
    return context.storage_problem(value, MAX_INPUT_DEPTH)


class StringField(serializers.CharField):
    """A JSON string, storable in the database; numbers are not turned into strings."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        problem = context.text_problem(data)
        if problem:
            raise serializers.ValidationError(f"The value {problem}.")
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.Field):
    """A JSON object (a dict), storable as a run's input."""

    default_error_messages = {"not_an_object": "Must be a JSON object, got {type}."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("not_an_object", type=json_type(data))
        problem = storage_problem(data)
        if problem:
            raise serializers.ValidationError(f"The input {problem}.")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class StepResultSerializer(serializers.ModelSerializer[StepResult]):
    """One attempt of one step, as stored."""

    duration = serializers.FloatField(
        read_only=True, allow_null=True, help_text="Seconds from start to finish; null until the attempt finished."
    )

    class Meta:
        model = StepResult
        fields: tuple[str, ...] = (
            "id",
            "run",
            "step",
            "kind",
            "item_index",
            "compensates",
            "attempt",
            "status",
            "output",
            "error",
            "group",
            "job_id",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
        )
        read_only_fields: tuple[str, ...] = fields


class LogRecordSerializer(serializers.Serializer[dict[str, Any]]):
    """One record a step logged while its attempt executed."""

    at = serializers.DateTimeField(read_only=True, help_text="When it was logged.")
    level = serializers.CharField(read_only=True, help_text="Its level name: DEBUG, INFO, WARNING, ERROR, CRITICAL.")
    logger = serializers.CharField(
        read_only=True, help_text='The logger\'s name; "print" for a printed line, "durable_django" for the cut.'
    )
    message = serializers.CharField(read_only=True, help_text="The message, with its traceback when it had one.")


class StepResultDetailSerializer(StepResultSerializer):
    """One attempt of one step, with what it logged (the lists leave the logs out)."""

    logs = LogRecordSerializer(
        many=True,
        read_only=True,
        help_text="The records the attempt logged (DURABLE['CAPTURE_LOGS']), oldest first, within the caps: "
        "a last record of logger durable_django says how many more were not kept.",
    )

    class Meta(StepResultSerializer.Meta):
        fields = (*StepResultSerializer.Meta.fields, "logs")
        read_only_fields = fields


class ParallelGroupSerializer(serializers.ModelSerializer[ParallelGroup]):
    """One execution of a parallel or foreach block, as stored."""

    class Meta:
        model = ParallelGroup
        fields = (
            "id",
            "run",
            "name",
            "kind",
            "on_error",
            "status",
            "items",
            "results",
            "error",
            "history",
            "branch_count",
            "pending_count",
            "failed_count",
            "created_at",
            "finished_at",
        )
        read_only_fields = fields


#: The attribute a run list's prefetched open waits are stored in.
OPEN_WAITS = "open_waits"


def wait_rows() -> QuerySet[Wait]:
    """Waits with what their serializer reads alongside: the step result and the user who answered."""
    return Wait.objects.select_related("step_result", "resolved_by").order_by("created_at", "id")


class WaitSerializer(serializers.ModelSerializer[Wait]):
    """What a step or a branch waits for (or waited for): a time, events or a person's input."""

    step = serializers.CharField(
        source="step_result.step", read_only=True, help_text="The name of the step (or branch) that waits."
    )
    group = serializers.IntegerField(
        source="step_result.group_id",
        read_only=True,
        allow_null=True,
        help_text="The parallel group of the branch that waits; null for a sequential step.",
    )
    resolved_by = serializers.CharField(
        source="resolved_by.username",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The username of the person who answered an input; null otherwise.",
    )
    can_answer = serializers.SerializerMethodField(
        help_text="Whether the requesting user may answer this input now: an input still waiting, "
        "and the user has its permission."
    )

    class Meta:
        model = Wait
        fields = (
            "id",
            "run",
            "step",
            "group",
            "kind",
            "name",
            "events",
            "mode",
            "status",
            "due_at",
            "created_at",
            "resolved_at",
            "payload",
            "input_kind",
            "prompt",
            "spec",
            "permission",
            "resolved_by",
            "can_answer",
        )
        read_only_fields = fields

    def get_can_answer(self, wait: Wait) -> bool:
        if wait.kind != WaitKind.INPUT or wait.status != WaitStatus.WAITING:
            return False
        request = self.context.get("request")
        return can_answer(getattr(request, "user", None), wait.permission)


class RunSerializer(serializers.ModelSerializer[WorkflowRun]):
    """A run, as stored, with what it waits for now (the list endpoint's items)."""

    waits = serializers.SerializerMethodField(help_text="The run's waits that are still waiting, oldest first.")
    duration = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text="Seconds from start to finish (until now while running); null until started.",
    )

    class Meta:
        model = WorkflowRun
        fields: tuple[str, ...] = (
            "id",
            "workflow",
            "status",
            "input",
            "context",
            "error",
            "error_history",
            "current_step",
            "current_attempt",
            "parent",
            "parent_step",
            "ref",
            "detached",
            "compensation",
            "idempotency_key",
            "forked_from",
            "forked_from_step",
            "created_at",
            "run_at",
            "started_at",
            "deadline_at",
            "finished_at",
            "duration",
            "waits",
        )
        read_only_fields: tuple[str, ...] = fields

    @extend_schema_field(WaitSerializer(many=True))
    def get_waits(self, run: WorkflowRun) -> Any:
        # The list prefetches them (see RunViewSet.get_queryset); a run on its own reads them now.
        waits = getattr(run, OPEN_WAITS, None)
        if waits is None:
            waits = wait_rows().filter(run=run, status=WaitStatus.WAITING)
        return WaitSerializer(waits, many=True, context=self.context).data


class ChildSerializer(serializers.ModelSerializer[WorkflowRun]):
    """A child run, as its parent's detail lists it."""

    class Meta:
        model = WorkflowRun
        fields = ("id", "workflow", "status", "parent_step", "ref", "detached", "created_at", "finished_at")
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    """A run with its step results, parallel groups, children and every wait it had."""

    children = ChildSerializer(
        many=True,
        read_only=True,
        help_text="Runs started by its steps: called with call_workflow, or started with start_child (detached).",
    )

    forks = serializers.PrimaryKeyRelatedField[WorkflowRun](
        many=True, read_only=True, help_text="The runs forked from this one (fork_run), oldest first."
    )
    steps = StepResultSerializer(many=True, read_only=True)
    groups = ParallelGroupSerializer(many=True, read_only=True)
    # DRF takes declared fields off the class, so this replaces the list's method field (the stubs cannot tell).
    waits = WaitSerializer(  # type: ignore[assignment]
        many=True, read_only=True, help_text="Every wait of the run, oldest first."
    )

    class Meta(RunSerializer.Meta):
        fields = (*RunSerializer.Meta.fields, "steps", "groups", "children", "forks")
        read_only_fields = fields


class AwareDateTimeField(serializers.DateTimeField):
    """A datetime that must say its time zone: a start time is never guessed from the server's."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            raise serializers.ValidationError(
                "A time zone offset is required (e.g. 2030-01-01T09:00:00+00:00 or ...Z)."
            )
        return super().enforce_timezone(value)


class StartRunSerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST runs/``."""

    workflow = StringField(max_length=200, trim_whitespace=False, help_text="A registered workflow's name.")
    input = JSONObjectField(required=False, help_text="The run's input: a JSON object (default {}).")
    idempotency_key = StringField(
        required=False,
        allow_null=True,
        max_length=255,
        trim_whitespace=False,
        help_text="Starting the workflow again with the same key returns the first run instead of a new one.",
    )
    delay = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=10**9,
        help_text="Start the run this many seconds from now (it stays pending until then).",
    )
    run_at = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="Start the run at this time (ISO 8601 with a time zone offset); a time in the past starts it now.",
    )

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, Mapping):
            unknown = sorted(map(str, set(data) - set(self.fields)))
            if unknown:
                expected = ", ".join(self.fields)
                raise serializers.ValidationError({name: [f"Unknown field; expected {expected}."] for name in unknown})
        return super().to_internal_value(data)

    def validate_workflow(self, value: str) -> str:
        if find_workflow(value) is None:
            raise serializers.ValidationError(f"No workflow named {value!r} is registered.")
        return value

    def validate_delay(self, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise serializers.ValidationError("A finite number of seconds is required.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("delay") is not None and attrs.get("run_at") is not None:
            raise serializers.ValidationError({"run_at": ["Give delay or run_at, not both."]})
        return attrs


class CancelSerializer(serializers.Serializer[dict[str, Any]]):
    """The optional body of ``POST runs/{id}/cancel/``."""

    compensate = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Run the compensations of the run's completed steps before it ends cancelled (default false).",
    )

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        # Strictly a JSON boolean: DRF's BooleanField also takes "yes", 1, "on"...
        if isinstance(data, dict) and "compensate" in data and not isinstance(data["compensate"], bool):
            raise serializers.ValidationError({"compensate": ["Must be true or false."]})
        return super().to_internal_value(data)


class RunFilterSerializer(serializers.Serializer[dict[str, Any]]):
    """Query parameters of ``GET runs/``."""

    workflow = serializers.CharField(required=False, max_length=200, trim_whitespace=False)
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    # DRF takes declared fields off the class, so this does not hide Field.parent (the stubs cannot tell).
    parent = serializers.UUIDField(  # type: ignore[assignment]
        required=False, help_text="Only the children of this run."
    )
    detached = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Only children started with start_child (true) or not."
    )
    created_before = serializers.DateTimeField(
        required=False, source="created_at__lt", help_text="Only runs created before this time (ISO 8601)."
    )
    created_after = serializers.DateTimeField(
        required=False, source="created_at__gte", help_text="Only runs created at or after this time (ISO 8601)."
    )


class BulkFilterSerializer(RunFilterSerializer):
    """Query parameters of ``POST runs/retry/`` and ``runs/cancel/``: the list's filters, and ``dry_run``."""

    dry_run = serializers.BooleanField(
        required=False, default=False, help_text="Only count the runs the operation would change (default false)."
    )


class ForkSerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST runs/{id}/fork/``."""

    from_step = StringField(max_length=200, trim_whitespace=False, help_text="A top-level step or block of the run.")
    # DRF takes declared fields off the class, so this does not hide Serializer.context (the stubs cannot tell).
    context = JSONObjectField(  # type: ignore[assignment]
        required=False,
        help_text="The context the fork starts with; left out, the one the run had right before from_step.",
    )


class RunStepFilterSerializer(serializers.Serializer[dict[str, Any]]):
    """Query parameters of ``GET runs/{id}/steps/``: a run's step results, e.g. a block's failed items."""

    group = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Only the rows of this group (a block)."
    )
    status = serializers.ChoiceField(choices=StepStatus.choices, required=False)
    step = serializers.CharField(required=False, max_length=200, trim_whitespace=False)
    kind = serializers.ChoiceField(choices=StepKind.choices, required=False)
    item_index = serializers.IntegerField(
        required=False, min_value=0, max_value=2**31 - 1, help_text="Only this item of a foreach block."
    )


class StepFilterSerializer(serializers.Serializer[dict[str, Any]]):
    """Query parameters of ``GET steps/``."""

    run = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=StepStatus.choices, required=False)
    step = serializers.CharField(required=False, max_length=200, trim_whitespace=False)
    group = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Only the rows of this group (a block)."
    )
    kind = serializers.ChoiceField(choices=StepKind.choices, required=False)
    item_index = serializers.IntegerField(
        required=False, min_value=0, max_value=2**31 - 1, help_text="Only this item of a foreach block."
    )


class GroupFilterSerializer(serializers.Serializer[dict[str, Any]]):
    """Query parameters of ``GET groups/``."""

    run = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=GroupStatus.choices, required=False)
    kind = serializers.ChoiceField(choices=BlockKind.choices, required=False)


class WaitFilterSerializer(serializers.Serializer[dict[str, Any]]):
    """Query parameters of ``GET waits/``."""

    run = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=WaitStatus.choices, required=False)
    kind = serializers.ChoiceField(choices=WaitKind.choices, required=False)
    name = serializers.CharField(
        required=False,
        max_length=200,
        trim_whitespace=False,
        help_text="The event's or input's name (events of any/all joined by |).",
    )
    input_kind = serializers.ChoiceField(choices=InputKind.choices, required=False)


class EventResultSerializer(serializers.Serializer[dict[str, Any]]):
    """The answer of ``POST runs/{id}/events/{event}/``."""

    result = serializers.ChoiceField(
        choices=["delivered", "buffered"],
        read_only=True,
        help_text="delivered: a wait of the run took the event; buffered: kept until a wait of the run takes it.",
    )


_RETRY_SCHEMA = {
    "type": "object",
    "properties": {
        "max_attempts": {"type": "integer"},
        "backoff": {"type": "string", "enum": ["exponential", "linear", "constant"]},
        "base": {"type": "number"},
        "max_backoff": {"type": "number"},
        "jitter": {"type": "boolean"},
    },
}
_STEP_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["step"]},
        "name": {"type": "string"},
        "returns": {"type": "string", "nullable": True},
        "queue": {"type": "string", "nullable": True},
        "timeout": {"type": "number", "nullable": True},
        "retry": _RETRY_SCHEMA,
    },
}
_PARALLEL_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["parallel"]},
        "name": {"type": "string"},
        "on_error": {"type": "string", "enum": ["fail_fast", "complete_all"]},
        "into": {"type": "boolean"},
        "steps": {"type": "array", "items": _STEP_SCHEMA},
    },
}


@extend_schema_field({"type": "array", "items": {"oneOf": [_STEP_SCHEMA, _PARALLEL_SCHEMA]}})
class WorkflowStructureField(serializers.ListField):
    """``Workflow.describe()``: the steps and parallel blocks, in order."""


class WorkflowSerializer(serializers.Serializer[dict[str, Any]]):
    """A registered workflow: its name, the queue its runs start on and its structure."""

    name = serializers.CharField(read_only=True)
    queue = serializers.CharField(
        read_only=True, help_text='The workflow\'s own queue, else DURABLE["QUEUE"]; a step may name another.'
    )
    steps = WorkflowStructureField(read_only=True)
