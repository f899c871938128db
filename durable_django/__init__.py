"""durable_django: durable workflows with parallel steps for Django, executed on RQ.

Everything listed in ``__all__`` is the public API.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .exceptions import (
    DurableConfigurationError,
    DurableError,
    InvalidInput,
    NotInStepError,
    RunStateError,
    WorkflowDefinitionError,
    WorkflowNotFound,
)

try:
    __version__ = version("durable-django")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

__all__ = [
    "Branch",
    "DurableConfigurationError",
    "DurableError",
    "Foreach",
    "InvalidInput",
    "NotInStepError",
    "Parallel",
    "RetryPolicy",
    "RunStateError",
    "Schedule",
    "Step",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowNotFound",
    "assign",
    "branch",
    "call_workflow",
    "can_answer",
    "cancel_run",
    "cancel_runs",
    "current_run_id",
    "error",
    "foreach",
    "fork_run",
    "get_workflow",
    "goto",
    "ok",
    "parallel",
    "parallel_ok",
    "parallel_result",
    "parallel_results",
    "provide_input",
    "retry_run",
    "retry_runs",
    "schedule",
    "send_event",
    "sleep",
    "sleep_until",
    "start_child",
    "start_workflow",
    "step",
    "wait_for_all",
    "wait_for_any",
    "wait_for_event",
    "wait_for_input",
    "workflow",
]

# The definition API and the helpers import no models, so they load before Django's app
# registry is ready (workflows modules may be imported early). The rest is loaded on first use.
from .context import assign, current_run_id, parallel_ok, parallel_result, parallel_results
from .definition import (
    Branch,
    Foreach,
    Parallel,
    RetryPolicy,
    Step,
    Workflow,
    branch,
    foreach,
    get_workflow,
    parallel,
    start_workflow,
    step,
    workflow,
)
from .results import error, goto, ok
from .schedules import schedule
from .waits import can_answer, sleep, sleep_until, wait_for_all, wait_for_any, wait_for_event, wait_for_input

_LAZY = {
    "Schedule": ".models",
    "call_workflow": ".children",
    "cancel_run": ".operations",
    "cancel_runs": ".bulk",
    "fork_run": ".forks",
    "provide_input": ".resume",
    "retry_run": ".operations",
    "retry_runs": ".bulk",
    "send_event": ".resume",
    "start_child": ".children",
}

if TYPE_CHECKING:
    from .bulk import cancel_runs, retry_runs
    from .children import call_workflow, start_child
    from .forks import fork_run
    from .models import Schedule
    from .operations import cancel_run, retry_run
    from .resume import provide_input, send_event


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'durable_django' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
