"""The REST API of durable_django: runs, step results, parallel groups, waits and workflows over HTTP.

Mount it in your URLconf::

    path("api/durable/", include("durable_django.api.urls"))

It reads run state and calls the engine (``start_workflow``, ``send_event``, ``provide_input``) and
the operations (``retry_run``, ``cancel_run``); it never writes run state itself. See ``docs/api.md``.
"""
