"""Page-number pagination of the list endpoints, sized by ``DURABLE["API_PAGE_SIZE"]``."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from ..conf import durable_settings


class DurablePagination(PageNumberPagination):
    """``?page=N``; the page size is read from the settings on every request."""

    def get_page_size(self, request: Request) -> int:
        return durable_settings.API_PAGE_SIZE
