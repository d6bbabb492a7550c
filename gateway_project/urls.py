"""URL map: the admin, the service endpoints, and the image API under any route prefix."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from edits_api import health, metrics, results, views
from edits_api.admin_playground import playground_view
from gateway_project import pages

urlpatterns = [
    # The image API first: Django tries the patterns in order, and trying the other eleven first
    # doubled an edit's resolving (17 us, not 10). Any route prefix may stand before /v1/...;
    # routing.py decides which route it is.
    re_path(r"^(?:.*/)?v1/images/edits/?$", views.EditsView.as_view(), name="images-edits"),
    re_path(r"^(?:.*/)?v1/images/generations/?$", views.GenerationsView.as_view(), name="images-generations"),
    path("", pages.home, name="home"),
    path("favicon.ico", pages.favicon, name="favicon"),
    # Before the admin's own URLs; admin_view asks for a staff login like any admin page.
    path("admin/playground/", admin.site.admin_view(playground_view), name="admin-playground"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("images/<str:token>", results.serve_signed_image, name="signed-image"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("api/v1/", include("entities.api.urls")),  # the admin REST API
]

# Every answer outside DRF's views in the OpenAI envelope too (CSRF failures: CSRF_FAILURE_VIEW).
handler400 = "edits_api.errors.handler400"
handler403 = "edits_api.errors.handler403"
handler404 = "edits_api.errors.handler404"
handler500 = "edits_api.errors.handler500"
