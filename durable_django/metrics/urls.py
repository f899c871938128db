"""Mount the metrics view: ``path("metrics/", include("durable_django.metrics.urls"))``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "durable_django_metrics"

urlpatterns = [path("", views.metrics, name="metrics")]
