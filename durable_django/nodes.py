"""The nodes of a workflow definition: steps and blocks, frozen dataclasses, and how they nest.

Built (and checked) by the functions of :mod:`durable_django.definition`: ``step``, ``parallel``,
``foreach`` and ``branch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .retry import RetryPolicy

StepFn = Callable[[dict[str, Any]], Any]
IntoFn = Callable[[dict[str, Any], Any], Any]
ItemsFn = Callable[[dict[str, Any]], Any]
OnFn = Callable[[dict[str, Any]], Any]
INDEX_KEY = "__index__"
ERROR_KEY = "__error__"


@dataclass(frozen=True, slots=True)
class Step:
    """One step: a function of the context. Build it with :func:`step`."""

    name: str
    fn: StepFn
    retry: RetryPolicy = RetryPolicy()
    returns: str | None = None
    queue: str | None = None
    timeout: float | None = None
    compensate: StepFn | None = None
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


@dataclass(frozen=True, slots=True)
class Foreach:
    """A block that runs ``fn`` once per item of a list known at run time. Build it with :func:`foreach`."""

    name: str
    items: ItemsFn | str
    fn: StepFn
    on_error: str = "fail_fast"
    into: IntoFn | None = None
    max_concurrency: int | None = None
    retry: RetryPolicy = RetryPolicy()
    queue: str | None = None
    item_key: str = "item"
    problem: str | None = field(default=None, compare=False, repr=False)

    @property
    def member(self) -> Step:
        """The step every item executes: named like the block, with its retry policy and queue."""
        return Step(self.name, self.fn, self.retry, None, self.queue)

    @property
    def steps(self) -> tuple[Step, ...]:
        return (self.member,)

    def branch(self, name: str) -> Step | None:
        """The step of an item (every item's row is named like the block), or ``None``."""
        return self.member if name == self.name else None


@dataclass(frozen=True, slots=True)
class Branch:
    """Steps chosen at run time by a value of the context. Build it with :func:`branch`."""

    name: str
    on: OnFn | str
    cases: tuple[tuple[str, tuple[Node, ...]], ...]
    default: tuple[Node, ...] | None = None
    problem: str | None = field(default=None, compare=False, repr=False)

    def case(self, key: str) -> tuple[Node, ...] | None:
        """The steps of case ``key``, else the default's, else ``None``."""
        for name, nodes in self.cases:
            if name == key:
                return nodes
        return self.default

    def arms(self) -> list[tuple[str | None, tuple[Node, ...]]]:
        """Every case (``None`` for the default) with its steps, in definition order."""
        out: list[tuple[str | None, tuple[Node, ...]]] = list(self.cases)
        if self.default is not None:
            out.append((None, self.default))
        return out


Block = Parallel | Foreach
Node = Step | Parallel | Foreach | Branch


def walk(nodes: tuple[Node, ...] | list[Node]) -> list[Node]:
    """Every node of ``nodes`` in execution order, the steps of a branch block's cases after it."""
    out: list[Node] = []
    for node in nodes:
        out.append(node)
        if isinstance(node, Branch):
            for _, arm in node.arms():
                out.extend(walk(arm))
    return out


def all_steps(nodes: tuple[Node, ...] | list[Node]) -> list[Step]:
    """Every step a workflow may execute: sequential steps, branches, foreach items, cases' steps."""
    out: list[Step] = []
    for node in walk(nodes):
        if isinstance(node, Step):
            out.append(node)
        elif isinstance(node, Parallel | Foreach):
            out.extend(node.steps)
    return out


def successors(nodes: tuple[Node, ...], after: str | None, into: dict[str, str | None]) -> None:
    """Fill ``into``: the name of the node each node of ``nodes`` is followed by (``None``: the end)."""
    for position, node in enumerate(nodes):
        following = nodes[position + 1].name if position + 1 < len(nodes) else after
        into[node.name] = following
        if isinstance(node, Branch):
            for _, arm in node.arms():
                successors(arm, following, into)
