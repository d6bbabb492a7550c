"""Prometheus metrics of the image API, served at GET /metrics.

Under gunicorn each worker is a process: with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets
it), every worker writes its samples there and /metrics adds them up.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests answered by the image API.",
    ["endpoint", "route", "image_model", "status"],
)
LATENCY = Histogram(
    "gateway_request_seconds",
    "Time to answer an image API request, provider time included.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
PROVIDER_ATTEMPTS = Counter(
    "gateway_provider_attempts_total",
    "Calls made to providers, retries and fallbacks included.",
    ["endpoint"],
)
IMAGES = Counter("gateway_images_total", "Images returned to clients.", ["endpoint", "image_model"])


def observe(
    *, endpoint: str, route: str, image_model: str, status: int, seconds: float, attempts: int, images: int
) -> None:
    REQUESTS.labels(endpoint, route, image_model, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)
    if attempts:
        PROVIDER_ATTEMPTS.labels(endpoint).inc(attempts)
    if images:
        IMAGES.labels(endpoint, image_model).inc(images)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
