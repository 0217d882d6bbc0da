"""``bench/cpu.py steps``: what the service's own code costs per GET /profile, without server or Firestore.

In one process, with no network: ``Api.handle`` serves GET /profile end to end
(real settings, service, store code, records, logging to /dev/null) with only
the store's ``_get_all`` replaced by two ready snapshots; the floor's handler
runs the same way. Then each step the service adds is timed alone, and a few
cheaper ways of doing the same work are timed beside them ("what if" rows), all
in microseconds per request (the median of R rounds of N calls). Timings on a
shared machine are noisy: compare rows of one run.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import logging
import os
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

from .cputime import ATimed, Timed, us_interleaved, us_sync


class Fixture:
    """The service, the floor and one request, wired without a network."""

    def __init__(self) -> None:
        from session import logs, tokens
        from session.http import Api
        from session.models import SessionRecord, UserRecord
        from session.runtime import build

        runtime = build()
        self.settings = runtime.settings
        logs.configure(self.settings, stream=open(os.devnull, "w"))  # a write per line, as to a pipe
        now = datetime.now(UTC)
        self.token = tokens.mint("bench")
        token_hash = tokens.hash_token(self.token)
        self.user = UserRecord(
            user_id="0" * 32,
            username="bench",
            password_hash="$argon2id$v=19$m=19456,t=2,p=1$" + "A" * 22 + "$" + "B" * 43,
            permissions=["read"],
            created_at=now,
            updated_at=now,
        ).model_dump()
        self.session = SessionRecord(
            user_id="0" * 32,
            username="bench",
            public_id=tokens.public_id(token_hash),
            created_at=now,
            last_seen_at=now + timedelta(hours=1),  # never inside the touch: no write
            absolute_expires_at=now + timedelta(days=1),
            expires_at=now + timedelta(hours=2),
            user_agent="wrk",
        ).model_dump()
        self.now = now
        self._snapshots: dict[str, Any] = {}

        async def get_all(refs: list[Any], client: Any = None) -> dict[str, Any]:
            return {ref.path: self.snapshot(ref) for ref in refs}

        runtime.store._get_all = get_all  # type: ignore[method-assign]  # the one call that would reach Firestore
        self.api = Api(runtime)
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/profile",
            "raw_path": b"/profile",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8080"), (b"authorization", f"Bearer {self.token}".encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
        }

    def snapshot(self, ref: Any) -> Any:
        """A ready snapshot per document, made once: building it (a deep copy) is the client's work, for both."""
        from google.cloud.firestore_v1.base_document import DocumentSnapshot

        snap = self._snapshots.get(ref.path)
        if snap is None:
            data = self.user if ref.path.startswith(self.settings.users_collection + "/") else self.session
            snap = self._snapshots[ref.path] = DocumentSnapshot(ref, data, True, self.now, self.now, self.now)
        return snap

    def request(self) -> Any:
        from starlette.requests import Request

        return Request(self.scope)

    def log_args(self) -> tuple[Any, Any, Any]:
        """A request, its ``Call`` with the fields a signed-in GET /profile logs, and its scope (Firestore counts)."""
        from session.call import Call
        from session.http import _RequestScope
        from session.store import OpCounts

        req = self.request()
        call = Call(self.api, req, "profile", ())
        call.log_fields.update(user_id="0" * 32, sid="abcdef012345")
        scope = _RequestScope(self.api.settings, req)
        scope.ops = OpCounts(round_trips=1, reads=2)
        return req, call, scope

    def floor_handler(self) -> ATimed:
        import floor

        client = floor._client()

        async def get_all(refs: list[Any]) -> Any:
            for ref in refs:
                yield self.snapshot(ref)

        client.get_all = get_all
        return lambda: floor.floor(self.request())


def end_to_end(fx: Fixture, n: int, rounds: int) -> list[tuple[str, float]]:
    """Api.handle and the floor handler, Firestore replaced; the service with its INFO lines below the level."""
    session_logger = logging.getLogger("session")
    service: ATimed = lambda: fx.api.handle(fx.request())  # noqa: E731
    handlers: dict[str, ATimed] = {"service": service}

    async def quiet() -> float:  # the request line is INFO: dropped at Logger.isEnabledFor
        session_logger.setLevel(logging.WARNING)
        try:
            return (await us_interleaved({"quiet": service}, n, 1))["quiet"]
        finally:
            session_logger.setLevel(logging.INFO)

    async def run(collect: bool) -> dict[str, list[float]]:
        values: dict[str, list[float]] = {}
        (gc.enable if collect else gc.disable)()
        try:
            for _ in range(rounds):
                for name, us in (await us_interleaved(handlers, n, 1)).items():
                    values.setdefault(name, []).append(us)
                values.setdefault("quiet", []).append(await quiet())
        finally:
            gc.enable()
        return values

    async def both() -> list[tuple[str, float]]:
        handlers["floor"] = fx.floor_handler()  # its client belongs to the running loop
        await us_interleaved(handlers, 300, 1)  # warm up: clients, lazy imports
        gc.freeze()  # as the service does after its first response
        rows = []
        for collect, suffix in ((True, ""), (False, ", garbage collector off")):
            values = await run(collect)
            rows += [
                (f"service: Api.handle, GET /profile, end to end{suffix}", statistics.median(values["service"])),
                (f"floor: its handler, end to end{suffix}", statistics.median(values["floor"])),
                (f"service with its request log line below the log level{suffix}", statistics.median(values["quiet"])),
            ]
        return rows

    return asyncio.run(both())


