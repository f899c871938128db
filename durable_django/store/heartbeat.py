"""The lease heartbeat's write: renewing what this process holds while its steps run."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections
from django.db.models import Model

from .. import leases

logger = logging.getLogger("durable_django")


def renew_leases(held: dict[type[Model], list[Any]]) -> None:
    """Extend every lease this process holds on the rows ``held``; warn about any taken over."""
    me = leases.owner()
    until = leases.expiry()
    for model, pks in held.items():
        try:
            renewed = model._default_manager.filter(pk__in=pks, lease_owner=me).update(lease_expires_at=until)
        except Exception:
            # A dropped connection must not kill the heartbeat: reconnect on the next beat.
            logger.exception("could not renew %d lease(s) of %s", len(pks), model.__name__)
            connections.close_all()
            continue
        if renewed < len(pks):
            # Rows released on purpose (a finished join) are fine; another owner means a takeover.
            taken = model._default_manager.filter(pk__in=pks).exclude(lease_owner__in=("", me)).count()
            if taken:
                logger.warning(
                    "%d of %d lease(s) of %s were taken over while their step ran", taken, len(pks), model.__name__
                )


# The leases of the steps and branches executing in this process, renewed while they run.
heartbeat = leases.Heartbeat(renew_leases)
