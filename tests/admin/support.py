"""Helpers of the admin tests: start the test app's runs and read the admin's HTML."""

from __future__ import annotations

import os
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from django.urls import reverse

from durable_django import start_workflow
from durable_django.models import WorkflowRun
from durable_django.testing import EmbeddedQueue
from tests.testapp.workflows import ADMIN_FIXED

CHANGELIST = reverse("admin:durable_django_workflowrun_changelist")


def shoot(page: Any, directory: Path, name: str) -> None:
    """A full-page screenshot into ``directory`` (and ``$DURABLE_SCREENSHOTS`` when set, for the docs)."""
    targets = [directory / name]
    if os.environ.get("DURABLE_SCREENSHOTS"):
        targets.append(Path(os.environ["DURABLE_SCREENSHOTS"]) / name)
    for path in targets:
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        assert path.stat().st_size > 1000


def change_url(run: WorkflowRun | uuid.UUID | str) -> str:
    pk = run.pk if isinstance(run, WorkflowRun) else run
    return reverse("admin:durable_django_workflowrun_change", args=[pk])


def button_url(run: WorkflowRun, operation: str) -> str:
    return reverse(f"admin:durable_django_workflowrun_{operation}", args=[run.pk])


def order(queue: EmbeddedQueue, token: str, *, decline: bool = False, amount: int = 250) -> WorkflowRun:
    """A finished ``it_admin_order`` run: failed in its ``fulfil`` block when the card is declined."""
    # Keys whose order PostgreSQL's jsonb keeps (shorter first), so both databases print them alike.
    run = start_workflow("it_admin_order", {"token": token, "amount": amount, "decline": decline})
    queue.run_until_idle(timeout=30)
    run.refresh_from_db()
    return run


def sync(queue: EmbeddedQueue, token: str) -> WorkflowRun:
    """A failed ``it_admin_sync`` run whose child (``it_admin_import``) raised in ``import_rows``."""
    run = start_workflow("it_admin_sync", {"token": token})
    queue.run_until_idle(timeout=30)
    run.refresh_from_db()
    return run


def fix(token: str) -> None:
    """From now on, the failing steps of the runs of ``token`` succeed."""
    ADMIN_FIXED.add(token)


VOID = frozenset({"area", "br", "col", "hr", "img", "input", "line", "link", "meta", "rect", "path", "source", "wbr"})


class _Collector(HTMLParser):
    """Elements with a given class (or tag): their attributes, text and the classes of their ancestors."""

    def __init__(self, css_class: str | None, tag: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.css_class, self.tag = css_class, tag
        self.found: list[dict[str, Any]] = []
        self._open: list[tuple[str, set[str], dict[str, Any] | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        classes = set(values.get("class", "").split())
        element = None
        if (self.css_class is None or self.css_class in classes) and (self.tag is None or self.tag == tag):
            ancestors = set().union(*(opened[1] for opened in self._open)) if self._open else set()
            element = {**values, "tag": tag, "classes": classes, "ancestors": ancestors, "text": ""}
            self.found.append(element)
        if tag not in VOID:
            self._open.append((tag, classes, element))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, _, element in self._open:
            if element is not None:
                element["text"] += data


def elements(
    html: str | bytes, css_class: str | None = None, *, tag: str | None = None, within: str | None = None
) -> list[dict[str, Any]]:
    """Elements of ``html`` with ``css_class`` and/or ``tag`` (inside an element of class ``within``).

    Each is a dict of its attributes plus ``tag``, ``classes``, ``ancestors`` (their classes) and
    ``text`` (unescaped, as written).
    """
    collector = _Collector(css_class, tag)
    collector.feed(html.decode() if isinstance(html, bytes) else html)
    return [element for element in collector.found if within is None or within in element["ancestors"]]


def texts(html: str | bytes, css_class: str, *, within: str | None = None) -> list[str]:
    """The whitespace-collapsed text of each element with ``css_class``."""
    return [" ".join(element["text"].split()) for element in elements(html, css_class, within=within)]


def messages_of(response: Any) -> list[tuple[str, str]]:
    """``(level tag, text)`` of the messages a (followed) admin response shows."""
    return [(message.level_tag, str(message)) for message in response.context["messages"]]
