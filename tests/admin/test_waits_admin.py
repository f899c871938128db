"""The admin of waits through Django's test client: a run's Waits, sending events, the inbox, answers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from durable_django import resume
from durable_django.admin_waits import answer_url, inbox_url
from durable_django.answer_forms import answer_form
from durable_django.exceptions import InvalidInput, RunStateError
from durable_django.models import Event, Wait, WorkflowRun
from durable_django.operations import cancel_run
from durable_django.testing import EmbeddedQueue
from tests.admin.support import change_url, elements, messages_of, texts
from tests.admin.waits_support import APPROVAL_PROMPT, branch_waits, buffered, start_waiting, waiting_run

pytestmark = pytest.mark.django_db

INBOX = reverse("admin:durable_django_wait_inbox")

# Declared in the order PostgreSQL's jsonb keeps keys (shorter first): the form shows them in that order.
FORM_SPEC = {
    "fields": {
        "note": {"type": "string", "required": False, "label": "Note", "help": "Shown to the customer"},
        "rate": {"type": "number", "required": False, "label": "Rate"},
        "amount": {"type": "integer", "required": True, "label": "Amount"},
        "express": {"type": "boolean", "required": False, "label": "Express"},
        "ship_on": {"type": "date", "required": True, "label": "Ship on"},
    }
}


def staff_client(django_user_model: Any, *perms: str) -> Client:
    """A staff user holding only ``perms`` (``app_label.codename``)."""
    user = django_user_model.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client = Client()
    client.force_login(user)
    return client


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


# -- a run's page ----------------------------------------------------------------------------------


def test_run_page_lists_what_the_run_waits_for_since_when_and_until_when(admin_client: Client) -> None:
    run, wait = waiting_run()
    branch_waits(run)
    html = page(admin_client, change_url(run))
    rows = elements(html, "durable-wait", tag="tr")
    assert [row["data-kind"] for row in rows] == ["input", "event", "sleep"]
    assert texts(html, "wait-subject") == [
        f"input refund_ok {APPROVAL_PROMPT} Answer in the inbox",
        "event mail_sent",
        "sleep 2 min",
    ]
    assert texts(html, "wait-step") == ["decide", "mail in notify", "pause in notify"]
    assert [text.split()[0] for text in texts(html, "wait-status")] == ["Waiting", "Waiting", "Resolved"]
    until = texts(html, "wait-until")
    assert until[0] == "—"
    assert until[1].startswith("times out at ") and until[1].endswith(
        '(after 10 min), then goes on with {"sent": false}'
    )
    assert until[2].startswith("until ")
    assert texts(html, "wait-resolved")[2].endswith("time was up")
    # The prompt is text, never markup.
    assert "Refund &lt;b&gt;250&lt;/b&gt;" in html and "<b>250</b>" not in html
    (link,) = elements(html, "durable-answer-link")
    assert link["href"] == answer_url(admin.site, wait.pk)
    # The object tools link to the run's inputs in the inbox.
    (inbox,) = elements(html, "durable-inbox-link")
    assert inbox["href"] == f"{INBOX}?run={run.pk}"


def test_run_page_shows_buffered_events_and_the_send_event_form(admin_client: Client) -> None:
    run, _ = waiting_run(kind="event", name="paid", input_kind="", prompt="")
    buffered(run, "early", {"note": "<script>x</script>"})
    html = page(admin_client, change_url(run))
    assert texts(html, "event-name") == ["early"]
    assert texts(html, "event-payload") == ['{"note": "<script>x</script>"}']
    assert "<script>x</script>" not in html
    # Forms do not nest: the fields, inside the run's form, belong to the send-event form after it.
    (form,) = elements(html, "durable-send-event-form", tag="form")
    assert form["action"] == reverse("admin:durable_django_workflowrun_send_event", args=[run.pk])
    assert not elements(html, tag="form", within="durable-waits-module")
    fields = elements(html, within="durable-send-event")
    assert {field["tag"]: field["form"] for field in fields if "form" in field} == {
        "input": "durable-send-event-form",
        "textarea": "durable-send-event-form",
        "button": "durable-send-event-form",
    }
    (name,) = [field for field in fields if field.get("name") == "event"]
    # The one event the run waits for is filled in.
    assert name["value"] == "paid"


def test_the_send_event_form_needs_the_change_permission_and_an_unfinished_run(
    admin_client: Client, django_user_model: Any
) -> None:
    run, _ = waiting_run(kind="event", name="paid", input_kind="", prompt="")
    viewer = staff_client(django_user_model, "durable_django.view_workflowrun")
    html = page(viewer, change_url(run))
    assert elements(html, "durable-wait", tag="tr") and not elements(html, "durable-send-event-form")
    response = viewer.post(reverse("admin:durable_django_workflowrun_send_event", args=[run.pk]), {"event": "paid"})
    assert response.status_code == 403

    assert elements(page(admin_client, change_url(run)), "durable-send-event-form")
    WorkflowRun.objects.filter(pk=run.pk).update(status="cancelled", finished_at=timezone.now())
    assert not elements(page(admin_client, change_url(run)), "durable-send-event")


def test_a_run_that_never_waited_and_has_finished_has_no_waits_section(admin_client: Client) -> None:
    run, wait = waiting_run()
    wait.delete()
    WorkflowRun.objects.filter(pk=run.pk).update(status="completed", finished_at=timezone.now())
    assert not elements(page(admin_client, change_url(run)), "durable-waits-module")


def test_run_page_of_a_waiting_run_runs_the_same_queries_for_1_and_for_many_waits(admin_client: Client) -> None:
    run, _ = waiting_run()
    branch_waits(run)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            page(admin_client, change_url(run))
        return len(captured.captured_queries)

    queries()  # caches filled by the first request stay out of the count
    with_one = queries()
    for index in range(5):
        buffered(run, f"early-{index}", {"index": index})
    step = run.steps.get(step="decide")
    Wait.objects.bulk_create(
        Wait(run=run, step_result=step, kind="sleep", name="decide", status="resolved", resolved_at=timezone.now())
        for _ in range(10)
    )
    assert queries() == with_one


def test_step_attempts_that_wait_say_what_for(admin_client: Client) -> None:
    run, _ = waiting_run()
    branch_waits(run)
    html = page(admin_client, change_url(run))
    assert texts(html, "field-result", within="tabular") == [
        '{"prepared": true}',
        "waits for input refund_ok",
        "waits for event mail_sent",
        "",
    ]


def test_waits_are_drawn_on_the_timeline_of_the_run_page(admin_client: Client) -> None:
    run, wait = waiting_run()
    _, (event, sleep) = branch_waits(run)
    html = page(admin_client, change_url(run))
    bars = elements(html, "dt-wait", tag="g")
    assert [(bar["data-kind"], bar["data-status"]) for bar in bars] == [
        ("input", "waiting"),
        ("event", "waiting"),
        ("sleep", "resolved"),
    ]
    assert [bar["data-wait"] for bar in bars] == [str(wait.pk), str(event.pk), str(sleep.pk)]
    labels = [text.split(" · ")[0] for text in texts(html, "dt-bar-label", within="dt-wait")]
    assert labels == ["input refund_ok", "event mail_sent", "sleep 2 min"]
    # The two branch waits are inside the group's section.
    assert len(elements(html, "dt-wait", tag="g", within="dt-group")) == 2


# -- waits and events on their own pages -----------------------------------------------------------


def test_waits_and_events_are_listed_read_only(admin_client: Client) -> None:
    run, wait = waiting_run()
    branch_waits(run)
    event = buffered(run, "early", {"n": 1})
    html = page(admin_client, reverse("admin:durable_django_wait_changelist"))
    assert texts(html, "field-subject") == ["sleep 2 min", "event mail_sent", "input refund_ok"]
    (inbox,) = elements(html, "durable-inbox-link")
    assert inbox["href"] == INBOX
    assert "?kind__exact=input" in html and "?status__exact=waiting" in html
    detail = page(admin_client, reverse("admin:durable_django_wait_change", args=[wait.pk]))
    assert "Open in the inbox" in detail and '<input type="submit"' not in detail
    assert admin_client.post(reverse("admin:durable_django_wait_change", args=[wait.pk]), {}).status_code == 403
    assert admin_client.get(reverse("admin:durable_django_wait_add")).status_code == 403

    events = page(admin_client, reverse("admin:durable_django_event_changelist"))
    assert texts(events, "field-name") == ["early"]
    assert texts(events, "field-state") == ["Buffered"]
    assert page(admin_client, reverse("admin:durable_django_event_change", args=[event.pk]))
    by_run = page(admin_client, reverse("admin:durable_django_event_changelist") + f"?q={run.pk}")
    assert texts(by_run, "field-name") == ["early"]
    assert (
        texts(page(admin_client, reverse("admin:durable_django_event_changelist") + "?state=taken"), "field-name") == []
    )
    assert texts(
        page(admin_client, reverse("admin:durable_django_event_changelist") + "?state=buffered"), "field-name"
    ) == ["early"]


def test_the_app_index_links_the_inbox(admin_client: Client) -> None:
    html = page(admin_client, reverse("admin:app_list", args=["durable_django"]))
    assert [link["href"] for link in elements(html, "durable-inbox-link")] == [INBOX]


# -- the inbox -------------------------------------------------------------------------------------


def answered(wait: Wait, payload: dict[str, Any], user: Any = None, status: str = "resolved") -> Wait:
    """Mark ``wait`` answered as the engine would (the admin itself never does)."""
    Wait.objects.filter(pk=wait.pk).update(status=status, payload=payload, resolved_by=user, resolved_at=timezone.now())
    wait.refresh_from_db()
    return wait


def test_inbox_lists_pending_inputs_first_then_answered_ones(admin_client: Client, admin_user: Any) -> None:
    first_run, first = waiting_run()
    _, second = waiting_run(name="pick", input_kind="choice", prompt="Which?", spec={"choices": ["a", "b"]})
    _, done = waiting_run(name="old")
    answered(done, {"approved": False, "comment": "too <i>much</i>", "by": "admin"}, admin_user)
    branch_waits(first_run)  # no input among them: not in the inbox
    html = page(admin_client, INBOX)
    pending = elements(html, "durable-inbox-item", within="durable-inbox-pending")
    assert [item["data-wait"] for item in pending] == [str(first.pk), str(second.pk)]
    assert [link["href"] for link in elements(html, "durable-answer-button")] == [
        answer_url(admin.site, first.pk),
        answer_url(admin.site, second.pk),
    ]
    assert [item["data-wait"] for item in elements(html, "durable-inbox-item", within="durable-inbox-answered")] == [
        str(done.pk)
    ]
    assert texts(html, "inbox-answer") == ["Decision: Rejected Comment: too <i>much</i>"]
    assert texts(html, "inbox-resolved")[0].endswith("answered by admin")
    assert "<i>much</i>" not in html

    # One run's inputs only.
    only = page(admin_client, inbox_url(admin.site, first_run.pk))
    assert [item["data-wait"] for item in elements(only, "durable-inbox-item")] == [str(first.pk)]
    assert admin_client.get(f"{INBOX}?run=nope").status_code == 404


def test_inbox_shows_those_without_the_permission_the_wait_but_no_form(django_user_model: Any) -> None:
    _, wait = waiting_run()
    viewer = staff_client(django_user_model, "durable_django.view_wait")
    html = page(viewer, INBOX)
    assert [item["data-wait"] for item in elements(html, "durable-inbox-item")] == [str(wait.pk)]
    assert not elements(html, "durable-answer-button")
    assert texts(html, "durable-no-permission") == ["you may not answer"]
    answer = page(viewer, answer_url(admin.site, wait.pk))
    assert not elements(answer, "durable-answer-form")
    assert texts(answer, "durable-not-answerable") == [
        "You may not answer this input: it needs the permission durable_django.provide_input."
    ]
    response = viewer.post(answer_url(admin.site, wait.pk), {"answer-approved": "approve"})
    assert response.status_code == 403


def test_inbox_runs_the_same_queries_for_1_and_for_many_inputs(admin_client: Client, admin_user: Any) -> None:
    waiting_run()
    _, done = waiting_run(name="old")
    answered(done, {"approved": True, "comment": "", "by": "admin"}, admin_user)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            page(admin_client, INBOX)
        return len(captured.captured_queries)

    queries()
    with_one = queries()
    for index in range(4):
        waiting_run(name=f"more_{index}", input_kind="choice", spec={"choices": ["a"]})
        _, more = waiting_run(name=f"done_{index}")
        answered(more, {"approved": False, "comment": "no", "by": "admin"}, admin_user)
    assert queries() == with_one


def test_a_wait_with_its_own_permission_is_answered_by_those_who_hold_that_one(django_user_model: Any) -> None:
    _, custom = waiting_run(name="refund_big", permission="testapp.approve_refund")
    _, default = waiting_run(name="refund_small")
    holder = staff_client(django_user_model, "durable_django.provide_input")
    html = page(holder, INBOX)
    # Without view permissions, only the inputs this user may answer are listed.
    assert [item["data-wait"] for item in elements(html, "durable-inbox-item")] == [str(default.pk)]
    assert holder.get(answer_url(admin.site, custom.pk)).status_code == 403
    nobody = staff_client(django_user_model)
    assert elements(page(nobody, INBOX), "durable-inbox-item") == []
    assert texts(page(nobody, INBOX), "durable-inbox-empty") == [
        "Nothing is waiting for an answer.",
        "No input has been answered yet.",
    ]


# -- the forms of each kind ------------------------------------------------------------------------


def test_an_approval_is_answered_with_approve_or_reject_and_a_comment(admin_client: Client) -> None:
    _, wait = waiting_run()
    html = page(admin_client, answer_url(admin.site, wait.pk))
    buttons = elements(html, tag="button", within="durable-answer-buttons")
    assert [(button["name"], button["value"], button["text"].strip()) for button in buttons] == [
        ("answer-approved", "approve", "Approve"),
        ("answer-approved", "reject", "Reject"),
    ]
    assert [field["name"] for field in elements(html, tag="textarea", within="durable-answer-form")] == [
        "answer-comment"
    ]
    form = answer_form(wait, {"answer-approved": "reject", "answer-comment": " no "})
    assert form.is_valid() and form.answer() == {"approved": False, "comment": "no"}
    form = answer_form(wait, {"answer-approved": "approve"})
    assert form.is_valid() and form.answer() == {"approved": True, "comment": ""}
    form = answer_form(wait, {"answer-comment": "?"})
    assert not form.is_valid() and form.errors == {"approved": ["Choose Approve or Reject."]}


def test_a_choice_is_a_list_of_the_declared_choices(admin_client: Client) -> None:
    _, wait = waiting_run(name="pick", input_kind="choice", spec={"choices": ["express", "<standard>"]})
    html = page(admin_client, answer_url(admin.site, wait.pk))
    radios = elements(html, tag="input", within="field-choice")
    assert [(radio["type"], radio["value"]) for radio in radios] == [("radio", "express"), ("radio", "<standard>")]
    assert answer_form(wait, {"answer-choice": "<standard>"}).is_valid()
    form = answer_form(wait, {"answer-choice": "overnight"})
    assert not form.is_valid() and list(form.errors) == ["choice"]


def test_a_text_is_a_textarea(admin_client: Client) -> None:
    _, wait = waiting_run(name="why", input_kind="text")
    html = page(admin_client, answer_url(admin.site, wait.pk))
    assert [field["name"] for field in elements(html, tag="textarea", within="field-text")] == ["answer-text"]
    form = answer_form(wait, {"answer-text": "  because  "})
    assert form.is_valid() and form.answer() == {"text": "  because  "}
    assert list(answer_form(wait, {"answer-text": ""}).errors) == ["text"]


def test_a_form_has_a_typed_field_per_declared_field(admin_client: Client) -> None:
    _, wait = waiting_run(name="shipping", input_kind="form", spec=FORM_SPEC)
    html = page(admin_client, answer_url(admin.site, wait.pk))
    inputs = [
        field
        for field in elements(html, tag="input", within="durable-answer-form")
        if field["type"] not in ("hidden", "submit")
    ]
    assert [(field["name"], field["type"]) for field in inputs] == [
        ("answer-note", "text"),
        ("answer-rate", "number"),
        ("answer-amount", "number"),
        ("answer-express", "checkbox"),
        ("answer-ship_on", "date"),
    ]
    assert [field.get("required") for field in inputs] == [None, None, "", None, ""]
    assert "Shown to the customer" in html
    required = [label["text"] for label in elements(html, "required", tag="label")]
    assert required == ["Amount:", "Ship on:"]

    form = answer_form(
        wait, {"answer-amount": "12", "answer-rate": "0.5", "answer-express": "on", "answer-ship_on": "2026-01-31"}
    )
    assert form.is_valid(), form.errors
    assert form.answer() == {"amount": 12, "rate": 0.5, "note": None, "express": True, "ship_on": "2026-01-31"}
    form = answer_form(wait, {"answer-amount": "twelve", "answer-ship_on": "31.01.2026"})
    assert not form.is_valid()
    assert sorted(form.errors) == ["amount", "ship_on"]


def test_a_form_s_errors_are_shown_on_their_fields(admin_client: Client) -> None:
    _, wait = waiting_run(name="shipping", input_kind="form", spec=FORM_SPEC)
    response = admin_client.post(answer_url(admin.site, wait.pk), {"answer-amount": "1.5", "answer-ship_on": ""})
    assert response.status_code == 200
    html = response.content.decode()
    assert texts(html, "errornote") == ["Please correct the errors below."]
    assert texts(html, "errorlist", within="field-amount") == ["Enter a whole number."]
    assert texts(html, "errorlist", within="field-ship_on") == ["This field is required."]
    assert not elements(html, "errorlist", within="field-rate")
    # What was typed is kept.
    (amount,) = [field for field in elements(html, tag="input") if field.get("name") == "answer-amount"]
    assert amount["value"] == "1.5"
    assert Wait.objects.get(pk=wait.pk).status == "waiting"


# -- through the engine: sending events and answering inputs ----------------------------------------


def send(client: Client, run: WorkflowRun, event: str, payload: str = "") -> list[tuple[str, str]]:
    url = reverse("admin:durable_django_workflowrun_send_event", args=[run.pk])
    response = client.post(url, {"event": event, "payload": payload}, follow=True)
    assert response.redirect_chain == [(change_url(run) + "#waits", 302)]
    return messages_of(response)


def test_sending_an_event_delivers_it_to_the_wait_or_keeps_it(embedded: EmbeddedQueue, admin_client: Client) -> None:
    run = start_waiting(embedded, "it_admin_notify", {"pause": 0})
    short = str(run.pk)[:8]
    assert send(admin_client, run, "early", '{"n": 1}') == [
        ("success", f"Sent event early to run {short}: no wait takes it yet, so it is kept until one does.")
    ]
    assert texts(page(admin_client, change_url(run)), "event-name") == ["early"]
    assert send(admin_client, run, "mail_sent", '{"to": "<ada>"}') == [
        ("success", f"Sent event mail_sent to run {short}: a wait took it.")
    ]
    embedded.run_until_idle(timeout=30)
    mail = Wait.objects.get(run=run, name="mail_sent")
    assert (mail.status, mail.payload) == ("resolved", {"to": "<ada>"})
    # Each sent event is in the run's admin history.
    assert list(LogEntry.objects.filter(object_id=str(run.pk)).values_list("change_message", flat=True)) == [
        "Sent event mail_sent.",
        "Sent event early.",
    ]


def test_sending_an_event_says_why_it_was_not_sent(embedded: EmbeddedQueue, admin_client: Client) -> None:
    run = start_waiting(embedded, "it_admin_notify", {"pause": 0})
    assert send(admin_client, run, "  ") == [("error", "Name the event to send.")]
    (bad,) = send(admin_client, run, "paid", "{nope")
    assert bad[0] == "error" and bad[1].startswith("Did not send event paid: the payload is not JSON (")
    assert not Event.objects.filter(run=run).exists()
    url = reverse("admin:durable_django_workflowrun_send_event", args=[run.pk])
    assert admin_client.get(url).status_code == 405
    cancel_run(run)
    # The form is gone from a finished run's page; a post still reaches the engine, which refuses.
    ((level, text),) = send(admin_client, run, "paid")
    assert level == "warning" and text.startswith("Did not send event paid: ")
    missing = reverse("admin:durable_django_workflowrun_send_event", args=[uuid.uuid4()])
    assert admin_client.post(missing, {"event": "paid"}).status_code == 404


def answer(client: Client, wait: Wait, data: dict[str, str]) -> Any:
    return client.post(answer_url(admin.site, wait.pk), data, follow=True)


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        (
            {"kind": "approval"},
            {"answer-approved": "reject", "answer-comment": "no"},
            {"approved": False, "comment": "no"},
        ),
        ({"kind": "choice", "choices": ["red", "blue"]}, {"answer-choice": "blue"}, {"choice": "blue"}),
        ({"kind": "text"}, {"answer-text": "because"}, {"text": "because"}),
        (
            {"kind": "form", "fields": FORM_SPEC["fields"]},
            {"answer-amount": "7", "answer-express": "on", "answer-ship_on": "2026-02-01"},
            {"amount": 7, "rate": None, "note": None, "express": True, "ship_on": "2026-02-01"},
        ),
    ],
)
def test_answering_each_kind_of_input_resumes_the_run(
    embedded: EmbeddedQueue, admin_client: Client, options: dict[str, Any], data: dict[str, str], expected: Any
) -> None:
    run = start_waiting(embedded, "it_admin_ask", {"name": "question", **options})
    wait = Wait.objects.get(run=run)
    response = answer(admin_client, wait, data)
    assert response.redirect_chain == [(INBOX, 302)]
    assert messages_of(response) == [("success", f"Answered question of it_admin_ask run {str(run.pk)[:8]}.")]
    embedded.run_until_idle(timeout=30)
    run.refresh_from_db()
    assert run.status == "completed"
    assert run.context["question"] == {**expected, "by": "admin"}
    wait.refresh_from_db()
    assert (wait.status, wait.resolved_by.get_username()) == ("resolved", "admin")
    # Answered: listed under the pending ones, without a form.
    html = page(admin_client, answer_url(admin.site, wait.pk))
    assert not elements(html, "durable-answer-form")
    assert texts(html, "durable-not-answerable") == ["This input is no longer waiting (Resolved)."]


def test_the_engine_s_refusal_of_an_answer_lands_on_its_field(
    embedded: EmbeddedQueue, admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = start_waiting(embedded, "it_admin_ask", {"name": "shipping", "kind": "form", "fields": FORM_SPEC["fields"]})
    wait = Wait.objects.get(run=run)

    def refuse(*args: Any, **kwargs: Any) -> None:
        exc = InvalidInput("amount must be at most 100.")
        exc.field = "amount"
        raise exc

    monkeypatch.setattr(resume, "provide_input", refuse)
    response = answer(admin_client, wait, {"answer-amount": "500", "answer-ship_on": "2026-02-01"})
    html = response.content.decode()
    assert texts(html, "errorlist", within="field-amount") == ["amount must be at most 100."]
    monkeypatch.undo()
    # Once the engine takes the answer, it goes through.
    response = answer(admin_client, wait, {"answer-amount": "5", "answer-ship_on": "2026-02-01"})
    assert response.redirect_chain == [(INBOX, 302)]


def test_an_input_answered_meanwhile_says_so(
    embedded: EmbeddedQueue, admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = start_waiting(embedded, "it_admin_refund", {"amount": 10})
    wait = Wait.objects.get(run=run)

    def taken(*args: Any, **kwargs: Any) -> None:
        raise RunStateError("the run no longer waits for refund_ok.")

    monkeypatch.setattr(resume, "provide_input", taken)
    response = answer(admin_client, wait, {"answer-approved": "approve"})
    assert response.redirect_chain == [(answer_url(admin.site, wait.pk), 302)]
    assert messages_of(response) == [("warning", "Your answer was not taken: the run no longer waits for refund_ok.")]
    monkeypatch.undo()
    cancel_run(run)
    response = answer(admin_client, wait, {"answer-approved": "approve"})
    ((level, text),) = messages_of(response)
    assert level == "warning" and text in (
        "This input is no longer waiting (Cancelled).",
        "The run has finished (Cancelled).",
    )


def test_a_form_keeps_the_declared_order_of_its_fields_whatever_the_database_keeps(admin_client: Client) -> None:
    from durable_django.waits import wait_for_input

    declared = {
        "ship_on": {"type": "date"},
        "express": {"type": "boolean", "required": False},
        "amount": {"type": "integer"},
    }
    spec = wait_for_input("shipping", kind="form", fields=declared).spec
    assert spec["order"] == ["ship_on", "express", "amount"]
    _, wait = waiting_run(name="shipping", input_kind="form", spec=spec)
    html = page(admin_client, answer_url(admin.site, wait.pk))
    names = [
        field["name"]
        for field in elements(html, tag="input", within="durable-answer-form")
        if field["type"] not in ("hidden", "submit")
    ]
    assert names == ["answer-ship_on", "answer-express", "answer-amount"]
