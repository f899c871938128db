"""What every view of the API shares: its own classes, independent of ``REST_FRAMEWORK``.

The views set their authentication, permission, pagination, parser, renderer and schema classes
themselves, so the API behaves the same whatever the project's ``REST_FRAMEWORK`` setting says and
needs nothing but ``rest_framework`` in ``INSTALLED_APPS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema
from rest_framework import parsers, renderers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException, ParseError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import durable_settings
from .permissions import authentication_classes, permission_classes

F = TypeVar("F", bound=Callable[..., Any])


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
