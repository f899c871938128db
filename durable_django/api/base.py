"""What every view of the API shares: its own classes, independent of ``REST_FRAMEWORK``.

The views set their authentication, permission, pagination, parser, renderer and schema classes
themselves, so the API behaves the same whatever the project's ``REST_FRAMEWORK`` setting says and
needs nothing but ``rest_framework`` in ``INSTALLED_APPS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.db import DatabaseError, InterfaceError
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import parsers, renderers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException, ParseError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler, set_rollback

from ..conf import durable_settings
from ..dispatch import QUEUE_UNAVAILABLE
from .permissions import authentication_classes, permission_classes

F = TypeVar("F", bound=Callable[..., Any])

#: The path parameter of a run's routes.
RUN_ID = OpenApiParameter(
    "id",
    str,
    OpenApiParameter.PATH,
    description="The run's id, or a prefix of it of at least 8 hex characters that no other run's id starts with.",
    pattern="^[0-9a-fA-F-]{8,36}$",
)


def document(**kwargs: Any) -> Callable[[F], F]:
    """drf-spectacular's ``extend_schema`` for a view method, built on drf-spectacular's ``AutoSchema``.

    ``extend_schema`` alone builds on ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]``, DRF's own schema
    class unless the project configured drf-spectacular; that combination breaks schema generation.
    """

    def decorator(method: F) -> F:
        method.kwargs = {**getattr(method, "kwargs", {}), "schema": AutoSchema}  # type: ignore[attr-defined]
        return extend_schema(**kwargs)(method)

    return decorator


class RequestBodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_body_too_large"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with JSON nested too deeply for Python's parser reported as a 400."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None


class JSONRenderer(renderers.JSONRenderer):
    """JSON with every non-ASCII character escaped.

    A request body may hold strings that are not valid Unicode (a lone surrogate such as
    ``"\\ud800"``); echoed back in an error message, they could not be encoded as UTF-8.
    """

    ensure_ascii = True


# Seconds a client is asked to wait before trying again when the database or Redis is unreachable.
RETRY_AFTER_SECONDS = 5

UNAVAILABLE: tuple[type[Exception], ...] = (DatabaseError, InterfaceError, *QUEUE_UNAVAILABLE)


def handle_exception(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler, with the database or Redis being unreachable answered as JSON.

    A database error (``OperationalError`` and every other ``DatabaseError``, ``InterfaceError``)
    or a Redis connection error or timeout is a ``503`` with ``{"detail": ...}`` and a
    ``Retry-After`` header, never Django's HTML error page. Used by the API's views only
    (:meth:`DurableAPIMixin.get_exception_handler`); ``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` is
    left to the project.
    """
    response = exception_handler(exc, context)
    if response is not None or not isinstance(exc, UNAVAILABLE):
        return response
    set_rollback()
    what = "database" if isinstance(exc, DatabaseError | InterfaceError) else "queue (Redis)"
    view = context.get("view")
    logging.getLogger("durable_django.api").error(
        "%s unavailable in %s", what, type(view).__name__ if view is not None else "the API", exc_info=exc
    )
    return Response(
        {"detail": f"The {what} is unavailable; try again later."},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def request_body_size(request: Request) -> int:
    """The ``Content-Length`` of ``request``; 0 when it is absent or malformed, as for Django."""
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


class DurableAPIMixin(APIView):
    """Base of the API's views: classes from ``DURABLE``, drf-spectacular's schema, a body size limit.

    The viewsets add their pagination (see :class:`~durable_django.api.views.DurableViewSet`).
    """

    schema = AutoSchema()
    parser_classes = (JSONParser,)
    renderer_classes: Any = (JSONRenderer,)
    # The API's URLs carry no version, whatever DEFAULT_VERSIONING_CLASS says.
    versioning_class = None

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return handle_exception

    def get_authenticators(self) -> list[BaseAuthentication]:
        return [cls() for cls in authentication_classes()]

    def get_permissions(self) -> list[BasePermission]:
        return [cls() for cls in permission_classes()]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Before authentication: session authentication's CSRF check may read the body.
        size, limit = request_body_size(request), durable_settings.API_MAX_BODY_SIZE
        if size > limit:
            raise RequestBodyTooLarge(
                f"The request body is {size} bytes; this API accepts at most {limit} bytes "
                '(DURABLE["API_MAX_BODY_SIZE"]).'
            )
        super().initial(request, *args, **kwargs)
