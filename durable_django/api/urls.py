"""URLs of the API: ``path("api/durable/", include("durable_django.api.urls"))``."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from .schedules import ScheduleViewSet
from .schema import DurableSchemaView
from .views import ParallelGroupViewSet, RunViewSet, StepResultViewSet, WaitViewSet, WorkflowViewSet

app_name = "durable_api"

router = SimpleRouter()
router.register("runs", RunViewSet, basename="run")
router.register("steps", StepResultViewSet, basename="step")
router.register("groups", ParallelGroupViewSet, basename="group")
router.register("waits", WaitViewSet, basename="wait")
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("schedules", ScheduleViewSet, basename="schedule")

urlpatterns = [
    path("schema/", DurableSchemaView.as_view(), name="schema"),
    *router.urls,
]
