"""Structured logging for Cloud Logging: JSON lines on stdout, one set-up per instance.

Uses google-cloud-logging's ``StructuredLogHandler`` (what Cloud Functions gen2
and Cloud Run parse). It only detects the request by itself under Flask, so the
HTTP layer puts the trace of the current request in a context variable and a
filter copies it onto every record logged while that request runs, security
events included.

Never log tokens, passwords, password hashes, cookies or the Authorization header.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import re
import sys
import threading
from typing import IO

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
    been sent, so importing google-cloud-logging (a few hundred milliseconds)
    is not on the cold-start path; the held records are written then, in order.
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
        from google.cloud.logging_v2.handlers.structured_log import StructuredLogHandler

        handler = StructuredLogHandler(project_id=settings.project, stream=stream or sys.stdout)  # type: ignore[no-untyped-call]
        # Before the library's own filter, which renders the trace fields from these attributes.
        handler.filters.insert(0, _TraceFilter())
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
