"""The admin's lists: a filter that cannot be applied is answered with a message, never an error page.

Django's admin takes, from the address, any lookup on a model's own fields (``?workflow=...``,
``?idempotency_key__regex=...``, ``?created_at__year=...``: see ``ModelAdmin.lookup_allowed``),
and sends the user to the unfiltered list (``?e=1``) on the errors it expects while it builds
the query. Others escape it: a year too large for a date overflows, and the database refuses
some values only when the list is counted, such as a NUL character in a string (PostgreSQL) or
an invalid regular expression. Every list of the package uses :class:`GuardedListAdmin`: such a
filter leads to the unfiltered list too, and a message names the filter and what is wrong.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG, IGNORED_PARAMS, PAGE_VAR, SEARCH_VAR, ChangeList
from django.core.exceptions import ValidationError
from django.db import DatabaseError, router, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext

if TYPE_CHECKING:
    from django.contrib import admin

    _AdminBase = admin.ModelAdmin[Any]
else:
    _AdminBase = object

#: The query-string parameters of a list that are not filters.
NOT_FILTERS = frozenset((*IGNORED_PARAMS, PAGE_VAR, ERROR_FLAG))


def shown(text: str) -> str:
    """``text`` as the address bar shows it: characters that cannot be printed are %-escaped."""
    return "".join(char if char.isprintable() else quote(char) for char in text)


def reason_of(error: IncorrectLookupParameters) -> str:
    """What was wrong, in a sentence, from the error a list raised (or the error behind it)."""
    given = error.args[0] if error.args else error.__cause__
    if isinstance(given, str):  # one of GuardedChangeList's own sentences
        text = given
    elif isinstance(given, ValidationError):
        text = " ".join(given.messages)
    elif isinstance(given, OverflowError):
        text = gettext("a number in it is too large")
    elif isinstance(given, DatabaseError):
        # The database's own words, first line only (PostgreSQL adds where in the statement).
        text = gettext("the database refused it (%(error)s)") % {
            "error": str(given).strip().splitlines()[0].rstrip(".")
        }
    elif isinstance(given, IndexError) or str(given).startswith("not enough values to unpack"):
        text = gettext("it has too few values (a range takes two, separated by a comma)")
    elif isinstance(given, ValueError) and str(given).startswith("invalid literal for int()"):
        text = gettext("it is not a whole number")
    elif isinstance(given, BaseException) and str(given):
        # FieldDoesNotExist, FieldError, ValueError: Django's words name the field (and not every
        # field of the model after "Choices are:").
        text = str(given).split(" Choices are:")[0]
    else:
        text = gettext("the list has no such page")  # Django's only bare IncorrectLookupParameters
    text = text.strip()
    return text if text.endswith(".") else f"{text}."


class GuardedChangeList(ChangeList):
    """A ChangeList whose query errors are all :class:`IncorrectLookupParameters`."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        for key, values in self.filter_params.items():
            if key == SEARCH_VAR:
                continue  # Django's search form refuses a NUL itself, with its own message.
            if any("\x00" in text for text in (key, *values)):
                raise IncorrectLookupParameters(
                    gettext("%(filter)s holds a NUL character (%%00), which PostgreSQL cannot compare with text.")
                    % {"filter": shown(key)}
                )
        try:
            return super().get_queryset(request, exclude_parameters)
        except (OverflowError, ValueError, ValidationError) as exc:
            # Django's date drill-down turns a bad year into ValueError, but not a year too large.
            raise IncorrectLookupParameters(exc) from exc

    def get_results(self, request: HttpRequest) -> None:
        try:
            # A savepoint: the refused statement must not break the transaction of the request.
            with transaction.atomic(using=router.db_for_read(self.model)):
                super().get_results(request)
                # The page's rows are read here rather than while the template renders, where an
                # error could no longer be turned into a message.
                len(self.result_list)
        except DatabaseError as exc:
            # PostgreSQL's DataError, SQLite's OperationalError from its regexp function, the
            # NotSupportedError of a JSON lookup the backend lacks. Without a filter, the error is
            # the database's own, not the address's: let it be a server error.
            if not any(key not in NOT_FILTERS for key in self.filter_params) and not self.query:
                raise
            raise IncorrectLookupParameters(exc) from exc
        except (ArithmeticError, LookupError, ValueError) as exc:
            # From compiling a lookup: ``created_at__year`` past 9999 overflows, ``id__range`` with
            # one value is an IndexError.
            raise IncorrectLookupParameters(exc) from exc


class GuardedListAdmin(_AdminBase):
    """Lists that answer a filter they cannot apply with a message on the unfiltered list."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return GuardedChangeList

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        try:
            return super().get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            # Django then redirects to ?e=1 (the unfiltered list), where the message is shown; a
            # request that has e=1 already gets Django's "Database error" page instead.
            if ERROR_FLAG not in request.GET:
                messages.error(request, self.refusal(request, exc))
            raise

    def refusal(self, request: HttpRequest, error: IncorrectLookupParameters) -> str:
        """The message of a list that could not be shown as ``request`` asked."""
        filters = ", ".join(
            f"{shown(key)}={shown(value)}"
            for key, values in request.GET.lists()
            if key not in NOT_FILTERS
            for value in values
        )
        values = {"reason": reason_of(error), "filters": filters, "plural": self.opts.verbose_name_plural}
        if not filters:
            return gettext("Could not show this page of the list: %(reason)s It is shown from its first page.") % values
        return (
            gettext("Could not filter the list by %(filters)s: %(reason)s All %(plural)s are shown instead.") % values
        )


class RunRowsSearchAdmin(GuardedListAdmin):
    """Lists of a run's rows (steps, groups, waits, events): a search for a run's id shows its rows."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        try:
            run_id = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(run_id=run_id), False
