from __future__ import annotations

import logging
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

        from django.db.models.signals import post_migrate

        from .conf import durable_settings
        from .firing import sync_after_migrate
        from .metrics.receivers import sync

        # The rows of the schedules declared in code, once the tables exist (workers sync them too).
        post_migrate.connect(sync_after_migrate, sender=self, dispatch_uid="durable_django.firing.sync_after_migrate")

        # DURABLE["METRICS"]: the receivers that count in Redis, connected only when it is true.
        sync()
        setting_changed.connect(sync, dispatch_uid="durable_django.metrics.receivers.sync")

        if is_rq_worker_process():
            # Imported once here rather than by every job's child process of rq's forking worker.
            from . import jobs  # noqa: F401

            warn_without_scheduler(sys.argv)

            if durable_settings.RECOVER_IN_WORKERS:
                from .recovery import sweeper

                # Nothing but the usual worker command is needed for a dead worker's work to resume.
                sweeper.start()


def is_rq_worker_process(argv: list[str] | None = None) -> bool:
    """Whether this process is a worker (``manage.py durable_worker`` or django-rq's ``rqworker``)."""
    args = sys.argv if argv is None else argv
    return len(args) > 1 and args[1] in ("durable_worker", "rqworker", "rqworker-pool")


def _asks_for_help(arg: str) -> bool:
    # argparse accepts abbreviations: --hel, --vers ...
    return arg == "-h" or (len(arg) > 3 and ("--help".startswith(arg) or "--version".startswith(arg)))


def runs_scheduler(argv: list[str]) -> bool | None:
    """Whether the worker command of ``argv`` runs RQ's scheduler, read with the command's own parser.

    ``durable_worker`` runs it unless given ``--without-scheduler``, django-rq's ``rqworker`` only
    with ``--with-scheduler``, ``rqworker-pool`` always. ``None`` when the command line cannot be
    read (the command then reports the mistake itself) or asks for help.
    """
    from django.core.management import CommandError, get_commands, load_command_class

    name = argv[1]
    app_name = get_commands().get(name)
    if app_name is None or any(_asks_for_help(arg) for arg in argv[2:]):
        return None
    parser = load_command_class(app_name, name).create_parser("manage.py", name)
    try:
        options = parser.parse_args(argv[2:])
    except (CommandError, SystemExit):
        return None
    return bool(getattr(options, "with_scheduler", True))


def warn_without_scheduler(argv: list[str]) -> None:
    """Log, at a worker's start, that it runs without RQ's scheduler (and what that delays)."""
    if runs_scheduler(argv) is not False:
        return
    from .conf import durable_settings

    how = "--without-scheduler" if argv[1] == "durable_worker" else "without --with-scheduler"
    late = (
        "the recovery sweeper moves them onto their queue once overdue (about 20 s late with the default settings)"
        if durable_settings.RECOVER_IN_WORKERS
        else "nothing else moves them (DURABLE['RECOVER_IN_WORKERS'] is False), unless durable_recover --loop runs"
    )
    logging.getLogger("durable_django.worker").warning(
        "this worker runs without RQ's scheduler (%s %s): retries with a delay and the wake-ups of sleeps and "
        "timeouts are scheduled jobs, which a worker running the scheduler moves onto their queue when due; "
        "without one, %s. Run at least one worker with it (manage.py durable_worker, or rqworker "
        "--with-scheduler).",
        argv[1],
        how,
        late,
    )
