"""Structured logging for Cloud Logging: JSON lines on stdout, one set-up per instance.

Writes the lines of google-cloud-logging's ``StructuredLogHandler`` (what Cloud
Functions gen2 and Cloud Run parse), with the same keys, through ``JsonLineHandler``:
one dict and one ``json.dumps`` per record, and no import of the library (its
filter re-detected Flask, Django and OpenTelemetry on every record and encoded
the line in four passes). The HTTP layer puts the trace of the current request
in a context variable and a filter copies it onto every record logged while
that request runs, security events included.

Never log tokens, passwords, password hashes, cookies or the Authorization header.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import re
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

from session.config import Settings

# (trace resource name, span id, sampled) of the request being served.
current_trace: contextvars.ContextVar[tuple[str, str | None, bool] | None] = contextvars.ContextVar(
    "current_trace", default=None
)

_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CLOUD_TRACE_RE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=([01]))?$")
_lock = threading.Lock()
_configured = False
_held: logging.handlers.MemoryHandler | None = None


def parse_trace(traceparent: str | None, cloud_trace: str | None) -> tuple[str, str | None, bool] | None:
    """(trace id, span id, sampled) from W3C ``traceparent`` or ``X-Cloud-Trace-Context``."""
    if traceparent:
        m = _TRACEPARENT_RE.fullmatch(traceparent.strip().lower())
        if m and m.group(1) != "0" * 32:
            return m.group(1), m.group(2), bool(int(m.group(3), 16) & 1)
    if cloud_trace:
        m = _CLOUD_TRACE_RE.fullmatch(cloud_trace.strip())
        if m:
            span = format(int(m.group(2)), "016x") if m.group(2) else None
            return m.group(1).lower(), span, m.group(3) == "1"
    return None


class _TraceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        trace = current_trace.get()
        if trace is not None and not hasattr(record, "trace"):
            record.trace, record.span_id, record.trace_sampled = trace
        return True


def hold(settings: Settings) -> bool:
    """Until ``configure`` runs, keep the ``session`` loggers' records in memory. Cheap; idempotent.

    Returns True while ``configure`` is still to be called. The HTTP layer calls
    this on every request and runs ``configure`` after the first response has
    been sent, so setting up the handler is not on the cold-start path; the
    held records are written then, in order.
    """
    global _held
    if _configured:
        return False
    with _lock:
        if _configured:
            return False
        if _held is None:
            _held = logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1, target=None)
            # The trace must be copied while the request is running: the context variable is gone later.
            _held.addFilter(_TraceFilter())
            logger = logging.getLogger("session")
            logger.addHandler(_held)
            logger.setLevel(settings.log_level)
            logger.propagate = False
        return True


def configure(settings: Settings, stream: IO[str] | None = None) -> None:
    """Install the structured handler on the ``session`` loggers, once per process.

    Writes out any records ``hold`` kept meanwhile. Pass ``stream`` to send the
    lines elsewhere (tests); that always reinstalls the handler.
    """
    global _configured, _held
    if _configured and stream is None:
        return
    with _lock:
        if _configured and stream is None:
            return
        handler = JsonLineHandler(stream or sys.stdout)
        handler.addFilter(_TraceFilter())
        logger = logging.getLogger("session")
        for old in list(logger.handlers):
            if old is not _held:
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(settings.log_level)
        logger.propagate = False
        if _held is not None:
            logger.removeHandler(_held)
            _held.setTarget(handler)
            _held.close()  # flushes the held records to the new handler, in order
            _held = None
        _configured = True


# Keys of the structured format itself: a record's own fields cannot override them (as in StructuredLogHandler).
_FORMAT_KEYS = frozenset(
    {
        "severity",
        "httpRequest",
        "time",
        "timestamp",
        "timestampSeconds",
        "timestampNanos",
        "logging.googleapis.com/insertId",
        "logging.googleapis.com/labels",
        "logging.googleapis.com/operation",
        "logging.googleapis.com/sourceLocation",
        "logging.googleapis.com/spanId",
        "logging.googleapis.com/trace",
        "logging.googleapis.com/trace_sampled",
    }
)
_exceptions = logging.Formatter()
# Made once: json.dumps with options builds a new encoder on every call.
_encoder = json.JSONEncoder(ensure_ascii=False, default=str)


class JsonLineHandler(logging.StreamHandler[IO[str]]):
    """A record as one line of Cloud Logging's structured JSON: one dict, one ``json.dumps``.

    The line ``StructuredLogHandler`` wrote, key for key: the record's ``json_fields``
    and ``message`` (with any traceback), ``severity``, ``logging.googleapis.com/labels``
    (``python_logger``), ``…/trace``, ``…/spanId`` and ``…/trace_sampled`` (from the
    attributes ``_TraceFilter`` sets; empty when there is no trace), ``…/sourceLocation``
    and ``httpRequest`` (the record's ``http_request``).
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "json_fields", None)
        line: dict[str, Any] = dict(fields) if isinstance(fields, Mapping) else {}
        if isinstance(record.msg, Mapping):
            line = {**record.msg, **line}
        else:
            message: Any = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = _exceptions.formatException(record.exc_info)
            if record.exc_text:
                message = f"{message}\n{record.exc_text}"
            if record.stack_info:
                message = f"{message}\n{record.stack_info}"
            if message.startswith("{"):  # a message that is itself a JSON object is kept as one
                try:
                    parsed = json.loads(message)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    message = parsed
            if isinstance(fields, Mapping):
                if message != "None":
                    line["message"] = message
            elif isinstance(message, dict):
                line = message
            elif message and message != "None":
                line["message"] = message
        if not _FORMAT_KEYS.isdisjoint(line):
            line = {key: value for key, value in line.items() if key not in _FORMAT_KEYS}
        line["severity"] = record.levelname
        line["logging.googleapis.com/labels"] = {"python_logger": record.name, **getattr(record, "labels", {})}
        line["logging.googleapis.com/trace"] = getattr(record, "trace", None) or ""
        line["logging.googleapis.com/spanId"] = getattr(record, "span_id", None) or ""
        line["logging.googleapis.com/trace_sampled"] = bool(getattr(record, "trace_sampled", False))
        source = {"line": record.lineno, "file": record.pathname, "function": record.funcName}
        if record.funcName is None or record.pathname is None:  # the library leaves out what is unknown
            source = {key: value for key, value in source.items() if value is not None}
        line["logging.googleapis.com/sourceLocation"] = getattr(record, "source_location", source)
        line["httpRequest"] = getattr(record, "http_request", None) or {}
        return _encoder.encode(line)
