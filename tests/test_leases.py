"""Leases: what the heartbeat renews, and how often."""

from __future__ import annotations

import time
from typing import Any

from django.db.models import Model
from django.test import override_settings

from durable_django import leases
from durable_django.models import StepResult


def test_with_the_default_lease_a_process_renews_its_leases_36_times_a_minute_while_a_step_runs() -> None:
    with override_settings(DURABLE={}):
        assert (leases.renew_every(), 60 / leases.renew_every()) == (5 / 3, 36.0)


def test_rows_let_go_of_are_no_longer_renewed_while_the_rest_of_the_batch_is() -> None:
    renewed: list[dict[type[Model], list[Any]]] = []
    heartbeat = leases.Heartbeat(lambda held: renewed.append({model: sorted(pks) for model, pks in held.items()}))
    with override_settings(DURABLE={"LEASE_SECONDS": 0.15}):
        with heartbeat.hold_many(StepResult, [1, 2, 3]) as let_go:
            let_go([1, 2])
            let_go([2])  # let go of already: nothing changes
            deadline = time.monotonic() + 10
            while not renewed and time.monotonic() < deadline:
                time.sleep(0.01)
        assert renewed[0] == {StepResult: [3]}
        # Once the block is left, nothing is held: no renewal writes anything.
        renewed.clear()
        time.sleep(0.2)
    assert renewed == []
