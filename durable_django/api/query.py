"""The query parameters of the list endpoints: which names a list knows, and ``?ordering=``.

A list answers a 400 for a parameter it does not know, so that a misspelled filter is an error
instead of the whole list. ``?ordering=`` takes fields of the list's whitelist only (DRF's own
``OrderingFilter`` ignores the others quietly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import F, Model, OrderBy, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.views import APIView


def format_parameters() -> list[str]:
    """``format``, or the name ``REST_FRAMEWORK["URL_FORMAT_OVERRIDE"]`` gives it: DRF reads it on every view."""
    name = api_settings.URL_FORMAT_OVERRIDE
    return [name] if name else []


def refuse_unknown(given: Iterable[str], known: Sequence[str]) -> None:
    """A 400 naming the parameters of ``given`` that are not ``known``, and listing the known ones."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValidationError(
            {
                "detail": f"Unknown query parameter(s): {', '.join(unknown)}. This list accepts: {', '.join(known)}.",
                "unknown_parameters": unknown,
            }
        )


class DurableOrdering(OrderingFilter):
    """``?ordering=field`` or ``?ordering=-field`` (several, comma-separated), among the view's ``ordering_fields``.

    A field off the whitelist is a 400 naming ``ordering`` and the allowed values. Rows without a
    value (a run not finished yet, ordered by ``finished_at``) come last in both directions, on
    every database. Ties keep the list's default order, then the rows' ids, so that pages do not
    overlap. Without ``?ordering=`` the list keeps its default order.
    """

    ordering_param = "ordering"
    ordering_description = "Which fields to order the list by, comma-separated; a leading '-' orders descending."

    def allowed(self, view: APIView) -> list[str]:
        """Every value ``?ordering=`` takes on ``view``: each field, then each field descending."""
        fields: Sequence[str] = view.ordering_fields  # type: ignore[attr-defined]
        return [term for field in fields for term in (field, f"-{field}")]

    def given(self, request: Request) -> list[str]:
        """The terms of ``?ordering=``, blanks dropped."""
        value = request.query_params.get(self.ordering_param, "")
        return [term.strip() for term in value.split(",") if term.strip()]

    def errors(self, request: Request, view: APIView) -> list[str]:
        """One message per term of ``?ordering=`` that ``view`` does not order by."""
        allowed = self.allowed(view)
        return [
            f"{term!r} is not a field to order by; use one of {', '.join(allowed)}."
            for term in self.given(request)
            if term not in allowed
        ]

    def get_ordering(self, request: Request, queryset: QuerySet[Any], view: APIView) -> list[str] | None:
        errors = self.errors(request, view)
        if errors:
            raise ValidationError({self.ordering_param: errors})
        terms = self.given(request)
        if not terms:
            return None
        default: Sequence[str] = getattr(view, "ordering", None) or ()
        named = {term.lstrip("-") for term in terms}
        tail = [term for term in (*default, "pk") if term.lstrip("-") not in named]
        return [*terms, *tail]

    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: APIView) -> QuerySet[Any]:
        ordering = self.get_ordering(request, queryset, view)
        if not ordering:
            return queryset
        return queryset.order_by(*(order_by(queryset.model, term) for term in ordering))

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        return [
            {
                "name": self.ordering_param,
                "required": False,
                "in": "query",
                "description": self.ordering_description,
                "schema": {"type": "array", "items": {"type": "string", "enum": self.allowed(view)}},
                "style": "form",
                "explode": False,
            }
        ]


def order_by(model: type[Model], term: str) -> OrderBy:
    """``term`` (``"field"`` or ``"-field"``) as an ``ORDER BY`` expression with empty values last."""
    name = term.lstrip("-")
    field = F(name)
    null = name != "pk" and model._meta.get_field(name).null
    # nulls_last=None leaves the database's own placement: only nullable fields need the clause.
    nulls_last = True if null else None
    return field.desc(nulls_last=nulls_last) if term.startswith("-") else field.asc(nulls_last=nulls_last)