def steps(fx: Fixture, n: int, rounds: int) -> list[tuple[str, float]]:
    """Each step the service adds, alone (fresh Request objects where Starlette caches per request)."""
    from session import logs, tokens
    from session.call import Call
    from session.models import SessionRecord, UserRecord
    from session.routes import _profile_response, resolve
    from session.store import OpCounts, current_ops
    from session.store.client import _parse
    from session.views import profile_out as _profile_out

    api = fx.api
    u, s = UserRecord.model_validate(fx.user), SessionRecord.model_validate(fx.session)
    req, call, scope = fx.log_args()

    def per_request_context() -> None:
        logs.hold(fx.settings)
        op_token = current_ops.set(OpCounts())
        trace = logs.parse_trace(req.headers.get("traceparent"), req.headers.get("x-cloud-trace-context"))
        trace_token = logs.current_trace.set(trace)  # type: ignore[arg-type]
        logs.current_trace.reset(trace_token)
        current_ops.reset(op_token)

    def routing() -> None:
        r = fx.request()
        segments = tuple(x for x in r.url.path.split("/") if x)
        resolve(segments[0], segments[1:])
        Call(api, r, "profile", ())

    def headers_and_cors() -> None:
        resp = _profile_response(_profile_out(u, s))
        resp.headers.setdefault("Cache-Control", "no-store")
        api._cors_headers(req, resp)

    cases: dict[str, Timed] = {
        "request log line: Api._log (logging + JsonLineHandler, to /dev/null)": lambda: api._log(
            call, 200, "ok", scope
        ),
        "2 stored records: store._parse (model_validate)": lambda: (
            _parse(SessionRecord, fx.session, "s"),
            _parse(UserRecord, fx.user, "u"),
        ),
        "response: _profile_out + model_dump_json + Starlette Response + ETag": lambda: _profile_response(
            _profile_out(u, s)
        ),
        "Cache-Control + CORS on a response (incl. building it)": headers_and_cors,
        "credential + CSRF check on a new Request (headers, cookies)": lambda: Call(
            api, fx.request(), "profile", ()
        ).required_credential(),
        "token parse + SHA-256": lambda: tokens.parse(fx.token),
        "routing: URL path, resolve, Call": routing,
        "context: log hold, trace parse, 2 context variables set/reset, OpCounts": per_request_context,
        "for scale: a new Starlette Request + request.url.path (builds the whole URL, then splits it)": lambda: (
            fx.request().url.path
        ),
        "for scale: a new Starlette Request + scope['path']": lambda: fx.request().scope["path"],
        "for scale: a new Starlette Request + one header read": lambda: fx.request().headers.get("authorization"),
    }
    return [(label, us_sync(fn, n, rounds)) for label, fn in cases.items()]


def store_steps(fx: Fixture, n: int, rounds: int) -> list[tuple[str, float]]:
    """The session check's layers, with the Firestore client's ``get_all`` replaced as above."""
    from session import tokens

    service = fx.api.service
    store = service.store
    parsed = tokens.parse(fx.token)
    assert parsed is not None

    async def guard() -> None:
        async with store._guard():
            pass

    async def refs() -> None:
        store._sessions(parsed.token_hash)
        store._users(parsed.username)

    async def run() -> list[tuple[str, float]]:
        fns: dict[str, ATimed] = {
            "SessionService.authenticate (token parse, read_auth, rules, Principal)": lambda: service.authenticate(
                fx.token
            ),
            "store.read_auth (2 references, deadline guard, 2 records)": lambda: store.read_auth(
                parsed.username, parsed.token_hash
            ),
            "store: 2 document references (client lookup, collection, document)": refs,
            "store: the deadline guard alone (asynccontextmanager + asyncio.timeout)": guard,
        }
        await us_interleaved(fns, 200, 1)
        return list((await us_interleaved(fns, n, rounds)).items())

    return asyncio.run(run())


