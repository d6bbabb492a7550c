"""/api/v1/<kind> and /api/v1/<kind>/<id> for image models, routes and API keys."""

from __future__ import annotations

from django.urls import path

from entities.api import views

urlpatterns = [
    path("image-models", views.ImageModelCollection.as_view(), name="admin-api-image_models"),
    path("image-models/<str:entity_id>", views.ImageModelItem.as_view(), name="admin-api-image_models-item"),
    path("routes", views.RouteCollection.as_view(), name="admin-api-routes"),
    path("routes/<str:entity_id>", views.RouteItem.as_view(), name="admin-api-routes-item"),
    path("api-keys", views.ApiKeyCollection.as_view(), name="admin-api-api_keys"),
    path("api-keys/<str:entity_id>", views.ApiKeyItem.as_view(), name="admin-api-api_keys-item"),
]
