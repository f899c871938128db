"""Django signals about runs: started, finished, each attempt, each parallel block, each wait.

Connect receivers in an ``AppConfig.ready()`` (see docs/observability.md)::

    from django.dispatch import receiver
    from durable_django.signals import run_finished

    @receiver(run_finished)
    def on_run_finished(sender, run, **kwargs):
        ...

``sender`` is the workflow's name; every signal has the keyword ``run``, the ``WorkflowRun`` as
the change left it. Each signal is sent once the transaction that made its change commits (never
for a change rolled back), and once per change: only by the worker, job or request whose
conditional update made it, never by a duplicate job or the loser of a race. A receiver that
raises is logged and the others still run; the run goes on. When nothing is connected to a
signal, the engine builds nothing and queries nothing for it.
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger("durable_django")

#: A run was saved by ``start()``, ``start_workflow``, ``start_child`` or ``call_workflow``
#: (``pending``, its first job on its way). A retried run is not started again.
run_started = Signal()
#: A run reached ``completed``, ``failed`` or ``cancelled``; a run that compensates, once its
#: compensations are over. Sent again if a retried run ends again.
run_finished = Signal()
#: An attempt of a step, a branch, a foreach item, a branch block's choice or a compensation
#: ended ``completed`` or ``failed`` (a failed attempt that will be retried too): ``step_result``.
step_finished = Signal()
#: A parallel or foreach block's group closed ``completed``, ``failed`` or ``cancelled``: ``group``.
group_finished = Signal()
#: A step or branch returned a wait, which now waits: ``wait``.
wait_started = Signal()
#: A wait ended: ``resolved``, ``timed_out`` or ``cancelled`` (``wait.status`` says which): ``wait``.
wait_resolved = Signal()

NAMES: dict[Signal, str] = {
    run_started: "run_started",
    run_finished: "run_finished",
    step_finished: "step_finished",
    group_finished: "group_finished",
    wait_started: "wait_started",
    wait_resolved: "wait_resolved",
}


def listening(*signals: Signal) -> bool:
    """Whether a receiver is connected to one of ``signals``, for any sender.

    Not ``Signal.has_listeners()``, which without a sender counts only the receivers connected for
    every sender: a receiver connected for one workflow would go unnoticed.
    """
    return any(signal.receivers for signal in signals)


def send_on_commit(signal: Signal, workflow: str, using: str, **named: Any) -> None:
    """Send ``signal`` for a run of ``workflow`` once the transaction on database ``using`` commits
    (at once outside a transaction); never if it rolls back."""
    transaction.on_commit(partial(send, signal, workflow, named), using=using, robust=True)


def send(signal: Signal, workflow: str, named: dict[str, Any]) -> None:
    """Send ``signal`` to every receiver; one that raises is logged at ERROR, and the others still run.

    The sender is the workflow's name, interned: Django matches a receiver's ``sender`` by identity,
    and Python interns the string literals that look like identifiers (``sender="onboard_user"``).
    """
    for receiver, response in signal.send_robust(sys.intern(workflow), **named):
        if isinstance(response, Exception):
            logger.error(
                "receiver %s of signal %s (workflow %r) raised %s: %s; the other receivers still run",
                _name(receiver),
                NAMES.get(signal, repr(signal)),
                workflow,
                type(response).__name__,
                response,
                exc_info=response,
            )


def _name(receiver: Any) -> str:
    qualname = getattr(receiver, "__qualname__", None) or type(receiver).__qualname__
    module = getattr(receiver, "__module__", None)
    return f"{module}.{qualname}" if module else qualname