def log_parts(fx: Fixture, n: int, rounds: int) -> list[tuple[str, float]]:
    """The request log line, part by part, on the record ``Api._log`` makes."""
    from session.http import log as request_log

    api = fx.api
    _, call, scope = fx.log_args()
    handler: Any = logging.getLogger("session").handlers[0]  # logs.JsonLineHandler, with its trace filter
    captured: list[logging.LogRecord] = []
    real_log = request_log.log
    request_log.log = lambda level, msg, extra: captured.append(  # type: ignore[method-assign,assignment,misc]
        request_log.makeRecord(request_log.name, level, "http.py", 1, msg, (), None, "_log", extra)
    )
    try:
        api._log(call, 200, "ok", scope)
        fields = us_sync(lambda: api._log(call, 200, "ok", scope), n, rounds)
    finally:
        request_log.log = real_log  # type: ignore[method-assign]
    record = captured[0]
    extra = {"http_request": record.http_request, "json_fields": record.json_fields}  # type: ignore[attr-defined]
    [trace_filter] = handler.filters
    trace_filter.filter(record)
    line = handler.format(record)

    def write() -> None:
        handler.stream.write(line + "\n")
        handler.flush()

    return [
        ("log line, part: building its fields in Api._log (+ a LogRecord, no caller lookup)", fields),
        (
            "log line, part: Logger.findCaller (walks the stack for the source location)",
            us_sync(request_log.findCaller, n, rounds),
        ),
        (
            "log line, part: Logger.makeRecord (LogRecord: time, thread, process, task names)",
            us_sync(
                lambda: request_log.makeRecord("session.request", 20, "f", 1, "m", (), None, "f", extra), n, rounds
            ),
        ),
        ("log line, part: the trace filter", us_sync(lambda: trace_filter.filter(record), n, rounds)),
        (
            f"log line, part: {type(handler).__name__}.format",
            us_sync(lambda: handler.format(record), n, rounds),
        ),
        ("log line, part: write + flush to /dev/null", us_sync(write, n, rounds)),
    ]


def what_ifs(fx: Fixture, n: int, rounds: int) -> list[tuple[str, float]]:
    """Cheaper ways to do the same work, for the recommendations."""
    from session.models import ProfileOut, SessionInfo, SessionRecord, UserRecord
    from session.views import profile_out as _profile_out

    api = fx.api
    _, call, scope = fx.log_args()
    u, s = UserRecord.model_validate(fx.user), SessionRecord.model_validate(fx.session)
    out = open(os.devnull, "w")
    record = {"severity": "INFO", "message": "GET /profile 200", "httpRequest": {}, "firestore": scope.ops.as_dict()}

    def one_json_line() -> None:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()

    def lean_logging() -> float:
        saved = logging.logThreads, logging.logProcesses, logging.logMultiprocessing
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        try:
            return us_sync(lambda: api._log(call, 200, "ok", scope), n, rounds)
        finally:
            logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved

    var: contextvars.ContextVar[int] = contextvars.ContextVar("x")

    def set_reset() -> None:
        var.reset(var.set(1))

    # The user's fields of a profile, read once: the what-if times model_construct, not the look-ups.
    user_fields = {name: getattr(u, name) for name in ProfileOut.model_fields if name != "session"}

    def profile_constructed() -> str:
        info = SessionInfo.model_construct(logged_in_at=s.created_at, expires_at=s.expires_at, auth_time=s.auth_time)
        return ProfileOut.model_construct(**user_fields, session=info).model_dump_json()

    cases: dict[str, Timed] = {
        "what if: one json.dumps of the line's dict + write + flush (the floor of a JSON line)": one_json_line,
        "what if: 2 records via model_construct (no validation)": lambda: (
            SessionRecord.model_construct(**fx.session),
            UserRecord.model_construct(**fx.user),
        ),
        "what if: ProfileOut.model_dump_json alone": lambda: _profile_out(u, s).model_dump_json(),
        "what if: ProfileOut + SessionInfo via model_construct, then model_dump_json": profile_constructed,
        "for scale: one ContextVar set + reset": set_reset,
    }
    lean = ("what if: the same log line with logThreads/logProcesses/logMultiprocessing off", lean_logging())
    return [lean, *((label, us_sync(fn, n, rounds)) for label, fn in cases.items())]


def steps_table(requests: int, rounds: int) -> int:
    """Every row, as a Markdown table on stdout."""
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "demo-bench-micro")
    os.environ.setdefault("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")  # never contacted: _get_all is replaced
    fx = Fixture()
    rows = end_to_end(fx, requests, rounds)
    rows += steps(fx, requests, rounds)
    rows += store_steps(fx, requests, rounds)
    rows += log_parts(fx, requests, rounds)
    rows += what_ifs(fx, requests, rounds)
    print(f"| step ({rounds} rounds of {requests}, median) | µs per request |\n|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")
    return 0
