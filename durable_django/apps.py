from __future__ import annotations

import sys

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class DurableConfig(AppConfig):
    name = "durable_django"
    label = "durable_django"
    verbose_name = _("Durable workflows")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from . import checks  # noqa: F401 - registers the system checks
        from .dispatch import clear_queue_cache

        # Tests that override RQ_QUEUES get queues on the new connections.
        setting_changed.connect(clear_queue_cache, dispatch_uid="durable_django.dispatch.clear_queue_cache")

        # Like admin.py: every installed app's workflows.py registers its workflows.
        autodiscover_modules("workflows")

        from .conf import durable_settings

        if is_rq_worker_process():
            # Imported once here rather than by every job's child process of rq's forking worker.
            from . import jobs  # noqa: F401

            if durable_settings.RECOVER_IN_WORKERS:
                from .recovery import sweeper

                # Nothing but the usual worker command is needed for a dead worker's work to resume.
                sweeper.start()


def is_rq_worker_process(argv: list[str] | None = None) -> bool:
    """Whether this process is a worker (``manage.py durable_worker`` or django-rq's ``rqworker``)."""
    args = sys.argv if argv is None else argv
    return len(args) > 1 and args[1] in ("durable_worker", "rqworker", "rqworker-pool")
