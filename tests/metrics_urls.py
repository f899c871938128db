"""A URLconf that mounts the metrics view, for tests/test_metrics.py."""

from django.urls import include, path

urlpatterns = [path("metrics/", include("durable_django.metrics.urls"))]
