"""Viewsets of the API. They read rows and call the engine; they never write run state themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet, ReadOnlyModelViewSet

from .. import operations
from ..definition import Workflow, find_workflow, get_workflow, queue_for, registered_workflows
from ..engine import get_or_start_run
from ..exceptions import InvalidInput, RunStateError, WorkflowNotFound
from ..models import ParallelGroup, StepResult, WorkflowRun
from .base import DurableAPIMixin, document
from .pagination import DurablePagination
from .serializers import (
    GroupFilterSerializer,
    ParallelGroupSerializer,
    RunDetailSerializer,
    RunFilterSerializer,
    RunSerializer,
    StartRunSerializer,
    StepFilterSerializer,
    StepResultSerializer,
    WorkflowSerializer,
)

DETAIL = inline_serializer("Detail", {"detail": serializers.CharField()})
FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT, description="Invalid fields: each field's name with a list of messages."
)


M = TypeVar("M", bound=Model)


class DurableViewSet(DurableAPIMixin, GenericViewSet[M]):
    """A viewset of the API: its pagination, and no filter backends of ``REST_FRAMEWORK``."""

    pagination_class = DurablePagination
    # The lists filter through validated query parameters of their own.
    filter_backends = ()


class RowViewSet(DurableViewSet[M], ReadOnlyModelViewSet[M]):
    """List and read the rows of one model: DRF's ``ReadOnlyModelViewSet`` with the API's base and pagination.

    The list is filtered by the query parameters that ``filters_class`` validates (a 400 names each
    invalid one); a missing or malformed id is a 404 that names it.
    """

    filters_class: type[serializers.Serializer[Any]]

    def get_queryset(self) -> QuerySet[M]:
        queryset = super().get_queryset()
        if self.action == "list":
            filters = self.filters_class(data=self.request.query_params)
            filters.is_valid(raise_exception=True)
            # Each parameter is named after the model field it matches (a run's id for run and parent).
            queryset = queryset.filter(**filters.validated_data)
        return queryset

    def get_object(self) -> M:
        try:
            return super().get_object()
        except Http404:
            raise NotFound(self.not_found_message()) from None

    def not_found_message(self) -> str:
        name = self.get_queryset().model._meta.verbose_name
        return f"No {name} has the id {self.kwargs[self.lookup_url_kwarg or self.lookup_field]!r}."


class RunViewSet(RowViewSet[WorkflowRun]):
    """Workflow runs: list, read, start, retry and cancel."""

    queryset = WorkflowRun.objects.all()
    filters_class = RunFilterSerializer

    def get_serializer_class(self) -> type[serializers.BaseSerializer[WorkflowRun]]:
        return RunSerializer if self.action == "list" else RunDetailSerializer

    def get_queryset(self) -> QuerySet[WorkflowRun]:
        queryset = super().get_queryset()
        if self.action != "list":
            queryset = queryset.prefetch_related("steps", "groups")
        return queryset

    @document(summary="List runs, newest first", parameters=[RunFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @document(
        summary="A run with its step results and parallel groups", responses={200: RunDetailSerializer, 404: DETAIL}
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    def _respond(self, run: WorkflowRun, code: int) -> Response:
        return Response(self.get_serializer(run).data, status=code)

    @document(
        summary="Start a run",
        request=StartRunSerializer,
        responses={
            201: RunDetailSerializer,
            200: OpenApiResponse(RunDetailSerializer, description="The run already started with this idempotency key."),
            400: FIELD_ERRORS,
            413: DETAIL,
        },
    )
    def create(self, request: Request) -> Response:
        """Start a run of a registered workflow, as ``durable_django.start_workflow`` does."""
        body = StartRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        name, key = body.validated_data["workflow"], body.validated_data.get("idempotency_key")
        try:
            run, created = get_or_start_run(
                get_workflow(name), body.validated_data.get("input", {}), idempotency_key=key
            )
        except WorkflowNotFound as exc:
            raise ValidationError({"workflow": [str(exc)]}) from None
        except InvalidInput as exc:
            raise ValidationError({"input": [str(exc)]}) from None
        # Of requests racing with one new idempotency key, exactly one created the run: 201; the others 200.
        return self._respond(run, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def _operate(self, operation: Callable[[WorkflowRun], WorkflowRun]) -> Response:
        run = self.get_object()
        try:
            run = operation(run)
        except RunStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except WorkflowRun.DoesNotExist:
            raise NotFound(self.not_found_message()) from None
        return self._respond(run, status.HTTP_202_ACCEPTED)

    @document(
        summary="Retry a failed run",
        request=None,
        responses={202: RunDetailSerializer, 404: DETAIL, 409: OpenApiResponse(DETAIL, description="Not failed.")},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Set a failed run moving again from where it failed, as ``durable_django.retry_run`` does."""
        return self._operate(operations.retry_run)

    @document(
        summary="Cancel a pending or running run",
        request=None,
        responses={
            202: RunDetailSerializer,
            404: DETAIL,
            409: OpenApiResponse(DETAIL, description="Already finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a run and its unfinished children, as ``durable_django.cancel_run`` does."""
        return self._operate(operations.cancel_run)


class StepResultViewSet(RowViewSet[StepResult]):
    """Step results: one row per attempt of a step or a branch."""

    queryset = StepResult.objects.all()
    serializer_class = StepResultSerializer
    filters_class = StepFilterSerializer

    @document(summary="List step results", parameters=[StepFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @document(summary="A step result", responses={200: StepResultSerializer, 404: DETAIL})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)


class ParallelGroupViewSet(RowViewSet[ParallelGroup]):
    """Parallel groups: one row per execution of a parallel block."""

    queryset = ParallelGroup.objects.all()
    serializer_class = ParallelGroupSerializer
    filters_class = GroupFilterSerializer

    @document(summary="List parallel groups", parameters=[GroupFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @document(summary="A parallel group", responses={200: ParallelGroupSerializer, 404: DETAIL})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)


def describe(wf: Workflow) -> dict[str, Any]:
    """A workflow as the API shows it."""
    return {"name": wf.name, "queue": queue_for(wf), "steps": wf.describe()}


class WorkflowViewSet(DurableViewSet[Any]):
    """The workflows registered in this process, by name."""

    serializer_class = WorkflowSerializer
    lookup_field = "name"
    # Any name a workflow may have, dots included; only "/" cannot be addressed.
    lookup_value_regex = "[^/]+"

    @document(summary="List registered workflows, by name")
    def list(self, request: Request) -> Response:
        workflows = sorted(registered_workflows().values(), key=lambda wf: wf.name)
        page = self.paginate_queryset(workflows)
        data = self.get_serializer([describe(wf) for wf in (workflows if page is None else page)], many=True).data
        return Response(data) if page is None else self.get_paginated_response(data)

    @document(
        summary="A registered workflow",
        parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH, description="The workflow's name.")],
        responses={200: WorkflowSerializer, 404: DETAIL},
    )
    def retrieve(self, request: Request, name: str) -> Response:
        wf = find_workflow(name)
        if wf is None:
            raise NotFound(f"No workflow named {name!r} is registered.")
        return Response(self.get_serializer(describe(wf)).data)
