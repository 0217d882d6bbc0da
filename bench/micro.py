"""What the service's own code costs per GET /profile, without server or Firestore: ``make bench``'s drill-down.

    .venv/bin/python bench/micro.py

Times, in microseconds per request (best of several rounds), each step the
service does on top of the floor's batched get: the token check, copying the
two snapshots out (``DocumentSnapshot.to_dict`` deep-copies), validating them
into the stored-record models, building and serialising the response model,
and the one structured request log line. Compare the sum with the gap in
server CPU per request between service and floor in ``bench/results.md``.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "demo-bench-micro")


def best_us(fn: Callable[[], object], n: int = 2000, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def main() -> int:
    from google.cloud.firestore_v1.base_document import DocumentSnapshot

    from session import logs, tokens
    from session.config import load_settings
    from session.models import SessionRecord, UserRecord
    from session.service import _profile_out

    settings = load_settings()
    now = datetime.now(UTC)
    token = tokens.mint("bench")
    token_hash = tokens.hash_token(token)
    user = UserRecord(
        user_id="0" * 32,
        username="bench",
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$" + "A" * 22 + "$" + "B" * 43,
        permissions=["read"],
        created_at=now,
        updated_at=now,
    ).model_dump()
    sess = SessionRecord(
        user_id="0" * 32,
        username="bench",
        public_id=tokens.public_id(token_hash),
        created_at=now,
        last_seen_at=now,
        absolute_expires_at=now + timedelta(days=1),
        expires_at=now + timedelta(hours=2),
        user_agent="wrk",
    ).model_dump()
    snaps = [DocumentSnapshot(None, data, True, now, now, now) for data in (user, sess)]  # type: ignore[no-untyped-call]

    stream = io.StringIO()
    logs.configure(settings, stream=stream)
    request_log = logging.getLogger("session.request")
    u, s = UserRecord.model_validate(user), SessionRecord.model_validate(sess)

    def log_line() -> None:
        request_log.info(
            "GET /profile 200",
            extra={
                "http_request": {
                    "requestMethod": "GET",
                    "requestUrl": "/profile",
                    "status": 200,
                    "latency": "0.001000s",
                    "userAgent": "wrk",
                    "remoteIp": "127.0.0.1",
                    "protocol": "HTTP/1.1",
                },
                "json_fields": {
                    "entry_point": "profile",
                    "code": "ok",
                    "firestore": {"round_trips": 1, "reads": 2, "writes": 0, "deletes": 0},
                    "user_id": "0" * 32,
                    "sid": "abcdef012345",
                },
            },
        )
        stream.seek(0)
        stream.truncate()

    steps: list[tuple[str, Callable[[], object]]] = [
        ("token parse + sha256", lambda: tokens.parse(token)),
        ("2 x DocumentSnapshot.to_dict (deep copy)", lambda: [snap.to_dict() for snap in snaps]),
        ("2 x record model_validate", lambda: (UserRecord.model_validate(user), SessionRecord.model_validate(sess))),
        ("ProfileOut build + model_dump_json", lambda: _profile_out(u, s).model_dump_json()),
        ("one request log line (StructuredLogHandler)", log_line),
    ]
    total = 0.0
    print("| step | µs per request |\n|---|---|")
    for name, fn in steps:
        us = best_us(fn)
        total += us
        print(f"| {name} | {us:.1f} |")
    print(f"| **sum** | **{total:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
