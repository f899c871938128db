"""Forks in the demo: an example's run rerun from one of its steps, with a corrected context.

An :class:`~shop.demo.Example` with a ``fork`` is followed, once its run has ended as expected,
by a second run: ``durable_django.fork_run`` from ``from_step``, with the context the first run
had right before that step, changed by ``change``. The demo drives and checks it like any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from durable_django import fork_run
from durable_django.forks import known_context
from durable_django.models import WorkflowRun


@dataclass(frozen=True)
class Fork:
    """Where to rerun an example's run from, what to change in its context there, and how the fork must end."""

    from_step: str
    change: Mapping[str, Any]
    label: str
    status: str
    expect: dict[str, Any] = field(default_factory=dict)

    def example(self, original: Any, run: WorkflowRun) -> Any:
        """The example of the fork of ``run``, the run of example ``original`` (a ``shop.demo.Example``)."""

        def start(_: dict[str, Any]) -> WorkflowRun:
            context = {**(known_context(run, self.from_step) or {}), **self.change}
            return fork_run(run.pk, from_step=self.from_step, context=context)

        return dataclasses.replace(
            original,
            label=self.label,
            input=run.input,
            status=self.status,
            expect=self.expect,
            start=start,
            fork=None,
            responses={},
            early=(),
            note="",
        )
