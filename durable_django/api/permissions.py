"""Who may call the API: the permission and authentication classes of ``DURABLE``.

Both are read from the settings on every request (never at import time), so
``override_settings(DURABLE=...)`` takes effect at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.utils.module_loading import import_string
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, TokenAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import durable_settings

CHANGE_PERMISSION = "durable_django.change_workflowrun"


#: Actions whose view checks a permission of its own instead (an input's permission).
OWN_PERMISSION_ACTIONS = frozenset({"inputs"})


class CanOperateRuns(BasePermission):
    """Reading is allowed; starting, retrying and cancelling runs and sending them events needs
    ``durable_django.change_workflowrun``.

    Answering an input is left to its view, which requires the input's own permission
    (``durable_django.provide_input`` unless the input names another).
    """

    message = (
        f"Starting, retrying or cancelling a run or sending it an event needs the {CHANGE_PERMISSION!r} permission."
    )

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS or getattr(view, "action", None) in OWN_PERMISSION_ACTIONS:
            return True
        return bool(request.user and request.user.has_perm(CHANGE_PERMISSION))


def _load(classes: Iterable[Any]) -> list[Any]:
    # Dotted paths as in DRF's own settings; classes themselves are accepted too.
    return [import_string(value) if isinstance(value, str) else value for value in classes]


def permission_classes() -> list[type[BasePermission]]:
    """The classes of ``DURABLE["API_PERMISSION_CLASSES"]``, imported now."""
    return _load(durable_settings.API_PERMISSION_CLASSES)


def authentication_classes() -> list[type[BaseAuthentication]]:
    """The classes of ``DURABLE["API_AUTHENTICATION_CLASSES"]``, imported now.

    By default: token authentication when ``rest_framework.authtoken`` is installed, then session
    authentication. Token comes first so that an anonymous request gets a 401 with a
    ``WWW-Authenticate`` header; without ``authtoken`` its model cannot be used, so it is left out.
    """
    configured = durable_settings.API_AUTHENTICATION_CLASSES
    if configured is not None:
        return _load(configured)
    if apps.is_installed("rest_framework.authtoken"):
        return [TokenAuthentication, SessionAuthentication]
    return [SessionAuthentication]
