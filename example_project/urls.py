from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/durable/", include("durable_django.api.urls")),
    path("shop/", include("example_project.shop.urls")),
]
