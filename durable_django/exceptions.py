"""Exceptions raised by durable_django. Every one derives from :class:`DurableError`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured


class DurableError(Exception):
    """Base class of every durable_django error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class WorkflowDefinitionError(DurableError):
    """The workflow definition is invalid."""


class WorkflowNotFound(DurableError, LookupError):
    """No workflow is registered under that name."""


class InvalidInput(DurableError, ValueError):
    """Workflow input must be a JSON-serializable dict."""

    #: The field of an answer (or payload) that was wrong, when one was.
    field: str | None = None


class NotInStepError(DurableError, RuntimeError):
    """This helper needs a context: call it from inside a running step or pass ctx explicitly."""


class DurableConfigurationError(DurableError, ImproperlyConfigured):
    """The DURABLE setting is invalid."""


class RunStateError(DurableError):
    """The run is not in a state that allows this operation."""


class UnknownStep(DurableError, ValueError):
    """The workflow has no top-level step or block of that name."""

    def __init__(self, message: str, known: list[str]) -> None:
        super().__init__(message)
        #: The names of the workflow's top-level steps and blocks.
        self.known = known


class ContextNotRecorded(DurableError, ValueError):
    """The context the run had before that step was not recorded: give one."""


class RunNotDeletable(RunStateError):
    """A run that has not finished, or whose parent or child runs have not, cannot be deleted."""

    def __init__(self, refusals: dict[Any, str]) -> None:
        super().__init__(" ".join(f"Run {run_id}: {reason}" for run_id, reason in refusals.items()))
        #: Why each refused run may not be deleted, by run id.
        self.refusals = refusals


class AmbiguousRunId(DurableError, LookupError):
    """More than one run has an id starting with this prefix: give more of the id."""

    def __init__(self, prefix: str, candidates: int) -> None:
        super().__init__(f"{candidates} runs have an id starting with {prefix!r}; give more of the id.")
        self.prefix = prefix
        #: How many runs the prefix matches.
        self.candidates = candidates
