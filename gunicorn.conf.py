"""gunicorn settings for `make run` and production; every number can be set from the environment.

Threaded workers: an edit holds its thread while the provider works (10-150 s), so threads,
not processes, carry the concurrency, and a few processes use both cores. The worker class is
gunicorn's threaded worker hardened against slow and idle clients (gateway_project/gworker.py),
with its own limits from the environment:

- GUNICORN_HEADER_TIMEOUT (10 s): the whole request head must arrive within it, else 408 and close;
  connections that send nothing are closed after it too. Heads are read without a thread.
- GUNICORN_BODY_TIMEOUT (30 s): the longest silence while the body arrives (or while the answer
  is sent), else 408 `request_timeout`.
- GUNICORN_WORKER_CONNECTIONS (8192 per process): past it a new connection gets 503 `server_busy`
  with Retry-After: 1, at once. The process needs a file limit above it (`ulimit -n`).
"""

import glob
import os
import tempfile

bind = os.environ.get("GUNICORN_BIND", f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# gunicorn's threaded worker, hardened against slow and idle clients (see that module for the limits).
worker_class = "gateway_project.gworker.GatewayThreadWorker"
# gunicorn's C parser (gunicorn_h1c, pinned): request heads parsed without a Python loop per header.
http_parser = "fast"
# Each worker alone can hold 2048 slow edits: connections are not spread evenly across workers.
# Threads start only when needed and a held edit's thread costs little memory (bench/README.md).
threads = int(os.environ.get("GUNICORN_THREADS", "2048"))
# Open connections per process (idle, arriving or served); past it a new one gets 503 at once.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "8192"))
# Longer than the longest provider timeout, so gunicorn never kills a worker mid-edit.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "660"))
# A deploy's SIGTERM waits this long for the edits in flight (an idle worker exits at once): longer
# than a route's default deadline (10 min), since the provider may already bill an edit it works on.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "660"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
# Load the app once before forking: faster start, memory shared between workers.
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").lower() == "true"
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"

# Prometheus samples of every worker go to one folder that /metrics adds up (new each start).
# Hooks below follow gunicorn's signatures (server, worker).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(tempfile.gettempdir(), f"gateway-metrics-{os.getpid()}")
# Now, not in on_starting: the preloaded app declares its metrics before that hook runs.
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def _clear_samples() -> None:
    # Only prometheus_client's own files: the folder may be one the operator chose.
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def on_starting(server):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    _clear_samples()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    _clear_samples()
