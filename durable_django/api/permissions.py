"""Who may call the API: the permission and authentication classes of ``DURABLE``.

Both are read from the settings on every request (never at import time), so
``override_settings(DURABLE=...)`` takes effect at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.db.models import Model
from django.utils.module_loading import import_string
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, TokenAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission, DjangoModelPermissions
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import durable_settings

CHANGE_PERMISSION = "durable_django.change_workflowrun"


#: Actions whose view checks a permission of its own instead (an input's permission).
OWN_PERMISSION_ACTIONS = frozenset({"inputs"})

_VIEW = ["%(app_label)s.view_%(model_name)s"]


def permission_model(view: APIView) -> type[Model]:
    """The model whose permissions guard reading ``view``.

    A view's ``permission_model``, else the model of its ``queryset`` attribute. Not
    ``get_queryset()``, as DRF's :class:`DjangoModelPermissions` does: a list's
    ``get_queryset()`` validates the query parameters, which must not answer before the permission.
    """
    model = getattr(view, "permission_model", None)
    if model is None:
        model = view.queryset.model  # type: ignore[attr-defined]
    return model


class CanViewRows(DjangoModelPermissions):
    """Reading needs the view permission of the model read, as in Django's admin.

    ``GET``, ``HEAD`` and ``OPTIONS`` of ``runs/`` need ``durable_django.view_workflowrun``, of
    ``steps/`` ``view_stepresult``, of ``groups/`` ``view_parallelgroup`` and of ``waits/``
    ``view_wait``. As in the admin, the model's change permission includes its view permission. A
    run's detail shows its step results, groups and waits with the run's permission, as the
    admin's run page shows them; ``workflows/`` and ``schema/`` need the run's permission too.
    Other methods are left to the other classes (:class:`CanOperateRuns`). Superusers have every
    permission.
    """

    perms_map = {
        "GET": _VIEW,
        "HEAD": _VIEW,
        "OPTIONS": _VIEW,
        "POST": [],
        "PUT": [],
        "PATCH": [],
        "DELETE": [],
    }
    #: Permissions that include the view permissions of ``perms_map``, as in the admin.
    included_by = ["%(app_label)s.change_%(model_name)s"]
    message = "You do not have permission to perform this action."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        method = str(request.method)
        if method not in SAFE_METHODS:
            return True
        model = permission_model(view)
        needed = self.get_required_permissions(method, model)
        names = {"app_label": model._meta.app_label, "model_name": model._meta.model_name}
        if request.user.has_perms(needed) or request.user.has_perms([perm % names for perm in self.included_by]):
            return True
        # DRF's permission_denied() reads the message off the instance that refused.
        self.message = f"Reading {model._meta.verbose_name_plural} needs the {needed[0]!r} permission."
        return False


class CanOperateRuns(BasePermission):
    """Starting, retrying and cancelling runs and sending them events needs
    ``durable_django.change_workflowrun``; reading is left to the other classes (:class:`CanViewRows`).

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
