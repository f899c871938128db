"""The run endpoints that act on many runs, or start one from another: bulk retry and cancel, and fork.

``POST runs/retry/`` and ``runs/cancel/`` take the list's filters as query parameters (and
``dry_run=true`` to only count); a call without any filter is refused, so that no mistyped
request retries or cancels every run. ``POST runs/{id}/fork/`` starts a new run at a top-level
step of the run. Each calls the engine's function (:mod:`durable_django.bulk`,
:mod:`durable_django.forks`), as the admin and the management commands do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from .. import bulk, forks
from ..exceptions import ContextNotRecorded, InvalidInput, RunStateError, UnknownStep, WorkflowNotFound
from ..models import WorkflowRun
from .base import RUN_ID, document
from .query import format_parameters, refuse_unknown
from .serializers import BulkFilterSerializer, ForkSerializer, RunDetailSerializer, RunFilterSerializer

COUNT = inline_serializer(
    "BulkCount",
    {
        "count": serializers.IntegerField(help_text="How many runs were changed (or would be, for a dry run)."),
        "dry_run": serializers.BooleanField(),
    },
)
REFUSED = OpenApiResponse(
    description="An unknown or invalid query parameter (each named), or no filter at all (refused)."
)
DETAIL = inline_serializer("ActionDetail", {"detail": serializers.CharField()})


class RunActionsMixin(GenericViewSet[WorkflowRun]):
    """``runs/retry/``, ``runs/cancel/`` and ``runs/{id}/fork/`` of :class:`~durable_django.api.views.RunViewSet`."""

    def selected_runs(self, request: Request) -> tuple[QuerySet[WorkflowRun], bool]:
        """The runs the list's filters in ``request``'s query select, and whether it is a dry run;
        a 400 naming each unknown or invalid parameter, or saying that no filter was given."""
        known = [*BulkFilterSerializer().fields, *format_parameters()]
        refuse_unknown(request.query_params, known)
        filters = BulkFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        chosen = dict(filters.validated_data)
        dry_run = bool(chosen.pop("dry_run", False))
        chosen = {name: value for name, value in chosen.items() if value is not None}
        if not chosen:
            names = [str(name) for name in RunFilterSerializer().fields]
            raise ValidationError(
                {"detail": f"Give at least one filter ({', '.join(names)}): an operation on every run is refused."}
            )
        return WorkflowRun.objects.filter(**chosen), dry_run

    def _bulk(
        self,
        request: Request,
        count: Callable[[QuerySet[WorkflowRun]], QuerySet[WorkflowRun]],
        operate: Callable[[QuerySet[WorkflowRun]], int],
    ) -> Response:
        runs, dry_run = self.selected_runs(request)
        changed = count(runs).count() if dry_run else operate(runs)
        return Response({"count": changed, "dry_run": dry_run})

    @document(
        summary="Retry the failed runs the filters select",
        parameters=[BulkFilterSerializer],
        request=None,
        responses={200: COUNT, 400: REFUSED},
    )
    @action(detail=False, methods=["post"], url_path="retry", url_name="retry-many")
    def retry_many(self, request: Request) -> Response:
        """Retry every failed run the query's filters select, as ``durable_django.retry_runs`` does.

        ``?dry_run=true`` only counts them. Runs that are not failed (or ran their compensations)
        are left alone and not counted.
        """
        return self._bulk(request, bulk.retryable, bulk.retry_runs)

    @document(
        summary="Cancel the pending, running or waiting runs the filters select",
        parameters=[BulkFilterSerializer],
        request=None,
        responses={200: COUNT, 400: REFUSED},
    )
    @action(detail=False, methods=["post"], url_path="cancel", url_name="cancel-many")
    def cancel_many(self, request: Request) -> Response:
        """Cancel every unfinished run the query's filters select, as ``durable_django.cancel_runs`` does.

        ``?dry_run=true`` only counts them.
        """
        return self._bulk(request, bulk.cancellable, bulk.cancel_runs)

    @document(
        summary="Fork a completed or failed run: a new run from one of its top-level steps",
        parameters=[RUN_ID],
        request=ForkSerializer,
        responses={
            201: RunDetailSerializer,
            400: OpenApiResponse(description="Invalid fields: from_step (naming the known steps), context."),
            404: DETAIL,
            409: OpenApiResponse(DETAIL, description="Not completed or failed, or its workflow is not registered."),
        },
    )
    @action(detail=True, methods=["post"])
    def fork(self, request: Request, pk: str | None = None) -> Response:
        """Start a new run of the run's workflow at ``from_step``, as ``durable_django.fork_run`` does.

        It starts with the context the run had right before that step, or with ``context`` when
        given; the run itself is not changed.
        """
        run = self.get_object()
        body = ForkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given: dict[str, Any] = body.validated_data
        try:
            forked = forks.fork_run(run.pk, from_step=given["from_step"], context=given.get("context"))
        except UnknownStep as exc:
            raise ValidationError({"from_step": [str(exc)], "known_steps": exc.known}) from None
        except (InvalidInput, ContextNotRecorded) as exc:
            raise ValidationError({"context": [str(exc)]}) from None
        except (RunStateError, WorkflowNotFound) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        detail = self.get_queryset().get(pk=forked.pk)
        return Response(RunDetailSerializer(detail, context=self.get_serializer_context()).data, status=201)
