"""Structured logging for Cloud Logging: JSON lines on stdout, one set-up per instance.

Writes the lines of google-cloud-logging's ``StructuredLogHandler`` (what Cloud
Functions gen2 and Cloud Run parse), with the same keys, through ``JsonLineHandler``:
one dict and one ``json.dumps`` per record, and no import of the library (its
filter re-detected Flask, Django and OpenTelemetry on every record and encoded
the line in four passes). The HTTP layer puts the trace of the current request
in a context variable and a filter copies it onto every record logged while
that request runs, security events included.

``SESSION_LOG_FORMAT=text`` writes the same records as one short readable line
each instead (``make run`` in a terminal); deployed functions keep the default,
``json``.

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
import time
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


_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e\u00a0-\U0010ffff]|[\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control and bidi characters escaped (``\\x1b``), safe to print on a terminal."""
    return _UNPRINTABLE_RE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    """One readable line per record: time, level, message, then the structured fields as ``key=value``.

    ``POST /login 200 41ms code=ok user_id=… sid=… firestore=1rt/2r/1w/0d``. Request
    fields are untrusted, so every control character is escaped: a path cannot
    forge a second line.
    """

    def format(self, record: logging.LogRecord) -> str:
        parts = [time.strftime("%H:%M:%S", time.localtime(record.created)), f"{record.levelname:<7}"]
        parts.append(record.getMessage())
        http_request: dict[str, Any] = getattr(record, "http_request", None) or {}
        latency = str(http_request.get("latency", ""))
        if latency.endswith("s"):
            try:
                parts.append(f"{float(latency[:-1]) * 1000:.0f}ms")
            except ValueError:
                pass
        fields: dict[str, Any] = dict(getattr(record, "json_fields", None) or {})
        fields.pop("event", None)  # already the message
        fields.pop("entry_point", None)  # already in the path
        for key, value in fields.items():
            if key == "firestore" and isinstance(value, dict):
                value = "{round_trips}rt/{reads}r/{writes}w/{deletes}d".format_map(
                    {k: value.get(k, 0) for k in ("round_trips", "reads", "writes", "deletes")}
                )
            parts.append(f"{key}={value}")
        line = printable(" ".join(str(part) for part in parts))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


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
            install(_held, settings.log_level, replace=False)
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
        handler = make_handler(settings, stream or sys.stdout)
        install(handler, settings.log_level)  # removes _held too: it is flushed into the new handler below
        if _held is not None:
            _held.setTarget(handler)
            _held.close()  # flushes the held records to the new handler, in order
            _held = None
        _configured = True


def install(handler: logging.Handler, level: int | str, *, replace: bool = True) -> None:
    """The one set-up of the ``session`` loggers: ``handler`` at ``level``, and no propagation to the root.

    ``replace`` removes every other handler first. Never propagating keeps the records away
    from logging's last-resort handler, which would print bare messages on stderr.
    """
    logger = logging.getLogger("session")
    if replace:
        for old in list(logger.handlers):
            logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def make_handler(settings: Settings, stream: IO[str]) -> logging.Handler:
    """The handler of ``settings.log_format`` writing to ``stream``: structured JSON lines, or readable text."""
    if settings.log_format == "text":
        text = logging.StreamHandler(stream)
        text.setFormatter(TextFormatter())
        return text
    handler = JsonLineHandler(stream)
    handler.addFilter(_TraceFilter())
    return handler


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
