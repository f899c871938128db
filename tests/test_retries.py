"""Retries: one StepResult row per attempt, for sequential steps and branches; backoff arithmetic."""

from __future__ import annotations

from typing import Any

import pytest
from rq import SimpleWorker

from durable_django import RetryPolicy, error, goto, ok, parallel, step
from durable_django.models import ParallelGroup, StepResult
from durable_django.testing import EmbeddedQueue
from tests.engine_support import IMMEDIATE, Definer, attempts, finish

runs = pytest.mark.django_db(transaction=True)


def flaky(failures: int, calls: list[int], data: dict[str, Any] | None = None) -> Any:
    """A step that fails its first ``failures`` calls (reason names the attempt), then succeeds."""

    def step_fn(ctx: dict[str, Any]) -> Any:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            return error(f"attempt {len(calls)} failed")
        return ok({"succeeded_on": len(calls), **(data or {})})

    return step_fn


# -- sequential steps -------------------------------------------------------------------------------


@runs
def test_sequential_step_is_retried_until_it_succeeds(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    wf = define(
        [
            step("prepare", lambda ctx: ok({"ready": True})),
            step("call_api", flaky(2, calls), retry={"max_attempts": 3, **IMMEDIATE}),
            step("after", lambda ctx: ok({"after": True})),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert calls == [1, 2, 3]
    assert run.context == {"ready": True, "succeeded_on": 3, "after": True}
    assert attempts(run) == [
        ("prepare", 1, "completed"),
        ("call_api", 1, "failed"),
        ("call_api", 2, "failed"),
        ("call_api", 3, "completed"),
        ("after", 1, "completed"),
    ]
    assert list(StepResult.objects.filter(run=run, step="call_api").values_list("error", flat=True)) == [
        "attempt 1 failed",
        "attempt 2 failed",
        None,
    ]


@runs
def test_exhausted_retries_fail_the_run_with_the_last_reason(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    after: list[int] = []
    wf = define(
        [
            step("call_api", flaky(99, calls), retry={"max_attempts": 3, **IMMEDIATE}),
            step("after", lambda ctx: after.append(1) or ok()),
        ]
    )
    run = finish(embedded, wf.start({"n": 1}))
    assert run.status == "failed"
    assert run.error == {"step": "call_api", "reason": "attempt 3 failed"}
    assert run.context == {"n": 1}
    assert (run.current_step, run.current_attempt) == ("call_api", 3)
    assert calls == [1, 2, 3]
    assert after == []
    assert attempts(run) == [("call_api", 1, "failed"), ("call_api", 2, "failed"), ("call_api", 3, "failed")]


@runs
def test_without_retry_a_step_is_attempted_once(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    wf = define([step("call_api", flaky(1, calls))])
    run = finish(embedded, wf.start())
    assert (run.status, calls) == ("failed", [1])
    assert attempts(run) == [("call_api", 1, "failed")]


@runs
def test_exceptions_are_retried(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []

    def unstable(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("reset by peer")
        return ok({"calls": len(calls)})

    wf = define([step("call_api", unstable, retry={"max_attempts": 2, **IMMEDIATE})])
    run = finish(embedded, wf.start())
    assert (run.status, run.context) == ("completed", {"calls": 2})
    first = StepResult.objects.get(run=run, step="call_api", attempt=1)
    assert (first.status, first.error["type"], first.error["message"]) == ("failed", "ConnectionError", "reset by peer")


@runs
@pytest.mark.parametrize(
    ("returned", "reason_type"),
    [(None, "invalid_step_return"), (("ok", 5), "invalid_step_return"), (ok({"s": {1}}), "unserializable_output")],
    ids=["none", "ok_non_dict", "unserializable"],
)
def test_malformed_returns_are_not_retried(
    embedded: EmbeddedQueue, define: Definer, returned: Any, reason_type: str
) -> None:
    calls: list[int] = []
    retry = {"max_attempts": 3, **IMMEDIATE}
    wf = define(
        [
            step("broken", lambda ctx: calls.append(1) or returned, retry=retry),
            parallel(
                step("broken_branch", lambda ctx: calls.append(2) or returned, retry=retry), on_error="complete_all"
            ),
        ]
    )
    run = finish(embedded, wf.start())
    # A bug in the step, not a passing fault: retrying cannot help.
    assert calls == [1]
    assert (run.status, run.error["reason"]["type"]) == ("failed", reason_type)
    assert attempts(run) == [("broken", 1, "failed")]

    branch_only = define([parallel(step("broken_branch", lambda ctx: calls.append(2) or returned, retry=retry))])
    run = finish(embedded, branch_only.start())
    assert calls == [1, 2]
    assert attempts(run) == [("broken_branch", 1, "failed")]
    assert run.error["reason"]["type"] == reason_type


@runs
def test_a_step_revisited_by_goto_gets_fresh_attempts(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []

    def sometimes(ctx: dict[str, Any]) -> Any:
        calls.append(1)
        # Fails the first attempt of each visit.
        return error("first try") if len(calls) % 2 == 1 else ok({"visits": ctx.get("visits", 0) + 1})

    wf = define(
        [
            step("work", sometimes, retry={"max_attempts": 2, **IMMEDIATE}),
            step("again", lambda ctx: goto("work", {}) if ctx["visits"] < 2 else ok()),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert attempts(run) == [
        ("work", 1, "failed"),
        ("work", 2, "completed"),
        ("again", 1, "completed"),
        ("work", 1, "failed"),
        ("work", 2, "completed"),
        ("again", 1, "completed"),
    ]


@runs
def test_retry_with_backoff_is_scheduled_not_run_at_once(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    wf = define([step("call_api", flaky(1, calls), retry={"max_attempts": 2, "base": 30, "jitter": False})])
    run = wf.start()
    # One pass of the worker, without RQ's scheduler: the retry must wait in the scheduled registry.
    SimpleWorker(embedded.queues(), connection=embedded.connection).work(burst=True, logging_level="WARNING")
    run.refresh_from_db()
    assert (run.status, run.current_step, run.current_attempt) == ("running", "call_api", 2)
    assert calls == [1]
    assert attempts(run) == [("call_api", 1, "failed")]
    assert embedded.pending_jobs() == 0
    assert sum(queue.scheduled_job_registry.count for queue in embedded.queues()) == 1


# -- branches ---------------------------------------------------------------------------------------


@runs
def test_branch_is_retried_and_every_attempt_belongs_to_the_group(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    wf = define(
        [
            parallel(
                step("call_api", flaky(2, calls, {"api": True}), retry={"max_attempts": 3, **IMMEDIATE}),
                step("local", lambda ctx: ok({"local": True})),
                name="fan",
            ),
            step("after", lambda ctx: ok({"api_ok": ctx["__results__"]["call_api"][0] == "ok"})),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert calls == [1, 2, 3]
    assert run.context == {
        "__results__": {"call_api": ["ok", {"succeeded_on": 3, "api": True}], "local": ["ok", {"local": True}]},
        "api_ok": True,
    }
    group = ParallelGroup.objects.get(run=run)
    assert (group.branch_count, group.pending_count, group.failed_count) == (2, 0, 0)
    rows = StepResult.objects.filter(run=run, step="call_api").order_by("attempt")
    assert [(row.attempt, row.status, row.group_id, row.error) for row in rows] == [
        (1, "failed", group.pk, "attempt 1 failed"),
        (2, "failed", group.pk, "attempt 2 failed"),
        (3, "completed", group.pk, None),
    ]


@runs
def test_exhausted_branch_retries_fail_the_run_under_fail_fast(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    wf = define(
        [
            parallel(
                step("call_api", flaky(99, calls), retry={"max_attempts": 2, **IMMEDIATE}),
                step("local", lambda ctx: ok()),
                name="fan",
            )
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "failed"
    assert run.error == {"step": "call_api", "parallel": "fan", "reason": "attempt 2 failed"}
    assert calls == [1, 2]
    assert [row for row in attempts(run) if row[0] == "call_api"] == [
        ("call_api", 1, "failed"),
        ("call_api", 2, "failed"),
    ]
    group = ParallelGroup.objects.get(run=run)
    assert group.results == {"call_api": ["error", "attempt 2 failed"], "local": ["ok", {}]}


@runs
def test_exhausted_branch_retries_are_collected_under_complete_all(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    wf = define(
        [
            parallel(
                step("call_api", flaky(99, calls), retry={"max_attempts": 3, **IMMEDIATE}),
                on_error="complete_all",
            ),
            step("after", lambda ctx: ok({"after": True})),
        ]
    )
    run = finish(embedded, wf.start())
    assert run.status == "completed"
    assert run.context == {"__results__": {"call_api": ["error", "attempt 3 failed"]}, "after": True}
    assert calls == [1, 2, 3]
    assert ParallelGroup.objects.get(run=run).failed_count == 1


@runs
def test_goto_from_a_branch_is_not_retried(embedded: EmbeddedQueue, define: Definer) -> None:
    calls: list[int] = []
    wf = define(
        [
            step("start", lambda ctx: ok()),
            parallel(
                step("jumper", lambda ctx: calls.append(1) or goto("start"), retry={"max_attempts": 3, **IMMEDIATE}),
                on_error="complete_all",
            ),
        ]
    )
    run = finish(embedded, wf.start())
    assert calls == [1]
    assert attempts(run) == [("start", 1, "completed"), ("jumper", 1, "failed")]
    assert run.context["__results__"]["jumper"][1]["type"] == "goto_error"


# -- backoff arithmetic -------------------------------------------------------------------------------


def policy(**options: Any) -> RetryPolicy:
    return RetryPolicy.from_options({"max_attempts": 10, "jitter": False, **options})


def test_exponential_backoff_doubles_up_to_the_cap() -> None:
    delays = [policy(backoff="exponential", base=2, max_backoff=30).delay(n) for n in range(1, 7)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_linear_backoff_grows_by_base_up_to_the_cap() -> None:
    delays = [policy(backoff="linear", base=3, max_backoff=10).delay(n) for n in range(1, 6)]
    assert delays == [3.0, 6.0, 9.0, 10.0, 10.0]


def test_constant_backoff_waits_base_up_to_the_cap() -> None:
    assert [policy(backoff="constant", base=5).delay(n) for n in (1, 2, 9)] == [5.0, 5.0, 5.0]
    assert policy(backoff="constant", base=50, max_backoff=7).delay(1) == 7.0


def test_defaults_are_exponential_from_one_second_with_jitter() -> None:
    default = RetryPolicy.from_options(None)
    assert default == RetryPolicy(max_attempts=1, backoff="exponential", base=1.0, max_backoff=30.0, jitter=True)
    assert [default.delay(n, rand=lambda: 0.5) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_zero_base_never_waits() -> None:
    assert [policy(backoff=kind, base=0).delay(3) for kind in ("exponential", "linear", "constant")] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("rand", "expected"),
    [(0.0, 6.0), (0.25, 7.0), (0.5, 8.0), (0.75, 9.0), (0.999, 9.996)],
)
def test_jitter_scales_the_delay_within_25_percent(rand: float, expected: float) -> None:
    jittered = RetryPolicy.from_options({"backoff": "exponential", "base": 2, "jitter": True})
    assert jittered.delay(3, rand=lambda: rand) == pytest.approx(expected)
    assert 0.75 * 8 <= jittered.delay(3, rand=lambda: rand) < 1.25 * 8


def test_jitter_never_exceeds_the_cap() -> None:
    capped = RetryPolicy.from_options({"backoff": "exponential", "base": 1, "max_backoff": 9, "jitter": True})
    # Attempt 4 waits 8 s before jitter, 6 to 10 s after it: max_backoff still bounds the wait.
    assert [capped.delay(4, rand=lambda r=r: r) for r in (0.0, 0.5, 0.999)] == [6.0, 8.0, 9.0]
    # Far past the cap, jitter cannot push the wait beyond it either.
    assert [capped.delay(10, rand=lambda r=r: r) for r in (0.0, 0.999)] == [9.0, 9.0]
