"""Request ids and logs: every answer carries X-Request-Id, and every log line of a request names it.

The client's own X-Request-Id is kept when it is a sane token (1-128 of A-Z a-z 0-9 . _ : -),
else a new one ("req_" and 32 hex digits) is made. The id lives in a context variable that a
logging filter copies onto every record; LOG_FORMAT=json turns each line into a JSON object.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from django.core.signals import request_finished, request_started
from django.http import HttpRequest, HttpResponseBase

HEADER = "X-Request-Id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def new_request_id() -> str:
    return f"req_{secrets.token_hex(16)}"  # uuid4().hex's shape, a third of its cost


def current_request_id() -> str:
    """This request's id; outside a request (jobs, commands), a fresh one each call."""
    value = _request_id.get()
    return value if value != "-" else new_request_id()


def accepted_request_id(sent: str | None) -> str:
    return sent if sent is not None and _VALID.match(sent) else new_request_id()


def _request_started(sender: Any, environ: dict[str, Any] | None = None, **_: Any) -> None:
    # Set from the first moment of the request (Django's own request log lines come after the
    # middleware chain), cleared when the answer has been sent.
    _request_id.set(accepted_request_id((environ or {}).get("HTTP_X_REQUEST_ID")))


def _request_finished(sender: Any, **_: Any) -> None:
    _request_id.set("-")


request_started.connect(_request_started, dispatch_uid="request-id-started")
request_finished.connect(_request_finished, dispatch_uid="request-id-finished")


class RequestIdMiddleware:
    """First in the chain, so that every answer (admin, 404s, errors) gets the header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = _request_id.get()
        if request_id == "-":  # a handler that sent no request_started
            request_id = accepted_request_id(request.META.get("HTTP_X_REQUEST_ID"))
            _request_id.set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


class RequestIdFilter(logging.Filter):
    """Puts `request_id` on every record ("-" outside a request), for records made before the
    record factory below was installed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


def _skip_unused_record_fields() -> None:
    """No log format here or in gunicorn's names the source line, the thread or the
    multiprocessing process; the logging HOWTO's "Optimization" section turns each off. The
    caller's file and line alone cost a walk up the stack on every record, and every edit writes
    one (the whole line was 3% of an edit's instructions). gunicorn's `[%(process)d]` stays."""
    logging._srcfile = None  # the HOWTO's own spelling for "no caller information"
    logging.logThreads = False
    logging.logMultiprocessing = False


def _install_record_factory() -> None:
    """Every log record, whichever handler takes it, is born with the request id."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _request_id.get()
        return record

    factory.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def logging_config(*, level: str, json_format: bool) -> dict[str, Any]:
    """settings.LOGGING: plain lines, or JSON objects (time, level, logger, message, request_id)."""
    _install_record_factory()
    _skip_unused_record_fields()
    formatter: dict[str, Any]
    if json_format:
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "edits_api.observability.RequestIdFilter"}},
        "formatters": {"main": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["request_id"]}},
        "root": {"handlers": ["console"], "level": level},
    }
