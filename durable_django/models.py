"""Every run, step attempt and parallel group is a row: the database is the source of truth."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils import timezone as django_timezone
from django.utils.translation import gettext_lazy as _


class RunStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    WAITING = "waiting", _("Waiting")
    COMPENSATING = "compensating", _("Compensating")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


class Compensation(models.TextChoices):
    """How the compensations of a failed (or cancelled) run went; blank when none ran."""

    RUNNING = "running", _("Running")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")


class StepKind(models.TextChoices):
    STEP = "step", _("Step")
    BRANCH = "branch", _("Branch taken")
    COMPENSATION = "compensation", _("Compensation")


class BlockKind(models.TextChoices):
    PARALLEL = "parallel", _("Parallel")
    FOREACH = "foreach", _("For each")


class StepStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    WAITING = "waiting", _("Waiting")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


class GroupStatus(models.TextChoices):
    RUNNING = "running", _("Running")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


class OnError(models.TextChoices):
    FAIL_FAST = "fail_fast", _("Fail fast")
    COMPLETE_ALL = "complete_all", _("Complete all")


FINISHED_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
UNFINISHED_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPENSATING)


class WorkflowRunQuerySet(models.QuerySet["WorkflowRun"]):
    def unfinished(self) -> WorkflowRunQuerySet:
        return self.filter(status__in=UNFINISHED_RUN_STATUSES)

    def finished(self) -> WorkflowRunQuerySet:
        return self.filter(status__in=FINISHED_RUN_STATUSES)


class WorkflowRun(models.Model):
    """One execution of a workflow."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.CharField(_("workflow"), max_length=200, db_index=True)
    status = models.CharField(_("status"), max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    input = models.JSONField(_("input"), default=dict, encoder=DjangoJSONEncoder)
    context = models.JSONField(_("context"), default=dict, encoder=DjangoJSONEncoder)
    current_step = models.CharField(
        _("current step"),
        max_length=200,
        blank=True,
        help_text=_("The step or parallel block the run is at; empty once the run has completed."),
    )
    current_attempt = models.PositiveIntegerField(
        _("current attempt"), default=1, help_text=_("Attempt number of the current sequential step.")
    )
    error = models.JSONField(_("error"), null=True, blank=True, encoder=DjangoJSONEncoder)
    error_history = models.JSONField(
        _("error history"),
        default=list,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text=_("Errors of earlier failures, each with when it failed and when it was retried."),
    )
    parent = models.ForeignKey(
        "self", models.CASCADE, null=True, blank=True, related_name="children", verbose_name=_("parent run")
    )
    parent_step = models.CharField(
        _("parent step"), max_length=200, blank=True, help_text=_("The parent's step that called this run.")
    )
    detached = models.BooleanField(
        _("detached"),
        default=False,
        help_text=_("Started by start_child: its parent does not wait for it, nor cancel it."),
    )
    compensation = models.CharField(
        _("compensation"),
        max_length=16,
        choices=Compensation.choices,
        blank=True,
        help_text=_("How the compensations of the steps that had completed went, once the run failed."),
    )
    ref = models.CharField(
        _("reference"), max_length=200, blank=True, help_text=_("The child's ref inside its parent's step.")
    )
    # NULL, not "", for "no key": the unique constraint must ignore runs without one.
    idempotency_key = models.CharField(_("idempotency key"), max_length=255, null=True, blank=True)  # noqa: DJ001
    version = models.PositiveIntegerField(
        _("version"),
        default=0,
        help_text=_("Bumped by every state transition; a stale writer's update matches no row."),
    )
    # Who executes the run's current step, and until when (renewed while it runs). Without an owner,
    # the time by which a worker must have picked the run's next job up (see durable_django.recovery).
    lease_owner = models.CharField(_("lease owner"), max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    run_at = models.DateTimeField(
        _("run at"), null=True, blank=True, help_text=_("A delayed run stays pending until this time.")
    )
    deadline_at = models.DateTimeField(
        _("deadline"),
        null=True,
        blank=True,
        help_text=_("Set from the workflow's timeout when the run starts: unfinished by then, it fails."),
    )
    forked_from = models.ForeignKey(
        "self",
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="forks",
        verbose_name=_("forked from"),
        help_text=_("The run this one was forked from (fork_run)."),
    )
    forked_from_step = models.CharField(
        _("forked from step"), max_length=200, blank=True, help_text=_("The step the fork started at.")
    )
    schedule = models.ForeignKey(
        "Schedule",
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="runs",
        verbose_name=_("schedule"),
        help_text=_("The schedule whose fire started this run."),
    )
    trace_context = models.JSONField(
        _("trace context"),
        default=dict,
        db_default={},
        blank=True,
        help_text=_("The W3C trace context of whoever started the run, continued by every job of the run."),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    objects = WorkflowRunQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        verbose_name = _("workflow run")
        verbose_name_plural = _("workflow runs")
        indexes = [
            models.Index(fields=["status", "created_at"], name="durable_run_status_created"),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status__in=("pending", "running")),
                name="durable_run_unfinished_lease",
            ),
            models.Index(
                fields=["deadline_at"],
                condition=Q(deadline_at__isnull=False, status__in=("pending", "running", "waiting")),
                name="durable_run_open_deadline",
            ),
            models.Index(
                fields=["run_at"],
                condition=Q(run_at__isnull=False, status="pending"),
                name="durable_run_delayed",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="durable_run_unique_idempotency_key",
            ),
            models.UniqueConstraint(
                fields=["parent", "parent_step", "ref"],
                condition=Q(parent__isnull=False),
                name="durable_run_unique_child_ref",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or until now while running)."""
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class ParallelGroup(models.Model):
    """One execution of a parallel block: its branches are :class:`StepResult` rows."""

    run = models.ForeignKey(WorkflowRun, models.CASCADE, related_name="groups", verbose_name=_("run"))
    name = models.CharField(_("name"), max_length=200)
    on_error = models.CharField(_("on error"), max_length=16, choices=OnError.choices)
    kind = models.CharField(_("kind"), max_length=16, choices=BlockKind.choices, default=BlockKind.PARALLEL)
    items = models.JSONField(
        _("items"), null=True, blank=True, encoder=DjangoJSONEncoder, help_text=_("A foreach block's list.")
    )
    context = models.JSONField(
        _("context"),
        null=True,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text=_(
            "The run's context when the block started: its branches' compensations and a fork from it start with it."
        ),
    )
    status = models.CharField(_("status"), max_length=16, choices=GroupStatus.choices, default=GroupStatus.RUNNING)
    results = models.JSONField(_("results"), null=True, blank=True, encoder=DjangoJSONEncoder)
    error = models.JSONField(_("error"), null=True, blank=True, encoder=DjangoJSONEncoder)
    history = models.JSONField(
        _("history"),
        default=list,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text=_("Earlier outcomes of the block (status, results, error, when), kept when it is retried."),
    )
    branch_count = models.PositiveIntegerField(_("branches"), default=0)
    pending_count = models.PositiveIntegerField(
        _("unfinished branches"), default=0, help_text=_("Branches without a final result yet.")
    )
    failed_count = models.PositiveIntegerField(_("failed branches"), default=0)
    waiting_count = models.PositiveIntegerField(
        _("waiting branches"), default=0, help_text=_("Branches that wait for a sleep, an event or an input.")
    )
    # The process executing the join (and into) holds this lease until the group is closed.
    lease_owner = models.CharField(_("lease owner"), max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ("created_at", "id")
        indexes = [
            models.Index(fields=["status", "pending_count"], name="durable_group_status_pending"),
        ]
        constraints = [
            # A block is open at most once per run: a duplicate fan-out fails instead of running twice.
            models.UniqueConstraint(
                fields=["run", "name"], condition=Q(status="running"), name="durable_group_one_open_per_block"
            ),
        ]
        verbose_name = _("parallel group")
        verbose_name_plural = _("parallel groups")

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class StepResult(models.Model):
    """One attempt of one step (a sequential step or a branch of a parallel group)."""

    run = models.ForeignKey(WorkflowRun, models.CASCADE, related_name="steps", verbose_name=_("run"))
    step = models.CharField(_("step"), max_length=200)
    kind = models.CharField(_("kind"), max_length=16, choices=StepKind.choices, default=StepKind.STEP)
    item_index = models.PositiveIntegerField(
        _("item index"), null=True, blank=True, help_text=_("A foreach item's 0-based position in its list.")
    )
    attempt = models.PositiveIntegerField(_("attempt"), default=1)
    status = models.CharField(_("status"), max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    output = models.JSONField(_("output"), null=True, blank=True, encoder=DjangoJSONEncoder)
    error = models.JSONField(_("error"), null=True, blank=True, encoder=DjangoJSONEncoder)
    group = models.ForeignKey(
        ParallelGroup,
        models.CASCADE,
        null=True,
        blank=True,
        related_name="branches",
        verbose_name=_("parallel group"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    job_id = models.CharField(_("RQ job id"), max_length=64, blank=True)
    context = models.JSONField(
        _("context"),
        null=True,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text=_("The run's context right after this step, kept for a step with a compensation."),
    )
    context_before = models.JSONField(
        _("context before"),
        null=True,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text=_("The run's context when this top-level step started: a fork from the step starts with it."),
    )
    # A database default too: the statements that insert many rows at once name only the columns they set.
    logs = models.JSONField(
        _("logs"),
        default=list,
        db_default=[],
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text=_("Log records emitted while this attempt executed (at, level, logger, message)."),
    )
    compensates = models.ForeignKey(
        "self",
        models.CASCADE,
        null=True,
        blank=True,
        related_name="compensations",
        verbose_name=_("compensates"),
        help_text=_("For a compensation: the completed step it undoes."),
    )
    # A running attempt's executor and its lease; a pending one's deadline to be picked up.
    lease_owner = models.CharField(_("lease owner"), max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)

    class Meta:
        ordering = ("id",)
        verbose_name = _("step result")
        verbose_name_plural = _("step results")
        indexes = [
            models.Index(fields=["run", "step"], name="durable_step_run_step"),
            models.Index(fields=["group", "status"], name="durable_step_group_status"),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status__in=("pending", "running")),
                name="durable_step_unfinished_lease",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step} #{self.attempt} ({self.status})"

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_result(self) -> tuple[str, Any]:
        """``("ok", output)`` or ``("error", error)`` for a finished attempt."""
        return ("ok", self.output) if self.status == StepStatus.COMPLETED else ("error", self.error)


class WaitKind(models.TextChoices):
    SLEEP = "sleep", _("Sleep")
    EVENT = "event", _("Event")
    INPUT = "input", _("Input")


class WaitStatus(models.TextChoices):
    WAITING = "waiting", _("Waiting")
    RESOLVED = "resolved", _("Resolved")
    TIMED_OUT = "timed_out", _("Timed out")
    CANCELLED = "cancelled", _("Cancelled")


class InputKind(models.TextChoices):
    APPROVAL = "approval", _("Approval")
    CHOICE = "choice", _("Choice")
    TEXT = "text", _("Text")
    FORM = "form", _("Form")


class WaitQuerySet(models.QuerySet["Wait"]):
    def waiting(self) -> WaitQuerySet:
        return self.filter(status=WaitStatus.WAITING)

    def inputs(self) -> WaitQuerySet:
        return self.filter(kind=WaitKind.INPUT)


class Wait(models.Model):
    """What a step (or a branch) that returned a wait is waiting for: a time, events or a person's input."""

    run = models.ForeignKey(WorkflowRun, models.CASCADE, related_name="waits", verbose_name=_("run"))
    step_result = models.ForeignKey(
        StepResult,
        models.CASCADE,
        related_name="waits",
        verbose_name=_("step result"),
        help_text=_("The step or branch that waits."),
    )
    kind = models.CharField(_("kind"), max_length=16, choices=WaitKind.choices)
    name = models.CharField(
        _("name"),
        max_length=200,
        help_text=_("The event's or input's name (events of any/all joined by |); for a sleep, the step's name."),
    )
    events = models.JSONField(_("events"), default=list, blank=True, help_text=_("The events of wait_for_any/all."))
    mode = models.CharField(
        _("mode"), max_length=8, default="one", help_text=_("one, any or all: which of the events resolve it.")
    )
    returns = models.CharField(_("returns"), max_length=200, blank=True, help_text=_("Context key of the payload."))
    status = models.CharField(_("status"), max_length=16, choices=WaitStatus.choices, default=WaitStatus.WAITING)
    due_at = models.DateTimeField(_("due at"), null=True, blank=True, help_text=_("When it ends by itself."))
    has_timeout_value = models.BooleanField(_("has a timeout value"), default=False)
    timeout_value = models.JSONField(_("timeout value"), null=True, blank=True, encoder=DjangoJSONEncoder)
    timeout_seconds = models.FloatField(_("timeout (seconds)"), null=True, blank=True)
    payload = models.JSONField(
        _("payload"),
        null=True,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text=_("What resolved it (for wait_for_all, the events received so far)."),
    )
    input_kind = models.CharField(_("input kind"), max_length=16, choices=InputKind.choices, blank=True)
    prompt = models.TextField(_("prompt"), blank=True)
    spec = models.JSONField(_("spec"), default=dict, blank=True, help_text=_("An input's choices or fields."))
    permission = models.CharField(
        _("permission"), max_length=200, blank=True, help_text=_("app_label.codename a person needs to answer.")
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("resolved by"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)

    objects = WaitQuerySet.as_manager()

    class Meta:
        ordering = ("created_at", "id")
        verbose_name = _("wait")
        verbose_name_plural = _("waits")
        permissions = [("provide_input", _("Can answer a workflow's wait for input"))]
        indexes = [
            models.Index(fields=["run", "status"], name="durable_wait_run_status"),
            models.Index(fields=["kind", "status", "created_at"], name="durable_wait_kind_status"),
            models.Index(fields=["due_at"], condition=Q(status="waiting"), name="durable_wait_open_due"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.status})"

    @property
    def key(self) -> str:
        """The context key its payload (or answer) lands in."""
        if self.returns:
            return self.returns
        if self.kind == WaitKind.EVENT:
            return {"any": "__event__", "all": "__events__"}.get(self.mode, self.name)
        return self.name


class Event(models.Model):
    """An event sent to a run while none of its waits wanted it: kept until a wait takes it."""

    run = models.ForeignKey(WorkflowRun, models.CASCADE, related_name="events", verbose_name=_("run"))
    name = models.CharField(_("name"), max_length=200)
    payload = models.JSONField(_("payload"), null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    consumed_at = models.DateTimeField(_("consumed at"), null=True, blank=True)
    consumed_by = models.ForeignKey(
        Wait, models.SET_NULL, null=True, blank=True, related_name="consumed_events", verbose_name=_("consumed by")
    )

    class Meta:
        ordering = ("created_at", "id")
        verbose_name = _("event")
        verbose_name_plural = _("events")
        indexes = [
            models.Index(
                fields=["run", "name", "created_at"],
                condition=Q(consumed_at__isnull=True),
                name="durable_event_buffered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({'consumed' if self.consumed_at else 'buffered'})"


class Schedule(models.Model):
    """Starts a run of ``workflow`` at every time of a cron expression, in a timezone."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    workflow = models.CharField(_("workflow"), max_length=200)
    cron = models.CharField(_("cron"), max_length=200, help_text=_("e.g. 0 9 * * 1-5 (at 9:00 on weekdays)."))
    timezone = models.CharField(_("timezone"), max_length=64, default="UTC", help_text=_("e.g. Europe/Berlin."))
    input = models.JSONField(_("input"), default=dict, blank=True, encoder=DjangoJSONEncoder)
    enabled = models.BooleanField(_("enabled"), default=True)
    catch_up = models.BooleanField(
        _("catch up"),
        default=False,
        help_text=_("Fire every time missed while nothing ran (bounded), not only the latest."),
    )
    last_fired_at = models.DateTimeField(_("last fired at"), null=True, blank=True)
    next_fire_at = models.DateTimeField(_("next fire at"), null=True, blank=True)
    declared_in_code = models.BooleanField(
        _("declared in code"), default=False, help_text=_("Declared with schedule() in a workflows module.")
    )
    # "timezone" is a field of this class: the module is reached through its full name.
    created_at = models.DateTimeField(_("created at"), default=django_timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ("name",)
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")
        indexes = [
            models.Index(fields=["next_fire_at"], condition=Q(enabled=True), name="durable_schedule_due"),
        ]

    def __str__(self) -> str:
        return self.name
