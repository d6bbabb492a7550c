"""URL map: the admin, the service endpoints, and the image API under any route prefix."""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from edits_api import metrics, results, views
from gateway_project import pages


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("", pages.home, name="home"),
    path("favicon.ico", pages.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("images/<str:token>", results.serve_signed_image, name="signed-image"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("api/v1/", include("entities.api.urls")),  # the admin REST API
    # Any route prefix may stand before /v1/...; routing.py decides which route it is.
    re_path(r"^(?:.*/)?v1/images/edits/?$", views.EditsView.as_view(), name="images-edits"),
    re_path(r"^(?:.*/)?v1/images/generations/?$", views.GenerationsView.as_view(), name="images-generations"),
]

handler404 = "edits_api.errors.handler404"
handler500 = "edits_api.errors.handler500"
