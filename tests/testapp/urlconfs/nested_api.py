"""The API included inside another include, as a project with an ``api/`` tree of its own does."""

from django.urls import include, path

urlpatterns = [
    path("api/", include([path("durable/", include("durable_django.api.urls"))])),
]
