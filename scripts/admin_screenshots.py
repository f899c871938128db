"""Screenshots of the admin: the run list, run pages with a parallel group and their timeline, waits.

    python scripts/admin_screenshots.py OUTPUT_DIR [--chromium /usr/bin/chromium] [--width 1280] [--docs docs/images]

Everything happens in a throwaway SQLite database in a temporary directory: the example
project's workflows run to the end on the embedded queue (``manage.py run_examples``, no Redis
needed), the admin is served on a free local port, and a headless Chromium (Debian's package,
driven by Playwright) logs in and photographs it. Writes ``run-list.png``, ``run-detail.png`` (the
completed run with the most attempts in one parallel block), ``run-timeline.png`` (its timeline
alone), ``run-failed.png`` (a failed run with its Retry button), ``run-detail-dark.png`` (the run
page in the dark theme), ``run-waiting.png`` (a run whose branches and a later step waited, the
last wait still open), ``waits-timeline.png`` (its timeline alone), ``inbox.png`` (inputs
waiting for an answer and answered ones), ``answer-approval.png`` (an approval's page), and the
control flow: ``run-foreach.png`` (a foreach block with failed and retried items),
``run-foreach-large.png`` (a block of 10,000 items), ``run-branch.png`` (a branch block and its
cases) and ``run-compensated.png`` (a failed run whose completed steps were undone), each also as
``...-top.png`` (the top part alone), into OUTPUT_DIR, and prints their paths. The runs that wait
are the test app's (``tests/testapp/admin_wait_workflows.py``), and so are those with control flow
(``tests/testapp/admin_run_workflows.py``; ``tests/admin/control_flow_support.py`` writes the big
block and the compensations as the engine leaves them).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# No sandbox (containers, root), no GPU, and nothing that reaches out to the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USERNAME = "screenshots"
#: The screenshots docs/admin.md shows, copied into ``--docs DIR``.
DOC_IMAGES = (
    "run-running-top.png",
    "run-goto-top.png",
    "run-retried-top.png",
    "run-waiting-top.png",
    "run-running-dark.png",
    "run-foreach-top.png",
    "run-foreach-large-top.png",
    "run-branch-top.png",
    "run-compensated-top.png",
)


def prepare_django(database: Path) -> None:
    """Point the example project at a fresh SQLite file and set Django up."""
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ.pop("REDIS_URL", None)  # run_examples: the embedded queue, not real workers
    import django

    django.setup()


def create_runs() -> dict[str, Any]:
    """Run every example workflow; return the ids of the runs worth photographing."""
    from django.core.management import CommandError, call_command
    from django.db.models import Count

    from durable_django.models import ParallelGroup, WorkflowRun

    call_command("migrate", verbosity=0)
    try:
        call_command("run_examples", stdout=io.StringIO())
    except CommandError as exc:  # the pages are still worth a look; say what went wrong
        print(f"warning: some example runs did not end as expected:\n{exc}", file=sys.stderr)
    # The most attempts in one parallel block: a completed run for the detail, a failed one for Retry.
    groups = ParallelGroup.objects.annotate(attempts=Count("branches")).order_by("-attempts", "id")
    detail = groups.filter(run__status="completed").first() or groups.first()
    failed_runs = sorted(
        WorkflowRun.objects.filter(status="failed").annotate(attempts=Count("steps")),
        # Prefer a failure with a raised exception, which shows a traceback.
        key=lambda run: ("traceback" not in json.dumps(run.error), -run.attempts, run.created_at),
    )
    if detail is None or not failed_runs:
        raise SystemExit("the examples left no run with a parallel group, or no failed run, to photograph")
    return {"detail": detail.run_id, "failed": failed_runs[0].pk}


def create_waiting_runs(username: str) -> dict[str, Any]:
    """Runs that wait: for inputs (one answered), for events (one sent early and kept) and for time."""
    import time

    from django.contrib.auth import get_user_model

    from durable_django import start_workflow
    from durable_django.resume import provide_input, send_event
    from durable_django.testing import EmbeddedQueue
    from tests.testapp import admin_wait_workflows  # noqa: F401 - registers the workflows

    user = get_user_model().objects.get(username=username)
    with EmbeddedQueue() as queue:
        notify = start_workflow("it_admin_notify", {"pause": 0.3})
        refunds = [
            start_workflow("it_admin_refund", {"amount": amount, "customer": customer})
            for amount, customer in ((250, "Ada Lovelace"), (80, "Alan Turing"), (1200, "Grace Hopper"))
        ]
        delivery = start_workflow(
            "it_admin_ask",
            {
                "name": "delivery",
                "kind": "form",
                "prompt": "When and where should the replacement go?",
                "fields": {
                    "street": {"type": "string", "label": "Street"},
                    "floor": {"type": "integer", "required": False, "label": "Floor"},
                    "ship_on": {"type": "date", "label": "Ship on"},
                    "gift": {"type": "boolean", "required": False, "label": "Gift wrap"},
                },
            },
        )
        queue.run_until_idle(timeout=30)
        # No wait of the run wants this one: its page lists it among the buffered events.
        send_event(notify.pk, "invoice_ready", {"invoice": "INV-7"})
        time.sleep(1.2)  # the pause branch's sleep is due: wake-ups are scheduled to the whole second
        queue.run_until_idle(timeout=30)
        send_event(notify.pk, "mail_sent", {"to": "ada@example.com"})
        queue.run_until_idle(timeout=30)
        provide_input(refunds[1].pk, "refund_ok", {"approved": True, "comment": "Loyal customer"}, user=user)
        queue.run_until_idle(timeout=30)
    return {"notify": notify.pk, "refund": refunds[0].pk, "delivery": delivery.pk}


def create_page_runs() -> dict[str, Any]:
    """Runs for the run page: a failed one retried by hand (and failed again), a goto loop with an into."""
    import time

    from durable_django import start_workflow
    from durable_django.operations import retry_run
    from durable_django.testing import EmbeddedQueue
    from tests.testapp import admin_run_workflows  # noqa: F401 - registers the workflows

    with EmbeddedQueue() as queue:
        flaky = start_workflow("it_admin_flaky", {"token": "screenshots"})
        review = start_workflow("it_admin_review", {})
        queue.run_until_idle(timeout=30)
        time.sleep(1.5)  # an operator looks at it first: the axis stretches
        retry_run(flaky.pk)
        queue.run_until_idle(timeout=30)
    return {"retried": flaky.pk, "review": review.pk}


def create_control_flow_runs() -> dict[str, Any]:
    """Runs with control flow: a foreach block, one of 10,000 items, a branch block, compensations."""
    from durable_django.testing import EmbeddedQueue
    from tests.admin.control_flow_support import branch_run, compensated_run, foreach_run, large_foreach_run

    with EmbeddedQueue() as queue:
        foreach = foreach_run(queue, "screenshots")
        branch = branch_run(queue, "gold")
    return {
        "foreach": foreach.pk,
        "foreach_large": large_foreach_run().pk,
        "branch": branch.pk,
        "compensated": compensated_run().pk,
    }


@contextmanager
def running_run() -> Iterator[Any]:
    """A run whose step runs right now (in a worker thread) while the pages are photographed."""
    import time

    from durable_django import dispatch, jobs, start_workflow
    from durable_django.conf import durable_settings
    from durable_django.models import WorkflowRun
    from durable_django.testing import EmbeddedQueue
    from tests.testapp.admin_run_workflows import SLOW_RELEASE

    SLOW_RELEASE.clear()
    with EmbeddedQueue() as queue:
        run = start_workflow("it_admin_slow", {"hold": 120})
        # The run's first job, executed in a thread as a worker would (RQ's own worker wants the main thread).
        job = dispatch.run_workflow_job(run.pk, durable_settings.QUEUE, run.version)
        worker = threading.Thread(target=jobs.run_workflow, args=job.args, daemon=True)
        worker.start()
        for _ in range(100):
            if WorkflowRun.objects.filter(pk=run.pk, current_step="load_rows", status="running").exists():
                break
            time.sleep(0.05)
        time.sleep(2.5)  # the step has been running a while
        try:
            yield run.pk
        finally:
            SLOW_RELEASE.set()
            worker.join(timeout=60)
            queue.run_until_idle(timeout=30)


def create_user() -> str:
    from django.contrib.auth import get_user_model

    password = secrets.token_urlsafe(12)
    get_user_model().objects.create_superuser(USERNAME, "screenshots@example.com", password)
    return password


@contextmanager
def serve() -> Iterator[str]:
    """The project (admin and static files) on a free local port, in a thread; yields its base URL."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(StaticFilesHandler(get_wsgi_application()))
    # After get_wsgi_application(), which configures logging again: the browser's /favicon.ico is a 404.
    logging.getLogger("django.request").setLevel(logging.ERROR)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def log_in(page: Any, base_url: str, username: str, password: str) -> None:
    """Log in through the admin's login page."""
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def photograph(base_url: str, password: str, runs: dict[str, Any], out: Path, chromium: str, width: int) -> list[Path]:
    """Log in and save the screenshots; returns their paths."""
    from playwright.sync_api import sync_playwright

    from durable_django.models import Wait

    runs_url = f"{base_url}/admin/durable_django/workflowrun/"
    inbox_url = f"{base_url}/admin/durable_django/wait/inbox/"
    approval = Wait.objects.filter(run_id=runs["refund"], kind="input").values_list("pk", flat=True).first()
    shots = [
        ("run-list.png", runs_url, "light"),
        ("run-detail.png", f"{runs_url}{runs['detail']}/change/", "light"),
        ("run-failed.png", f"{runs_url}{runs['failed']}/change/", "light"),
        ("run-waiting.png", f"{runs_url}{runs['notify']}/change/", "light"),
        ("inbox.png", inbox_url, "light"),
        ("answer-approval.png", f"{inbox_url}{approval}/", "light"),
        ("run-retried.png", f"{runs_url}{runs['retried']}/change/", "light"),
        ("run-goto.png", f"{runs_url}{runs['review']}/change/", "light"),
        ("run-running.png", f"{runs_url}{runs['running']}/change/", "light"),
        ("run-foreach.png", f"{runs_url}{runs['foreach']}/change/", "light"),
        ("run-foreach-large.png", f"{runs_url}{runs['foreach_large']}/change/", "light"),
        ("run-branch.png", f"{runs_url}{runs['branch']}/change/", "light"),
        ("run-compensated.png", f"{runs_url}{runs['compensated']}/change/", "light"),
        ("run-detail-dark.png", f"{runs_url}{runs['detail']}/change/", "dark"),
        ("run-running-dark.png", f"{runs_url}{runs['running']}/change/", "dark"),
    ]
    # Element screenshots taken on the page of a shot: (shot, file, selector).
    parts = [
        ("run-detail.png", "run-timeline.png", ".durable-timeline-module"),
        ("run-waiting.png", "waits-timeline.png", ".durable-timeline-module"),
        ("run-detail.png", "run-top.png", "#durable-live-part"),
        ("run-failed.png", "run-failed-top.png", "#durable-live-part"),
        ("run-retried.png", "run-retried-top.png", "#durable-live-part"),
        ("run-goto.png", "run-goto-top.png", "#durable-live-part"),
        ("run-running.png", "run-running-top.png", "#durable-live-part"),
        ("run-waiting.png", "run-waiting-top.png", "#durable-live-part"),
        ("run-foreach.png", "run-foreach-top.png", "#durable-live-part"),
        ("run-foreach-large.png", "run-foreach-large-top.png", "#durable-live-part"),
        ("run-branch.png", "run-branch-top.png", "#durable-live-part"),
        ("run-compensated.png", "run-compensated-top.png", "#durable-live-part"),
    ]
    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            for scheme in ("light", "dark"):
                context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
                page = context.new_page()
                log_in(page, base_url, USERNAME, password)
                for name, url, wanted in shots:
                    if wanted != scheme:
                        continue
                    page.goto(url)
                    page.wait_for_load_state("networkidle")
                    path = out / name
                    page.screenshot(path=str(path), full_page=True, animations="disabled")
                    saved.append(path)
                    for shot, part, selector in parts:
                        if shot == name:
                            path = out / part
                            page.locator(selector).screenshot(path=str(path), animations="disabled")
                            saved.append(path)
                context.close()
        finally:
            browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="directory the PNG files are written to (created if missing)")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"Chromium executable (default: {CHROMIUM})")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in pixels (default: 1280)")
    parser.add_argument("--docs", type=Path, help="also copy the images the docs show into this directory")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="durable-screenshots-") as scratch:
        prepare_django(Path(scratch) / "db.sqlite3")
        runs = create_runs()
        password = create_user()
        runs.update(create_waiting_runs(USERNAME))
        runs.update(create_page_runs())
        runs.update(create_control_flow_runs())
        with serve() as base_url, running_run() as running:
            runs["running"] = running
            for path in photograph(base_url, password, runs, args.output, args.chromium, args.width):
                print(path)
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        for name in DOC_IMAGES:
            shutil.copyfile(args.output / name, args.docs / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
