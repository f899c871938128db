"""``schedules/``: the schedules by name, with their next fire times; enable, disable, fire now, their runs.

Like the admin, the views call :mod:`durable_django.firing` and write nothing themselves. Reading
needs ``durable_django.view_schedule`` (:class:`~durable_django.api.permissions.CanViewRows`);
switching a schedule needs ``durable_django.change_schedule``; firing one starts a run, so it
needs ``durable_django.change_workflowrun`` too (:class:`~durable_django.api.permissions.CanOperateRuns`);
a schedule's runs need the permission to read runs.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import firing
from ..exceptions import InvalidInput
from ..models import Schedule, WorkflowRun
from .base import document
from .pagination import DurablePagination
from .query import format_parameters, refuse_unknown
from .serializers import RunSerializer
from .views import DETAIL, RowViewSet

NAME = OpenApiParameter("name", str, OpenApiParameter.PATH, description="The schedule's name.")


class ScheduleSerializer(serializers.ModelSerializer[Schedule]):
    """A schedule as stored: its cron expression in its timezone, and when it fires next."""

    class Meta:
        model = Schedule
        fields = (
            "name",
            "workflow",
            "cron",
            "timezone",
            "input",
            "enabled",
            "catch_up",
            "next_fire_at",
            "last_fired_at",
            "declared_in_code",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class ScheduleFilterSerializer(serializers.Serializer[dict[str, Any]]):
    """Query parameters of ``GET schedules/``."""

    workflow = serializers.CharField(required=False, max_length=200, trim_whitespace=False)
    enabled = serializers.BooleanField(required=False, allow_null=True, default=None)
    declared_in_code = serializers.BooleanField(required=False, allow_null=True, default=None)


class CanSwitchSchedules(BasePermission):
    """Enabling, disabling and firing need ``change_schedule``; a schedule's runs, reading runs."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if getattr(view, "action", None) == "runs":
            self.message = "Reading a schedule's runs needs the 'durable_django.view_workflowrun' permission."
            return bool(user.has_perm("durable_django.view_workflowrun") or user.has_perm(CHANGE_RUNS))
        if request.method in SAFE_METHODS:
            return True
        self.message = "Enabling, disabling or firing a schedule needs the 'durable_django.change_schedule' permission."
        return bool(user.has_perm("durable_django.change_schedule"))


CHANGE_RUNS = "durable_django.change_workflowrun"


class ScheduleViewSet(RowViewSet[Schedule]):
    """Schedules, by name: list, read, enable, disable, fire now, and the runs each started."""

    queryset = Schedule.objects.all()
    serializer_class = ScheduleSerializer
    filters_class = ScheduleFilterSerializer
    ordering_fields = ("name", "next_fire_at", "last_fired_at", "workflow")
    ordering = ("name",)
    lookup_field = "name"
    # Any name a schedule may have but "/".
    lookup_value_regex = "[^/]+"

    def get_permissions(self) -> list[BasePermission]:
        return [*super().get_permissions(), CanSwitchSchedules()]

    def not_found_message(self) -> str:
        return f"No schedule is named {self.kwargs['name']!r}."

    @document(summary="List schedules, by name", parameters=[ScheduleFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @document(summary="A schedule", parameters=[NAME], responses={200: ScheduleSerializer, 404: DETAIL})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    def _switch(self, enabled: bool) -> Response:
        row = self.get_object()
        firing.set_enabled(row, enabled)
        row.refresh_from_db()
        return Response(self.get_serializer(row).data)

    @document(summary="Enable a schedule: it fires next at its next cron time", parameters=[NAME], request=None)
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, name: str | None = None) -> Response:
        """Enable the schedule; the fire times it missed while disabled are not fired."""
        return self._switch(True)

    @document(summary="Disable a schedule", parameters=[NAME], request=None)
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, name: str | None = None) -> Response:
        return self._switch(False)

    @document(
        summary="Fire a schedule now: start a run of its workflow",
        parameters=[NAME],
        request=None,
        responses={
            202: RunSerializer,
            400: OpenApiResponse(DETAIL, description="Its workflow is not registered."),
            404: DETAIL,
        },
    )
    @action(detail=True, methods=["post"])
    def fire(self, request: Request, name: str | None = None) -> Response:
        """Start a run now, out of the cron times; its next fire time stays as it is."""
        row = self.get_object()
        try:
            run = firing.fire_now(row)
        except InvalidInput as exc:
            raise ValidationError({"workflow": [str(exc)]}) from None
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @document(
        summary="The runs a schedule started, newest first",
        parameters=[NAME],
        responses={200: RunSerializer(many=True), 404: DETAIL},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def runs(self, request: Request, name: str | None = None) -> Response:
        refuse_unknown(request.query_params, [*DurablePagination.query_parameters(), *format_parameters()])
        paging = DurablePagination().errors(request)
        if paging:
            raise ValidationError({DurablePagination.page_size_query_param: paging})
        row = self.get_object()
        runs = WorkflowRun.objects.filter(schedule=row).order_by("-created_at")
        page = self.paginator.paginate_queryset(runs, request, view=self) if self.paginator is not None else None
        return self.get_paginated_response(RunSerializer(page, many=True).data)
