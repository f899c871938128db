"""Workflow definitions: ``workflow`` / ``step`` / ``parallel``, their validation and the registry.

Definitions are frozen dataclasses. ``step()`` and ``parallel()`` only record what is wrong with
their arguments; ``workflow()`` validates everything at once, so every error names both the
workflow and the offending step.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .conf import durable_settings
from .deadlines import run_timeout
from .exceptions import InvalidInput, WorkflowDefinitionError, WorkflowNotFound
from .nodes import (
    ERROR_KEY,
    INDEX_KEY,
    Block,
    Branch,
    Foreach,
    IntoFn,
    ItemsFn,
    Node,
    OnFn,
    Parallel,
    Step,
    StepFn,
    all_steps,
    successors,
    walk,
)
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .models import WorkflowRun


ON_ERROR_CHOICES = ("fail_fast", "complete_all")


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
class Workflow:
    """A validated, registered workflow. Build it with :func:`workflow`."""

    name: str
    steps: tuple[Node, ...]
    queue: str | None = None
    #: Seconds a run may take from its start; a run not finished by then fails with ``workflow_timeout``.
    timeout: float | None = None
    # Every node in execution order (a branch block's cases after it), its position there, and
    # the name of the node each is followed by: a case's last step goes on after its block.
    flat: tuple[Node, ...] = field(default=(), compare=False, repr=False)
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    _next: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)
    _top: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flat", tuple(walk(self.steps)))
        object.__setattr__(self, "_top", frozenset(node.name for node in self.steps))
        self._index.update({node.name: position for position, node in enumerate(self.flat)})
        successors(self.steps, None, self._next)

    def position(self, name: str) -> int | None:
        """Position of the step or block called ``name`` in :attr:`flat`, or ``None``."""
        return self._index.get(name)

    def following(self, name: str) -> int:
        """Position of the node that comes after ``name``; ``len(flat)`` when the run completes after it."""
        after = self._next.get(name)
        return len(self.flat) if after is None else self._index[after]

    def goto_position(self, name: str) -> int | None:
        """Position of the top-level step or block ``name`` (the only targets of ``goto``), or ``None``."""
        return self._index.get(name) if name in self._top else None

    def is_top_level(self, name: str) -> bool:
        """Whether ``name`` is a top-level step or block: a target of ``goto`` and ``fork_run``."""
        return name in self._top

    def node(self, name: str) -> Node | None:
        """The step or block called ``name`` (a case's steps included), or ``None``."""
        position = self._index.get(name)
        return None if position is None else self.flat[position]

    def block(self, name: str) -> Block | None:
        """The parallel or foreach block called ``name``, or ``None`` (also when ``name`` is a step)."""
        node = self.node(name)
        return node if isinstance(node, Parallel | Foreach) else None

    def find_branch(self, name: str) -> tuple[Parallel, Step] | None:
        for node in self.flat:
            if isinstance(node, Parallel):
                for member in node.steps:
                    if member.name == name:
                        return node, member
        return None

    def all_steps(self) -> list[Step]:
        """Every step this workflow may execute (see :func:`all_steps`)."""
        return all_steps(self.steps)

    @property
    def has_compensations(self) -> bool:
        """Whether a step or branch of this workflow has a ``compensate`` function."""
        return any(member.compensate is not None for member in self.all_steps())

    def compensable(self) -> dict[str, Step]:
        """The steps and branches of this workflow that have a ``compensate`` function, by name."""
        return {member.name: member for member in self.all_steps() if member.compensate is not None}

    def start(
        self,
        input: dict[str, Any] | NoInput = NO_INPUT,
        *,
        idempotency_key: str | None = None,
        delay: float | dt.timedelta | None = None,
        run_at: dt.datetime | None = None,
    ) -> WorkflowRun:
        """Save a new run of this workflow and dispatch it once the surrounding transaction commits.

        ``input`` must be a JSON-serializable dict; left out, it is ``{}``. Anything else, ``None``
        included, raises :class:`~durable_django.exceptions.InvalidInput` and saves nothing.
        ``delay`` (seconds, or a timedelta) or ``run_at`` (an aware datetime) start it later: it
        stays ``pending`` until then and holds no worker; a time in the past starts it at once.
        """
        # The one deliberate lazy import of the package: definitions load before the app registry
        # (workflows modules may be imported early), the engine needs the models.
        from .engine import get_or_start_run

        run, _ = get_or_start_run(
            self, given_input(self.name, input), idempotency_key=idempotency_key, delay=delay, run_at=run_at
        )
        return run

    def describe(self) -> list[dict[str, Any]]:
        """The structure as plain data (for APIs and docs)."""
        return [describe_node(node) for node in self.steps]

    def fingerprint(self) -> tuple[Any, ...]:
        """What makes two definitions "the same" (a module imported twice defines the same workflow)."""
        return (self.name, self.queue, self.timeout, tuple(map(_node_id, self.steps)))


def _fn_id(fn: Callable[..., Any] | str | None) -> tuple[Any, ...] | str | None:
    if fn is None or isinstance(fn, str):
        return fn
    code = getattr(fn, "__code__", None)
    return (
        getattr(fn, "__module__", None),
        getattr(fn, "__qualname__", repr(fn)),
        getattr(code, "co_firstlineno", None),
    )


def _node_id(node: Node) -> tuple[Any, ...]:
    if isinstance(node, Step):
        return (node.name, _fn_id(node.fn), node.retry, node.returns, node.queue, node.timeout, _fn_id(node.compensate))
    if isinstance(node, Parallel):
        return (node.name, node.on_error, _fn_id(node.into), tuple(map(_node_id, node.steps)))
    if isinstance(node, Foreach):
        return (
            "foreach",
            node.name,
            _fn_id(node.items),
            _fn_id(node.fn),
            node.on_error,
            _fn_id(node.into),
            node.max_concurrency,
            node.retry,
            node.queue,
            node.item_key,
        )
    return (
        "branch",
        node.name,
        _fn_id(node.on),
        tuple((key, tuple(map(_node_id, nodes))) for key, nodes in node.arms()),
    )


def _describe_step(s: Step) -> dict[str, Any]:
    return {
        "type": "step",
        "name": s.name,
        "returns": s.returns,
        "queue": s.queue,
        "timeout": s.timeout,
        "retry": s.retry.as_dict(),
        "compensate": s.compensate is not None,
    }


def describe_node(node: Node) -> dict[str, Any]:
    """One node of a workflow as plain data."""
    if isinstance(node, Step):
        return _describe_step(node)
    if isinstance(node, Parallel):
        return {
            "type": "parallel",
            "name": node.name,
            "on_error": node.on_error,
            "into": node.into is not None,
            "steps": [_describe_step(member) for member in node.steps],
        }
    if isinstance(node, Foreach):
        return {
            "type": "foreach",
            "name": node.name,
            "items": node.items if isinstance(node.items, str) else None,
            "on_error": node.on_error,
            "into": node.into is not None,
            "max_concurrency": node.max_concurrency,
            "queue": node.queue,
            "item_key": node.item_key,
            "retry": node.retry.as_dict(),
        }
    return {
        "type": "branch",
        "name": node.name,
        "on": node.on if isinstance(node.on, str) else None,
        "cases": {key: [describe_node(member) for member in nodes] for key, nodes in node.cases},
        "default": None if node.default is None else [describe_node(member) for member in node.default],
    }


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
    compensate: StepFn | None = None,
) -> Step:
    """Define a step. ``fn(ctx)`` returns ``ok(data)``, ``error(reason)`` or ``goto(step, data)``.

    ``timeout`` (seconds) fails an attempt that runs longer with ``{"type": "timeout", ...}``; the
    retry policy then applies as to any other failure. ``compensate(ctx)`` undoes what the step
    did once its run fails later on (see docs/control-flow.md): it is called with the context as
    it was right after the step, plus ``ctx["__error__"]``, the run's error.
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
    elif compensate is not None and not callable(compensate):
        problem = f"compensate must be callable, got {type(compensate).__name__}"
    else:
        try:
            policy = RetryPolicy.from_options(retry)
        except ValueError as exc:
            problem = str(exc)
    return Step(str(name), fn, policy, returns, queue, float(timeout) if timeout else None, compensate, problem)


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


def foreach(
    name: str,
    items: ItemsFn | str,
    fn: StepFn,
    *,
    on_error: str = "fail_fast",
    into: IntoFn | None = None,
    max_concurrency: int | None = None,
    retry: dict[str, Any] | None = None,
    queue: str | None = None,
    item_key: str = "item",
) -> Foreach:
    """Define a block that runs ``fn`` once per item of a list, concurrently, joined like ``parallel``.

    ``items`` is a function ``ctx -> list`` or the name of a context key holding the list. Each
    item's branch is called with a copy of the context holding ``ctx[item_key]`` (the item) and
    ``ctx["__index__"]`` (its 0-based position). The results are a list in item order of
    ``("ok", data)`` / ``("error", reason)``: in ``ctx["__results__"]``, or passed to
    ``into(ctx, results)``. ``max_concurrency``: at most that many items execute at once.
    """
    problem = None
    policy = RetryPolicy()
    if not _is_name(name):
        problem = f"foreach block name must be a non-empty string, got {name!r}"
    elif not (callable(items) or _is_name(items)):
        problem = f"items must be a function of the context or the name of a context key, got {items!r}"
    elif not callable(fn):
        problem = f"fn must be callable, got {type(fn).__name__}"
    elif on_error not in ON_ERROR_CHOICES:
        problem = f"on_error must be one of {', '.join(map(repr, ON_ERROR_CHOICES))}, got {on_error!r}"
    elif into is not None and not callable(into):
        problem = f"into must be callable, got {type(into).__name__}"
    elif max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        problem = f"max_concurrency must be an integer >= 1 (or None for no limit), got {max_concurrency!r}"
    elif queue is not None and not _is_name(queue):
        problem = f"queue must be a non-empty string, got {queue!r}"
    elif not _is_name(item_key) or item_key in (RESERVED_KEYS):
        problem = f"item_key must be a non-empty string other than {', '.join(RESERVED_KEYS)}, got {item_key!r}"
    else:
        try:
            policy = RetryPolicy.from_options(retry)
        except ValueError as exc:
            problem = str(exc)
    return Foreach(
        str(name), items, fn, on_error, into, max_concurrency, policy, queue, str(item_key) if item_key else "", problem
    )


def branch(name: str, on: OnFn | str, cases: dict[str, list[Node]], *, default: list[Node] | None = None) -> Branch:
    """Define a block that runs the steps of one case, chosen by ``on`` at run time.

    ``on`` is a function ``ctx -> value`` or the name of a context key; the steps of
    ``cases[str(value)]`` (else ``default``) run in order, then the run goes on after the block.
    No match and no default fails the run with ``{"type": "no_branch_matched", "value": value}``.
    """
    problem = None
    arms: tuple[tuple[str, tuple[Node, ...]], ...] = ()
    if not _is_name(name):
        problem = f"branch block name must be a non-empty string, got {name!r}"
    elif not (callable(on) or _is_name(on)):
        problem = f"on must be a function of the context or the name of a context key, got {on!r}"
    elif not isinstance(cases, Mapping) or not cases:
        problem = f"cases must be a non-empty dict of case -> list of steps, got {cases!r}"
    elif bad_key := next((key for key in cases if not isinstance(key, str)), None):
        problem = f"case keys must be strings (the value of on is compared as str(value)), got {bad_key!r}"
    elif bad_case := next((key for key, nodes in cases.items() if not isinstance(nodes, list | tuple)), None):
        problem = f"case {bad_case!r} must be a list of steps, got {type(cases[bad_case]).__name__}"
    elif default is not None and not isinstance(default, list | tuple):
        problem = f"default must be a list of steps or None, got {type(default).__name__}"
    else:
        arms = tuple((key, tuple(nodes)) for key, nodes in cases.items())
    return Branch(
        str(name) if _is_name(name) else "",
        on,
        arms,
        None if default is None or problem else tuple(default),
        problem,
    )


RESERVED_KEYS = ("__results__", INDEX_KEY, ERROR_KEY)


def _validate(name: str, nodes: list[Node] | tuple[Node, ...], queue: str | None) -> tuple[Node, ...]:
    def fail(where: str, problem: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(f"Workflow {name!r}, {where}: {problem}")

    if not _is_name(name):
        raise WorkflowDefinitionError(f"Workflow name must be a non-empty string, got {name!r}")
    if queue is not None and not _is_name(queue):
        raise fail("queue", f"must be a non-empty string, got {queue!r}")
    if not isinstance(nodes, list | tuple) or not nodes:
        raise WorkflowDefinitionError(f"Workflow {name!r} needs a non-empty list of steps")
    blocks = 0

    def check(sequence: list[Node] | tuple[Node, ...], inside: str) -> tuple[Node, ...]:
        nonlocal blocks
        named: list[Node] = []
        for position, node in enumerate(sequence, start=1):
            if isinstance(node, Step):
                if node.problem:
                    raise fail(f"step {node.name!r}{inside}", node.problem)
                named.append(node)
            elif isinstance(node, Parallel):
                blocks += 1
                block_name = node.name or f"parallel_{blocks}"
                where = f"parallel block {block_name!r}{inside}"
                if node.problem:
                    first = node.steps[0].name if node.steps and isinstance(node.steps[0], Step) else None
                    raise fail(where + (f" (first step {first!r})" if first else ""), node.problem)
                for member in node.steps:
                    if member.problem:
                        raise fail(f"step {member.name!r} in {where}", member.problem)
                named.append(Parallel(node.steps, node.on_error, node.into, block_name))
            elif isinstance(node, Foreach):
                if node.problem:
                    raise fail(f"foreach block {node.name!r}{inside}", node.problem)
                named.append(node)
            elif isinstance(node, Branch):
                where = f"branch block {node.name!r}{inside}"
                if node.problem:
                    raise fail(where, node.problem)
                cases = tuple((key, check(arm, f" in case {key!r} of {where}")) for key, arm in node.cases)
                default = None if node.default is None else check(node.default, f" in the default of {where}")
                named.append(Branch(node.name, node.on, cases, default))
            else:
                raise fail(
                    f"item {position}{inside}",
                    f"expected step(...), parallel(...), foreach(...) or branch(...), got {type(node).__name__}",
                )
        return tuple(named)

    checked = check(nodes, "")
    seen: set[str] = set()
    for node in walk(checked):
        label = {Step: "step", Parallel: "parallel block", Foreach: "foreach block", Branch: "branch block"}[type(node)]
        members = node.steps if isinstance(node, Parallel) else ()
        for kind, item in [(label, node.name)] + [("step", m.name) for m in members]:
            if item in seen:
                raise fail(f"{kind} {item!r}", "the name is used more than once in this workflow")
            seen.add(item)
    return checked


_registry: dict[str, Workflow] = {}
_lock = threading.Lock()


def workflow(
    name: str, steps: list[Node], *, queue: str | None = None, timeout: float | dt.timedelta | None = None
) -> Workflow:
    """Define a workflow and register it under ``name``.

    ``timeout`` (seconds, or a timedelta): a run not finished that long after it started fails
    with ``{"type": "workflow_timeout"}``, even while a step of it is still executing.
    Registering the same definition twice is harmless (a module imported again); a different
    definition under a taken name raises :class:`WorkflowDefinitionError`.
    """
    definition = Workflow(name, _validate(name, steps, queue), queue, run_timeout(name, timeout))
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
    name: str,
    input: dict[str, Any] | NoInput = NO_INPUT,
    *,
    idempotency_key: str | None = None,
    delay: float | dt.timedelta | None = None,
    run_at: dt.datetime | None = None,
) -> WorkflowRun:
    """Start the workflow registered under ``name``; see :meth:`Workflow.start`."""
    return get_workflow(name).start(input, idempotency_key=idempotency_key, delay=delay, run_at=run_at)


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


def queue_for(wf: Workflow | None, node: Node | None = None) -> str:
    """The queue a step runs on: the step's own, else the workflow's, else ``DURABLE["QUEUE"]``.

    A run whose workflow is no longer registered (``wf`` is None) still gets a job on the default
    queue: it ends with a stored error there.
    """
    if wf is None:
        return durable_settings.QUEUE
    own = node.queue if isinstance(node, Step | Foreach) else None
    return own or wf.queue or durable_settings.QUEUE


def resolve(workflow_or_name: Workflow | str) -> Workflow:
    return workflow_or_name if isinstance(workflow_or_name, Workflow) else get_workflow(workflow_or_name)
