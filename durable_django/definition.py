"""Workflow definitions: ``workflow`` / ``step`` / ``parallel``, their validation and the registry.

Definitions are frozen dataclasses. ``step()`` and ``parallel()`` only record what is wrong with
their arguments; ``workflow()`` validates everything at once, so every error names both the
workflow and the offending step.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .conf import durable_settings
from .exceptions import InvalidInput, WorkflowDefinitionError, WorkflowNotFound

if TYPE_CHECKING:
    from .models import WorkflowRun

StepFn = Callable[[dict[str, Any]], Any]
IntoFn = Callable[[dict[str, Any], dict[str, Any]], Any]

ON_ERROR_CHOICES = ("fail_fast", "complete_all")
BACKOFF_CHOICES = ("exponential", "linear", "constant")
RETRY_OPTIONS = ("max_attempts", "backoff", "base", "max_backoff", "jitter")


class NoInput:
    """The type of :data:`NO_INPUT`."""

    def __repr__(self) -> str:
        return "NO_INPUT"


NO_INPUT: Final = NoInput()
"""The default of ``start``'s ``input``: left out, the run starts with ``{}``.

Not ``None``, so that an explicit ``None`` (an input that was never filled in, say) is refused
rather than silently taken as ``{}``.
"""


def given_input(wf_name: str, input: dict[str, Any] | NoInput) -> dict[str, Any]:
    """The input a run of ``wf_name`` starts with: ``{}`` when left out; ``None`` is refused."""
    if isinstance(input, NoInput):
        return {}
    if input is None:
        raise InvalidInput(f"Input of workflow {wf_name!r} must be a dict, not None; pass {{}} or omit it.")
    return input


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a step is attempted and how long to wait between attempts."""

    max_attempts: int = 1
    backoff: str = "exponential"
    base: float = 1.0
    max_backoff: float = 30.0
    jitter: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> RetryPolicy:
        """Build a policy from the ``retry=`` dict; raises ``ValueError`` naming the bad option."""
        if options is None:
            return cls()
        if not isinstance(options, Mapping):
            raise ValueError(f"retry must be a dict, got {type(options).__name__}")
        unknown = sorted(set(options) - set(RETRY_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown retry option(s) {', '.join(map(repr, unknown))}; known: {', '.join(RETRY_OPTIONS)}"
            )
        max_attempts = options.get("max_attempts", 1)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"retry max_attempts must be an integer >= 1, got {max_attempts!r}")
        backoff = options.get("backoff", "exponential")
        if backoff not in BACKOFF_CHOICES:
            raise ValueError(f"retry backoff must be one of {', '.join(BACKOFF_CHOICES)}, got {backoff!r}")
        numbers = {}
        for key, default in (("base", 1.0), ("max_backoff", 30.0)):
            value = options.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"retry {key} must be a number of seconds >= 0, got {value!r}")
            numbers[key] = float(value)
        jitter = options.get("jitter", True)
        if not isinstance(jitter, bool):
            raise ValueError(f"retry jitter must be True or False, got {jitter!r}")
        return cls(max_attempts, backoff, numbers["base"], numbers["max_backoff"], jitter)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        if self.backoff == "exponential":
            seconds = self.base * 2 ** (attempt - 1)
        elif self.backoff == "linear":
            seconds = self.base * attempt
        else:
            seconds = self.base
        if self.jitter:
            seconds *= 0.75 + 0.5 * rand()
        return min(seconds, self.max_backoff)

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "base": self.base,
            "max_backoff": self.max_backoff,
            "jitter": self.jitter,
        }


