"""One attempt of one step: calling it, what came of it, its time limit and its retry budget.

Nothing here writes: an :class:`Attempt` is a value that the decision modules hand to
:mod:`durable_django.store`. Sequential steps and parallel branches are called the same way.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import FrameType
from typing import Any

from django.utils import timezone

from . import results
from .capture import capture
from .conf import durable_settings
from .context import StepScope, Unserializable, roundtrip, step_scope
from .definition import Step
from .models import StepResult, StepStatus
from .results import ERROR, GOTO, OK, WAIT, Outcome, normalize


@dataclass
class Attempt:
    """What one execution of a step produced, ready to be stored."""

    outcome: Outcome
    started_at: datetime
    finished_at: datetime
    output: dict[str, Any] = field(default_factory=dict)
    retryable: bool = True
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome.kind not in (OK, GOTO, WAIT)

    @property
    def waits(self) -> bool:
        """The step returned a wait: it is completed, and its run (or branch) waits."""
        return self.outcome.kind == WAIT

    @property
    def reason(self) -> Any:
        return self.outcome.reason

    def failing(self, reason: Any) -> Attempt:
        """This attempt as a final failure for ``reason`` (what the step returned cannot stand), with its logs."""
        return replace(self, outcome=Outcome(ERROR, reason=reason), output={}, retryable=False)

    @classmethod
    def failure(cls, reason: Any, started_at: datetime | None = None) -> Attempt:
        """A final failure the engine records itself (a lost worker, a step the definition lost)."""
        now = timezone.now()
        return cls(Outcome(ERROR, reason=reason), started_at or now, now, retryable=False)


def time_limit_of(step: Step) -> tuple[float | None, str]:
    """The time limit of an attempt of ``step`` and what sets it: its own ``timeout``, else
    ``DURABLE["DEFAULT_TIMEOUT"]`` (``None``: no limit)."""
    if step.timeout is not None:
        return step.timeout, "its timeout"
    return durable_settings.DEFAULT_TIMEOUT, 'DURABLE["DEFAULT_TIMEOUT"]'


def call_step(
    step: Step, ctx: dict[str, Any], run_id: Any, *, in_parallel: bool = False, started_at: datetime | None = None
) -> Attempt:
    """Call ``step.fn`` with ``ctx`` and turn whatever happens into a storable :class:`Attempt`.

    Its time limit is :func:`time_limit_of` the step. ``started_at``: when the attempt started,
    if before the call (the moment its caller checked that it may start). What the step logs
    meanwhile is in the attempt's ``logs`` (:mod:`durable_django.capture`), unless
    ``DURABLE["CAPTURE_LOGS"]`` is off.
    """
    started = started_at or timezone.now()
    if not durable_settings.CAPTURE_LOGS:
        return _call(step, ctx, run_id, in_parallel, started)
    with capture() as buffer:
        attempt = _call(step, ctx, run_id, in_parallel, started)
    attempt.logs = buffer.result()
    return attempt


def _call(step: Step, ctx: dict[str, Any], run_id: Any, in_parallel: bool, started: datetime) -> Attempt:
    try:
        with step_scope(StepScope(run_id, step.name, ctx)), time_limit(*time_limit_of(step)):
            value = step.fn(ctx)
        outcome = normalize(value)
    except StepTimeout as exc:
        outcome = Outcome(ERROR, reason=results.step_timeout(step.name, str(exc)))
    except Exception as exc:
        outcome = Outcome(ERROR, reason=results.exception_reason(exc))
    finished = timezone.now()
    # A malformed return value or unstorable data is a bug in the step, not a passing fault: no retry.
    if outcome.kind == "invalid":
        return Attempt(Outcome(ERROR, reason=outcome.reason), started, finished, retryable=False)
    if outcome.kind == ERROR:
        return Attempt(Outcome(ERROR, reason=results.stored_reason(outcome.reason)), started, finished)
    if outcome.kind == GOTO and in_parallel:
        reason = results.goto_in_branch(step.name, outcome.target)
        return Attempt(Outcome(ERROR, reason=reason), started, finished, retryable=False)
    try:
        output = roundtrip(outcome.data)
    except Unserializable as exc:
        reason = results.unserializable_output(f"step {step.name!r} returned data that cannot be stored as JSON: {exc}")
        return Attempt(Outcome(ERROR, reason=reason), started, finished, retryable=False)
    if outcome.kind == WAIT and outcome.wait.has_timeout_value:
        try:
            roundtrip(outcome.wait.timeout_value)
        except Unserializable as exc:
            message = f"step {step.name!r} returned a wait whose timeout_value cannot be stored as JSON: {exc}"
            return Attempt(
                Outcome(ERROR, reason=results.invalid_step_return(message)), started, finished, retryable=False
            )
    return Attempt(outcome, started, finished, output=output)


# -- the retry budget ---------------------------------------------------------------------------


def has_budget(step: Step, attempt_no: int, lost: Callable[[], int]) -> bool:
    """Whether ``step`` may run again after its failed attempt ``attempt_no``.

    Attempts that ended because their worker was lost do not use up the budget; they are only
    counted (one query, ``lost()``) when the attempt number alone would say no.
    """
    limit = step.retry.max_attempts
    # Only earlier attempts can have been lost: attempt 1 never needs the query.
    return attempt_no < limit or (attempt_no > 1 and attempt_no - lost() < limit)


def lost_attempts(run_id: Any, step_name: str, group_id: int | None = None) -> int:
    """How many attempts of a step (a branch of ``group_id``) ended with their worker lost."""
    return StepResult.objects.filter(
        run_id=run_id, step=step_name, group_id=group_id, status=StepStatus.FAILED, error__type="worker_lost"
    ).count()


def retry_delay(
    step: Step, attempt: Attempt, attempt_no: int, run_id: Any, group_id: int | None = None
) -> float | None:
    """Retry or final: seconds until the next attempt of ``step`` after ``attempt``, ``None`` when final."""
    if not attempt.failed or not attempt.retryable:
        return None
    if not has_budget(step, attempt_no, lambda: lost_attempts(run_id, step.name, group_id)):
        return None
    return step.retry.delay(attempt_no)


# -- time limits ------------------------------------------------------------------------------------


class StepTimeout(Exception):
    """A step ran longer than its ``timeout``."""


@contextmanager
def time_limit(seconds: float | None, what: str = "its timeout") -> Iterator[None]:
    """Raise :class:`StepTimeout` inside the block once it has run ``seconds`` (``what`` says which
    limit it is, in the message).

    Uses ``SIGALRM`` like RQ's own job timeout, whose pending alarm is put back afterwards. Outside
    the main thread (where signals cannot be delivered) the limit is not enforced.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    started = time.monotonic()
    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    fire_in = seconds if not outer_remaining else min(seconds, outer_remaining)

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if time.monotonic() - started >= seconds - 0.001:
            raise StepTimeout(f"ran longer than {what} of {seconds:g} s")
        # The enclosing alarm (RQ's job timeout) is due first: hand over to its handler.
        signal.signal(signal.SIGALRM, outer_handler)
        if callable(outer_handler):
            outer_handler(signum, frame)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, fire_in)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_remaining:
            left = outer_remaining - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
