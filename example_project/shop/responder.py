"""The demo's stand-ins for whoever a waiting run waits for: a manager, the payment provider, the warehouse.

An example lists its responses by the step that waits (``{"ask_manager": Answer(...)}``), and
may send some right after its start (``early``), before its run waits for them. The
:class:`Responder` looks at the open waits of the demo's runs and performs each response once:
:class:`Answer` answers an input as a staff user, :class:`Webhook` POSTs the provider's signed
webhook through the shop's URLs, :class:`Send` sends an event as the warehouse's system would.
A wait without a response (a sleep, an input left to time out) ends by itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from durable_django import provide_input, send_event
from durable_django.models import Wait, WorkflowRun
from durable_django.waits import can_answer

from .models import PaymentIntent
from .webhooks import SIGNATURE_HEADER, sign

MANAGER = "demo-manager"
DIRECTOR = "demo-director"


def staff_user(username: str) -> Any:
    """The staff user ``username`` (created if needed), allowed to approve expense claims."""
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": True})
    user.user_permissions.add(Permission.objects.get(content_type__app_label="shop", codename="approve_expenses"))
    return user


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class Response(Protocol):
    def perform(self, run: WorkflowRun, wait: Wait | None) -> tuple[str, str]:
        """Act for ``run`` (``wait`` is ``None`` when sent early); returns what was done and a problem, if any."""


@dataclass(frozen=True)
class Answer:
    """Answer the input as the staff user ``user``."""

    answer: dict[str, Any]
    user: str = MANAGER

    def perform(self, run: WorkflowRun, wait: Wait | None) -> tuple[str, str]:
        if wait is None:
            return "", "an input cannot be answered before the run waits for it"
        user = get_user_model().objects.get(username=self.user)
        # provide_input leaves the permission check to its caller (the admin and the API check it too).
        if not can_answer(user, wait.permission):
            return "", f"{self.user} may not answer the input {wait.name!r} (needs {wait.permission})"
        provide_input(run.pk, wait.name, self.answer, user=user)
        return f"answered input {wait.name!r} as {self.user}: {_compact(self.answer)}", ""


@dataclass(frozen=True)
class Webhook:
    """POST the provider's signed webhook about the run's payment intent; ``expect``: the view's result."""

    event: str
    payload: dict[str, Any] = field(default_factory=dict)
    expect: str = "delivered"

    def perform(self, run: WorkflowRun, wait: Wait | None) -> tuple[str, str]:
        intent = PaymentIntent.objects.get(run=run)
        body = json.dumps({"type": self.event, "data": {"provider_ref": intent.provider_ref, **self.payload}}).encode()
        url = reverse("shop:payment-webhook")
        # Through the URL routing and the view, without a server.
        response = Client(HTTP_HOST="localhost").post(
            url, body, content_type="application/json", headers={SIGNATURE_HEADER: sign(body)}
        )
        answer = response.content.decode()
        line = f"posted the provider's webhook {self.event} to {url}: {response.status_code} {answer}"
        result = response.json().get("result") if response.status_code == 200 else None
        problem = (
            ""
            if result == self.expect
            else f"the webhook answered {response.status_code} {answer}, expected {self.expect}"
        )
        return line, problem


@dataclass(frozen=True)
class Send:
    """Send ``event`` to the run, as another system would; ``expect``: what ``send_event`` returns."""

    event: str
    payload: dict[str, Any] = field(default_factory=dict)
    expect: str = "delivered"

    def perform(self, run: WorkflowRun, wait: Wait | None) -> tuple[str, str]:
        result = send_event(run.pk, self.event, self.payload)
        problem = "" if result == self.expect else f"send_event returned {result!r}, expected {self.expect!r}"
        return f"sent event {self.event} {_compact(self.payload)}: {result}", problem


class Responder:
    """Performs the responses of the demo's runs, each once, and remembers what it did per run."""

    def __init__(self) -> None:
        self.responses: dict[Any, Mapping[str, Response]] = {}
        self.notes: dict[Any, list[str]] = {}
        self.problems: dict[Any, list[str]] = {}
        self.seen: set[int] = set()

    def track(self, run: WorkflowRun, responses: Mapping[str, Response], early: Iterable[Response] = ()) -> None:
        """Respond to ``run``'s waits from now on; send what it gets ``early`` at once."""
        self.responses[run.pk] = responses
        self.notes[run.pk], self.problems[run.pk] = [], []
        for response in early:
            self.perform(run, response)

    def perform(self, run: WorkflowRun, response: Response, wait: Wait | None = None) -> None:
        line, problem = response.perform(run, wait)
        if line:
            self.notes[run.pk].append(line)
        if problem:
            self.problems[run.pk].append(problem)

    def respond(self) -> int:
        """Answer the open waits of the runs that have a response for them; returns how many."""
        performed = 0
        waits = (
            Wait.objects.waiting()
            .filter(run_id__in=list(self.responses))
            .exclude(pk__in=self.seen)
            .select_related("run", "step_result")
            .order_by("id")
        )
        for wait in waits:
            self.seen.add(wait.pk)
            response = self.responses[wait.run_id].get(wait.step_result.step)
            if response is not None:
                self.perform(wait.run, response, wait)
                performed += 1
        return performed
