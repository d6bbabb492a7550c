"""gunicorn settings for `make run` and production; every number can be set from the environment.

Threaded workers: an edit holds its thread while the provider works (10-150 s), so threads,
not processes, carry the concurrency, and a few processes use both cores.
"""

import os

bind = os.environ.get("GUNICORN_BIND", f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "256"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
# Longer than the longest provider timeout, so gunicorn never kills a worker mid-edit.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "660"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
# Load the app once before forking: faster start, memory shared between workers.
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").lower() == "true"
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
