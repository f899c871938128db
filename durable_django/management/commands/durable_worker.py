"""``manage.py durable_worker``: the one command that executes durable_django's work."""

from __future__ import annotations

from typing import Any

import django_rq
from django.conf import settings
from django.core.management.base import CommandParser
from django_rq.management.commands.rqworker import Command as RQWorkerCommand

from durable_django.conf import durable_settings
from durable_django.definition import registered_workflows
from durable_django.worker import wait_until_answering

WORKER_CLASS = "durable_django.worker.DurableWorker"


def workflow_queues() -> list[str]:
    """``DURABLE["QUEUE"]`` and every queue a registered workflow or step names, configured or not."""
    queues = [durable_settings.QUEUE]
    for wf in registered_workflows().values():
        named = [wf.queue] + [member.queue for member in wf.all_steps()]
        queues.extend(queue for queue in named if queue and queue not in queues)
    return queues


class Command(RQWorkerCommand):
    help = (
        "Execute durable_django's runs, branches and joins: rq's worker on the queues your workflows use "
        "(or the QUEUE arguments), in this process (durable_django.worker.DurableWorker: no fork per job), "
        "with rq's scheduler for retries and the recovery sweeper; it waits Redis outages out. Takes "
        "rqworker's options; start one such process per job you want executing at the same time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(worker_class=WORKER_CLASS, with_scheduler=True)
        parser.add_argument(
            "--without-scheduler",
            action="store_false",
            dest="with_scheduler",
            help="do not run rq's scheduler in this worker (retries then wait for a worker that runs one)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queues = list(args) or workflow_queues()
        missing = [queue for queue in queues if queue not in getattr(settings, "RQ_QUEUES", {})]
        if missing:
            # django-rq's own error is a bare KeyError: say which queue and where it must go.
            self.stderr.write(
                f"Queue(s) {', '.join(map(repr, missing))} are not configured in settings.RQ_QUEUES "
                "(see manage.py check)."
            )
            raise SystemExit(1)
        # A worker started while Redis is down (before it at boot, or starting afresh during an
        # outage) waits for it instead of exiting; once running, the worker waits outages out itself.
        wait_until_answering(django_rq.get_connection(queues[0]), f"durable_worker (queue {queues[0]!r})")
        super().handle(*queues, **options)
