import os

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            admin_run_workflows,  # noqa: F401 - registers the run page tests' workflows
            admin_wait_workflows,  # noqa: F401 - registers the admin tests' workflows that wait
            api_wait_workflows,  # noqa: F401 - registers the waits' API and command tests' workflows
            control_flow_workflows,  # noqa: F401 - registers the foreach and branch integration tests' workflows
            recovery_workflows,  # noqa: F401 - registers the fault-injection tests' workflows
            saga_workflows,  # noqa: F401 - registers the compensation tests' workflows on workers
            timing_workflows,  # noqa: F401 - registers the delayed start and timeout tests' workflows
            wait_workflows,  # noqa: F401 - registers the waits' integration tests' workflows
        )

        kind = os.environ.get("DURABLE_IT_CRASH_BEFORE_SEND")
        if kind:
            from durable_django import dispatch

            from .faults import crash_before_send

            dispatch.before_send.append(crash_before_send(kind))

        if os.environ.get("DURABLE_IT_SIGNALS"):
            from .signal_receivers import connect

            connect()
        spans = os.environ.get("DURABLE_IT_SPANS")
        if spans:
            from .span_export import install

            install(spans)
        if os.environ.get("DURABLE_IT_CRASH_BEFORE_CLAIM"):
            from .faults import crash_before_claim

            crash_before_claim()