@dataclass(frozen=True, slots=True)
class Step:
    """One step: a function of the context. Build it with :func:`step`."""

    name: str
    fn: StepFn
    retry: RetryPolicy = RetryPolicy()
    returns: str | None = None
    queue: str | None = None
    timeout: float | None = None
    problem: str | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The key of this step's result inside a parallel block's results."""
        return self.returns or self.name


@dataclass(frozen=True, slots=True)
class Parallel:
    """A block of steps that run concurrently. Build it with :func:`parallel`."""

    steps: tuple[Step, ...]
    on_error: str = "fail_fast"
    into: IntoFn | None = None
    name: str = ""
    problem: str | None = field(default=None, compare=False, repr=False)

    def branch(self, name: str) -> Step | None:
        """The step of this block called ``name``, or ``None``."""
        for member in self.steps:
            if member.name == name:
                return member
        return None


Node = Step | Parallel


@dataclass(frozen=True, slots=True)
class Workflow:
    """A validated, registered workflow. Build it with :func:`workflow`."""

    name: str
    steps: tuple[Node, ...]
    queue: str | None = None
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({node.name: position for position, node in enumerate(self.steps)})

    def position(self, name: str) -> int | None:
        """Index of the top-level step or parallel block called ``name``, or ``None``."""
        return self._index.get(name)

    def node(self, name: str) -> Node | None:
        """The top-level step or parallel block called ``name``, or ``None``."""
        position = self._index.get(name)
        return None if position is None else self.steps[position]

    def block(self, name: str) -> Parallel | None:
        """The parallel block called ``name``, or ``None`` (also when ``name`` is a sequential step)."""
        node = self.node(name)
        return node if isinstance(node, Parallel) else None

    def find_branch(self, name: str) -> tuple[Parallel, Step] | None:
        for node in self.steps:
            if isinstance(node, Parallel):
                for member in node.steps:
                    if member.name == name:
                        return node, member
        return None

    def start(self, input: dict[str, Any] | NoInput = NO_INPUT, *, idempotency_key: str | None = None) -> WorkflowRun:
        """Save a new run of this workflow and dispatch it once the surrounding transaction commits.

        ``input`` must be a JSON-serializable dict; left out, it is ``{}``. Anything else, ``None``
        included, raises :class:`~durable_django.exceptions.InvalidInput` and saves nothing.
        """
        # The one deliberate lazy import of the package: definitions load before the app registry
        # (workflows modules may be imported early), the engine needs the models.
        from .engine import get_or_start_run

        run, _ = get_or_start_run(self, given_input(self.name, input), idempotency_key=idempotency_key)
        return run

    def describe(self) -> list[dict[str, Any]]:
        """The structure as plain data (for APIs and docs)."""

        def one(s: Step) -> dict[str, Any]:
            return {
                "type": "step",
                "name": s.name,
                "returns": s.returns,
                "queue": s.queue,
                "timeout": s.timeout,
                "retry": s.retry.as_dict(),
            }

        return [
            one(node)
            if isinstance(node, Step)
            else {
                "type": "parallel",
                "name": node.name,
                "on_error": node.on_error,
                "into": node.into is not None,
                "steps": [one(member) for member in node.steps],
            }
            for node in self.steps
        ]

    def fingerprint(self) -> tuple[Any, ...]:
        """What makes two definitions "the same" (a module imported twice defines the same workflow)."""

        def fn_id(fn: Callable[..., Any] | None) -> tuple[Any, ...] | None:
            if fn is None:
                return None
            code = getattr(fn, "__code__", None)
            return (
                getattr(fn, "__module__", None),
                getattr(fn, "__qualname__", repr(fn)),
                getattr(code, "co_firstlineno", None),
            )

        def step_id(s: Step) -> tuple[Any, ...]:
            return (s.name, fn_id(s.fn), s.retry, s.returns, s.queue, s.timeout)

        return (
            self.name,
            self.queue,
            tuple(
                step_id(node)
                if isinstance(node, Step)
                else (node.name, node.on_error, fn_id(node.into), tuple(map(step_id, node.steps)))
                for node in self.steps
            ),
        )


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def step(
    name: str,
    fn: StepFn,
    *,
    retry: dict[str, Any] | None = None,
    returns: str | None = None,
    queue: str | None = None,
    timeout: float | None = None,
) -> Step:
    """Define a step. ``fn(ctx)`` returns ``ok(data)``, ``error(reason)`` or ``goto(step, data)``.

    ``timeout`` (seconds) fails an attempt that runs longer with ``{"type": "timeout", ...}``; the
    retry policy then applies as to any other failure.
    """
    problem = None
    policy = RetryPolicy()
    if not _is_name(name):
        problem = f"step name must be a non-empty string, got {name!r}"
    elif not callable(fn):
        problem = f"fn must be callable, got {type(fn).__name__}"
    elif returns is not None and not _is_name(returns):
        problem = f"returns must be a non-empty string, got {returns!r}"
    elif queue is not None and not _is_name(queue):
        problem = f"queue must be a non-empty string, got {queue!r}"
    elif timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 10**7
    ):
        problem = f"timeout must be a positive number of seconds, got {timeout!r}"
    else:
        try:
            policy = RetryPolicy.from_options(retry)
        except ValueError as exc:
            problem = str(exc)
    return Step(str(name), fn, policy, returns, queue, float(timeout) if timeout else None, problem)


def parallel(
    *steps: Step, on_error: str = "fail_fast", into: IntoFn | None = None, name: str | None = None
) -> Parallel:
    """Define a block of steps that run concurrently, joined once all (or, with fail_fast, the first
    failing) branches are done. ``into(ctx, results)`` may replace the context, fail or ``goto``."""
    problem = None
    if name is not None and not _is_name(name):
        problem = f"parallel block name must be a non-empty string, got {name!r}"
    elif not steps:
        problem = "a parallel block needs at least one step"
    elif bad := [s for s in steps if not isinstance(s, Step)]:
        problem = f"a parallel block holds steps only, got {type(bad[0]).__name__}"
    elif on_error not in ON_ERROR_CHOICES:
        problem = f"on_error must be one of {', '.join(map(repr, ON_ERROR_CHOICES))}, got {on_error!r}"
    elif into is not None and not callable(into):
        problem = f"into must be callable, got {type(into).__name__}"
    else:
        seen: dict[str, str] = {}
        for member in steps:
            # Two steps of the same name are reported by workflow() as a duplicate name.
            if member.key in seen and seen[member.key] != member.name:
                problem = (
                    f"steps {seen[member.key]!r} and {member.name!r} both return their result "
                    f"under the key {member.key!r}"
                )
                break
            seen[member.key] = member.name
    return Parallel(tuple(steps), on_error, into, name or "", problem)


def _validate(name: str, nodes: list[Node] | tuple[Node, ...], queue: str | None) -> tuple[Node, ...]:
    def fail(where: str, problem: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(f"Workflow {name!r}, {where}: {problem}")

    if not _is_name(name):
        raise WorkflowDefinitionError(f"Workflow name must be a non-empty string, got {name!r}")
    if queue is not None and not _is_name(queue):
        raise fail("queue", f"must be a non-empty string, got {queue!r}")
    if not isinstance(nodes, list | tuple) or not nodes:
        raise WorkflowDefinitionError(f"Workflow {name!r} needs a non-empty list of steps")
    named: list[Node] = []
    blocks = 0
    for position, node in enumerate(nodes, start=1):
        if isinstance(node, Step):
            if node.problem:
                raise fail(f"step {node.name!r}", node.problem)
            named.append(node)
        elif isinstance(node, Parallel):
            blocks += 1
            block_name = node.name or f"parallel_{blocks}"
            where = f"parallel block {block_name!r}"
            if node.problem:
                first = node.steps[0].name if node.steps and isinstance(node.steps[0], Step) else None
                raise fail(where + (f" (first step {first!r})" if first else ""), node.problem)
            for member in node.steps:
                if member.problem:
                    raise fail(f"step {member.name!r} in {where}", member.problem)
            named.append(Parallel(node.steps, node.on_error, node.into, block_name))
        else:
            raise fail(f"item {position}", f"expected step(...) or parallel(...), got {type(node).__name__}")
    seen: set[str] = set()
    for node in named:
        members = node.steps if isinstance(node, Parallel) else ()
        for label, item in [("parallel block" if members else "step", node.name)] + [("step", m.name) for m in members]:
            if item in seen:
                raise fail(f"{label} {item!r}", "the name is used more than once in this workflow")
            seen.add(item)
    return tuple(named)


_registry: dict[str, Workflow] = {}
_lock = threading.Lock()


def workflow(name: str, steps: list[Node], *, queue: str | None = None) -> Workflow:
    """Define a workflow and register it under ``name``.

    Registering the same definition twice is harmless (a module imported again); a different
    definition under a taken name raises :class:`WorkflowDefinitionError`.
    """
    definition = Workflow(name, _validate(name, steps, queue), queue)
    with _lock:
        existing = _registry.get(name)
        if existing is not None and existing.fingerprint() != definition.fingerprint():
            raise WorkflowDefinitionError(
                f"Workflow {name!r} is already registered with a different definition; "
                "pick another name or unregister the old one first."
            )
        _registry[name] = definition
    return definition


def get_workflow(name: str) -> Workflow:
    """The workflow registered under ``name``; raises :class:`WorkflowNotFound`."""
    try:
        return _registry[name]
    except KeyError:
        raise WorkflowNotFound(f"No workflow named {name!r} is registered.") from None


def start_workflow(
    name: str, input: dict[str, Any] | NoInput = NO_INPUT, *, idempotency_key: str | None = None
) -> WorkflowRun:
    """Start the workflow registered under ``name``; see :meth:`Workflow.start`."""
    return get_workflow(name).start(input, idempotency_key=idempotency_key)


def find_workflow(name: str) -> Workflow | None:
    """The workflow registered under ``name``, or ``None``."""
    return _registry.get(name)


def registered_workflows() -> dict[str, Workflow]:
    """A snapshot of the registry, by name."""
    return dict(_registry)


def unregister(name: str) -> None:
    """Remove a workflow from the registry (for tests and reloads)."""
    with _lock:
        _registry.pop(name, None)


def queue_for(wf: Workflow | None, node: Step | Parallel | None = None) -> str:
    """The queue a step runs on: the step's own, else the workflow's, else ``DURABLE["QUEUE"]``.

    A run whose workflow is no longer registered (``wf`` is None) still gets a job on the default
    queue: it ends with a stored error there.
    """
    if wf is None:
        return durable_settings.QUEUE
    own = node.queue if isinstance(node, Step) else None
    return own or wf.queue or durable_settings.QUEUE


def resolve(workflow_or_name: Workflow | str) -> Workflow:
    return workflow_or_name if isinstance(workflow_or_name, Workflow) else get_workflow(workflow_or_name)
