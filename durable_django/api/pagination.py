"""Page-number pagination of the list endpoints: ``?page=N`` and ``?page_size=N``.

The default size is ``DURABLE["API_PAGE_SIZE"]``; ``?page_size=`` may ask for any size up to
``DURABLE["API_MAX_PAGE_SIZE"]``. Both are read from the settings on every request.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import durable_settings


class DurablePagination(PageNumberPagination):
    """``?page=N`` and ``?page_size=N``; a size that is not a whole number from 1 to the maximum is a 400.

    DRF's own pagination quietly falls back to the default size, or to the maximum, instead: a
    client that asked for 5000 rows would take the 1000 it got for all of them.
    """

    page_query_param = "page"
    page_size_query_param = "page_size"

    def get_page_size(self, request: Request) -> int:
        errors = self.errors(request)
        if errors:
            raise ValidationError({self.page_size_query_param: errors})
        given = request.query_params.get(self.page_size_query_param, "")
        return int(given) if given else durable_settings.API_PAGE_SIZE

    def errors(self, request: Request) -> list[str]:
        """What is wrong with ``?page_size=``: nothing when it is absent, empty or a size allowed."""
        given = request.query_params.get(self.page_size_query_param, "")
        largest = durable_settings.API_MAX_PAGE_SIZE
        # Short digit strings only: int() refuses thousands of digits with a ValueError of its own.
        if given == "" or (given.isascii() and given.isdigit() and len(given) <= 18 and 1 <= int(given) <= largest):
            return []
        return [f'Must be a whole number from 1 to {largest} (DURABLE["API_MAX_PAGE_SIZE"]).']

    @classmethod
    def query_parameters(cls) -> list[str]:
        """The names of the query parameters this pagination reads."""
        return [cls.page_query_param, cls.page_size_query_param]

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Number of results to return per page (default {durable_settings.API_PAGE_SIZE})."
                )
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": durable_settings.API_MAX_PAGE_SIZE,
                }
        return parameters
