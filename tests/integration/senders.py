"""A process that sends one event to a run, for the races of the waits' tests.

``python -m tests.integration.senders RUN_ID EVENT PAYLOAD_JSON BARRIER COUNT AT`` sets itself up,
then waits until ``COUNT`` processes have reached the Redis barrier key ``BARRIER`` and the Unix
time ``AT`` has come, calls :func:`durable_django.send_event` and prints what it returned. The
environment (``DJANGO_SETTINGS_MODULE``, ``DATABASE_URL``, ``REDIS_URL``, fault injection) is the
workers'.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    import django

    django.setup()
    import django_rq

    from durable_django import send_event

    run_id, event, payload, barrier, count, at = argv
    redis = django_rq.get_connection("default")
    redis.incr(barrier)
    deadline = time.monotonic() + 30
    while int(redis.get(barrier) or 0) < int(count) and time.monotonic() < deadline:
        time.sleep(0.001)
    pause = float(at) - time.time()
    if pause > 0:
        time.sleep(pause)
    print(send_event(run_id, event, json.loads(payload)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
