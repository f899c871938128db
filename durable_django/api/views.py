"""Viewsets of the API. They read rows and call the engine; they never write run state themselves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db.models import Model, Prefetch, QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.filters import BaseFilterBackend
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet, ReadOnlyModelViewSet

from .. import context, operations
from ..definition import Workflow, find_workflow, get_workflow, queue_for, registered_workflows
from ..engine import get_or_start_run
from ..exceptions import AmbiguousRunId, InvalidInput, RunStateError, WorkflowNotFound
from ..models import ParallelGroup, StepResult, Wait, WaitKind, WaitStatus, WorkflowRun
from ..resume import provide_input, send_event
from ..waits import can_answer
from .base import RUN_ID, DurableAPIMixin, document, request_body_size
from .pagination import DurablePagination
from .query import DurableOrdering, format_parameters, refuse_unknown
from .run_actions import RunActionsMixin
from .serializers import (
    OPEN_WAITS,
    CancelSerializer,
    EventResultSerializer,
    GroupFilterSerializer,
    ParallelGroupSerializer,
    RunDetailSerializer,
    RunFilterSerializer,
    RunSerializer,
    RunStepFilterSerializer,
    StartRunSerializer,
    StepFilterSerializer,
    StepResultDetailSerializer,
    StepResultSerializer,
    WaitFilterSerializer,
    WaitSerializer,
    WorkflowSerializer,
    storage_problem,
    wait_rows,
)

DETAIL = inline_serializer("Detail", {"detail": serializers.CharField()})
FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT, description="Invalid fields: each field's name with a list of messages."
)
AMBIGUOUS = OpenApiResponse(DETAIL, description="The id prefix matches more than one run.")
ANY_JSON: dict[str, Any] = {"description": "Any JSON value."}
JSON_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": {}}


M = TypeVar("M", bound=Model)


class DurableViewSet(DurableAPIMixin, GenericViewSet[M]):
    """A viewset of the API: its pagination, its own filter backends, and a list's query parameters checked.

    A list answers a 400 for a query parameter it does not know (naming it) and for invalid
    values of those it knows (each named), before reading anything.
    """

    pagination_class = DurablePagination
    # Not REST_FRAMEWORK's filter backends: the lists filter through validated query parameters of their own.
    filter_backends: Sequence[type[BaseFilterBackend]] = ()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if self.action == "list":
            refuse_unknown(request.query_params, self.list_parameters())
            errors = self.parameter_errors()
            if errors:
                raise ValidationError(errors)

    def list_parameters(self) -> list[str]:
        """The names of the query parameters the list takes, in the order its 400 lists them."""
        return [*DurablePagination.query_parameters(), *format_parameters()]

    def parameter_errors(self) -> dict[str, list[str]]:
        """Each invalid query parameter of the list, with its messages."""
        errors = DurablePagination().errors(self.request)
        return {DurablePagination.page_size_query_param: errors} if errors else {}


class RowViewSet(DurableViewSet[M], ReadOnlyModelViewSet[M]):
    """List and read the rows of one model: DRF's ``ReadOnlyModelViewSet`` with the API's base and pagination.

    The list is filtered by the query parameters that ``filters_class`` validates and ordered by
    ``?ordering=`` among ``ordering_fields`` (``ordering`` is the default order, the queryset's);
    a 400 names each invalid parameter. A missing or malformed id is a 404 that names it.
    """

    filters_class: type[serializers.Serializer[Any]]
    filter_backends = (DurableOrdering,)
    ordering_fields: tuple[str, ...]
    ordering: tuple[str, ...]

    def get_queryset(self) -> QuerySet[M]:
        queryset = super().get_queryset()
        if self.action == "list":
            filters = self.filters_class(data=self.request.query_params)
            filters.is_valid(raise_exception=True)
            # Each parameter is named after the model field it matches (a run's id for run and parent).
            # (A boolean left out is None, not False: query strings are no HTML forms.)
            queryset = queryset.filter(
                **{name: value for name, value in filters.validated_data.items() if value is not None}
            )
        return queryset

    def list_parameters(self) -> list[str]:
        return [*self.filters_class().fields, DurableOrdering.ordering_param, *super().list_parameters()]

    def parameter_errors(self) -> dict[str, list[str]]:
        filters = self.filters_class(data=self.request.query_params)
        errors: dict[str, list[str]] = {} if filters.is_valid() else dict(filters.errors)
        ordering = DurableOrdering().errors(self.request, self)
        if ordering:
            errors[DurableOrdering.ordering_param] = ordering
        return {**errors, **super().parameter_errors()}

    def get_object(self) -> M:
        try:
            return super().get_object()
        except Http404:
            raise NotFound(self.not_found_message()) from None

    def not_found_message(self) -> str:
        name = self.get_queryset().model._meta.verbose_name
        return f"No {name} has the id {self.kwargs[self.lookup_url_kwarg or self.lookup_field]!r}."


def with_details(runs: QuerySet[WorkflowRun]) -> QuerySet[WorkflowRun]:
    """``runs`` with what their detail shows alongside: step results, parallel groups and waits."""
    # The steps' logs are shown by a step's own detail only: a run's may hold thousands of records.
    return runs.prefetch_related(
        Prefetch("steps", queryset=StepResult.objects.defer("logs")),
        "groups",
        Prefetch("waits", queryset=wait_rows()),
        Prefetch("forks", WorkflowRun.objects.order_by("created_at")),
    )


class AmbiguousId(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "More than one run has an id starting with this prefix."
    default_code = "ambiguous_id"


class RunViewSet(RunActionsMixin, RowViewSet[WorkflowRun]):
    """Workflow runs: list, read, start, retry, cancel (one, or those filters select), fork, send events and answer inputs.

    A run's routes take its whole id or a prefix of it of at least 8 hex characters that no
    other run's id starts with (``/runs/3f0c1a2b/``): ambiguous is a 400 saying how many runs
    it matches, and unknown a 404.
    """

    queryset = WorkflowRun.objects.all()
    filters_class = RunFilterSerializer
    ordering_fields = ("created_at", "started_at", "finished_at", "status", "workflow")
    ordering = ("-created_at",)

    def get_object(self) -> WorkflowRun:
        given = self.kwargs["pk"]
        try:
            self.kwargs["pk"] = str(operations.find_run_id(given))
        except WorkflowRun.DoesNotExist:
            raise NotFound(self.not_found_message()) from None
        except AmbiguousRunId as exc:
            raise AmbiguousId(str(exc)) from None
        try:
            return super().get_object()
        finally:
            self.kwargs["pk"] = given

    def get_serializer_class(self) -> type[serializers.BaseSerializer[WorkflowRun]]:
        return RunSerializer if self.action == "list" else RunDetailSerializer

    def get_queryset(self) -> QuerySet[WorkflowRun]:
        queryset = super().get_queryset()
        if self.action in ("events", "inputs", "steps"):
            # Only the run's id and status are read before the engine is called.
            return queryset
        if self.action == "list":
            return queryset.prefetch_related(
                Prefetch("waits", queryset=wait_rows().filter(status=WaitStatus.WAITING), to_attr=OPEN_WAITS)
            )
        return with_details(queryset)

    @document(summary="List runs, newest first", parameters=[RunFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @document(
        summary="A run with its step results, parallel groups and waits",
        parameters=[RUN_ID],
        responses={200: RunDetailSerializer, 400: AMBIGUOUS, 404: DETAIL},
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
                get_workflow(name),
                body.validated_data.get("input", {}),
                idempotency_key=key,
                delay=body.validated_data.get("delay"),
                run_at=body.validated_data.get("run_at"),
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
        parameters=[RUN_ID],
        request=None,
        responses={
            202: RunDetailSerializer,
            400: AMBIGUOUS,
            404: DETAIL,
            409: OpenApiResponse(DETAIL, description="Not failed."),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Set a failed run moving again from where it failed, as ``durable_django.retry_run`` does."""
        return self._operate(operations.retry_run)

    @document(
        summary="Cancel a pending, running or waiting run",
        parameters=[RUN_ID],
        request=CancelSerializer,
        responses={
            202: RunDetailSerializer,
            400: FIELD_ERRORS,
            404: DETAIL,
            409: OpenApiResponse(DETAIL, description="Already finished, or compensating."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a run and its unfinished children, as ``durable_django.cancel_run`` does.

        An optional body ``{"compensate": true}`` runs the compensations of its completed steps
        first (the run is ``compensating`` meanwhile); without a body it is cancelled at once.
        """
        body = CancelSerializer(data=request.data if request_body_size(request) else {})
        body.is_valid(raise_exception=True)
        compensate = body.validated_data.get("compensate", False)
        return self._operate(lambda run: operations.cancel_run(run, compensate=compensate))

    @document(
        summary="A run's step results, paged (a block's items, its failed ones...)",
        parameters=[RUN_ID, RunStepFilterSerializer],
        responses={200: StepResultSerializer(many=True), 400: FIELD_ERRORS, 404: DETAIL},
    )
    @action(detail=True, methods=["get"], url_path="steps", url_name="steps", filter_backends=[])
    def steps(self, request: Request, pk: str | None = None) -> Response:
        """The run's step results in the order they were written, filtered and paged like ``steps/``."""
        refuse_unknown(
            request.query_params,
            [*RunStepFilterSerializer().fields, *DurablePagination.query_parameters(), *format_parameters()],
        )
        filters = RunStepFilterSerializer(data=request.query_params)
        errors: dict[str, Any] = {} if filters.is_valid() else dict(filters.errors)
        paging = DurablePagination().errors(request)
        if paging:
            errors[DurablePagination.page_size_query_param] = paging
        if errors:
            raise ValidationError(errors)
        run = self.get_object()
        rows = StepResult.objects.filter(run=run, **filters.validated_data).defer("logs").order_by("id")
        page = self.paginator.paginate_queryset(rows, request, view=self) if self.paginator is not None else None
        return self.get_paginated_response(StepResultSerializer(page, many=True).data)

    def _current(self, run: WorkflowRun) -> Response:
        """The run as its detail endpoint shows it now."""
        return self._respond(with_details(WorkflowRun.objects.all()).get(pk=run.pk), status.HTTP_200_OK)

    @document(
        summary="Send an event to a run",
        parameters=[
            RUN_ID,
            OpenApiParameter(
                "event", str, OpenApiParameter.PATH, description="The event's name, as the run's wait names it."
            ),
        ],
        request={"application/json": ANY_JSON},
        responses={
            200: EventResultSerializer,
            400: FIELD_ERRORS,
            404: DETAIL,
            409: OpenApiResponse(DETAIL, description="The run has finished."),
            413: DETAIL,
        },
    )
    @action(detail=True, methods=["post"], url_path=r"events/(?P<event>[^/]+)", url_name="events")
    def events(self, request: Request, event: str, pk: str | None = None) -> Response:
        """Send ``event`` to the run, as ``durable_django.send_event`` does; the body is its payload.

        The body is any JSON value (an empty body is ``null``). A wait of the run for that event
        takes it at once (``delivered``); otherwise the run keeps it until one does (``buffered``).
        """
        run = self.get_object()
        name_problem = context.text_problem(event)
        if name_problem:
            raise ValidationError({"event": [f"The event's name {name_problem}."]})
        payload = None if request_body_size(request) == 0 else request.data
        problem = storage_problem(payload)
        if problem:
            raise ValidationError({"payload": [f"The payload {problem}."]})
        try:
            result = send_event(run.pk, event, payload)
        except InvalidInput as exc:
            raise ValidationError({exc.field or "payload": [str(exc)]}) from None
        except RunStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except WorkflowRun.DoesNotExist:
            raise NotFound(self.not_found_message()) from None
        return Response(EventResultSerializer({"result": result}).data)

    @document(
        summary="Answer a run's wait for input",
        parameters=[RUN_ID, OpenApiParameter("name", str, OpenApiParameter.PATH, description="The input's name.")],
        request={"application/json": JSON_OBJECT},
        responses={
            200: RunDetailSerializer,
            400: FIELD_ERRORS,
            403: DETAIL,
            404: DETAIL,
            409: OpenApiResponse(DETAIL, description="The run does not wait for this input."),
            413: DETAIL,
        },
    )
    @action(detail=True, methods=["post"], url_path=r"inputs/(?P<name>[^/]+)", url_name="inputs")
    def inputs(self, request: Request, name: str, pk: str | None = None) -> Response:
        """Answer the run's input ``name``, as ``durable_django.provide_input`` does; the body is the answer.

        The user needs the input's own permission, or ``durable_django.provide_input`` when it names
        none. The run then goes on with the answer in its context.
        """
        run = self.get_object()
        wait = Wait.objects.filter(run=run, kind=WaitKind.INPUT, name=name, status=WaitStatus.WAITING).first()
        if wait is not None and not can_answer(request.user, wait.permission):
            self.permission_denied(
                request,
                message=f"Answering this input needs the {wait.permission or 'durable_django.provide_input'!r} "
                "permission.",
            )
        answer: Any = request.data if request_body_size(request) else None
        problem = storage_problem(answer)
        if problem:
            raise ValidationError({"answer": [f"The answer {problem}."]})
        try:
            user = request.user if request.user.is_authenticated else None
            run = provide_input(run.pk, name, answer, user=user)
        except InvalidInput as exc:
            raise ValidationError({exc.field or "answer": [str(exc)]}) from None
        except RunStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except WorkflowRun.DoesNotExist:
            raise NotFound(self.not_found_message()) from None
        return self._current(run)


class StepResultViewSet(RowViewSet[StepResult]):
    """Step results: one row per attempt of a step or a branch; a step result's own detail also has its logs."""

    queryset = StepResult.objects.all()
    serializer_class = StepResultSerializer
    filters_class = StepFilterSerializer
    ordering_fields = ("id", "created_at", "started_at", "finished_at", "attempt", "step", "status")
    ordering = ("id",)

    def get_serializer_class(self) -> type[serializers.BaseSerializer[StepResult]]:
        return StepResultDetailSerializer if self.action == "retrieve" else StepResultSerializer

    def get_queryset(self) -> QuerySet[StepResult]:
        queryset = super().get_queryset()
        # A page of a list holds up to API_MAX_PAGE_SIZE rows: their logs are not read.
        return queryset if self.action == "retrieve" else queryset.defer("logs")

    @document(summary="List step results", parameters=[StepFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @document(summary="A step result, with its logs", responses={200: StepResultDetailSerializer, 404: DETAIL})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)


class ParallelGroupViewSet(RowViewSet[ParallelGroup]):
    """Parallel groups: one row per execution of a parallel block."""

    queryset = ParallelGroup.objects.all()
    serializer_class = ParallelGroupSerializer
    filters_class = GroupFilterSerializer
    ordering_fields = ("id", "created_at", "finished_at", "name", "status")
    ordering = ("created_at", "id")

    @document(summary="List parallel groups", parameters=[GroupFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @document(summary="A parallel group", responses={200: ParallelGroupSerializer, 404: DETAIL})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)


class WaitViewSet(RowViewSet[Wait]):
    """Waits: what runs wait (or waited) for, oldest first; ``?status=waiting&kind=input`` is an inbox."""

    queryset = wait_rows()
    serializer_class = WaitSerializer
    filters_class = WaitFilterSerializer
    ordering_fields = ("id", "created_at", "due_at", "resolved_at", "kind", "name", "status")
    ordering = ("created_at", "id")

    @document(summary="List waits, oldest first", parameters=[WaitFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @document(summary="A wait", responses={200: WaitSerializer, 404: DETAIL})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)


def describe(wf: Workflow) -> dict[str, Any]:
    """A workflow as the API shows it."""
    return {"name": wf.name, "queue": queue_for(wf), "steps": wf.describe()}


class WorkflowViewSet(DurableViewSet[Any]):
    """The workflows registered in this process, by name."""

    serializer_class = WorkflowSerializer
    # Workflows are no rows: reading them needs the permission to read runs (see CanViewRows).
    permission_model = WorkflowRun
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
