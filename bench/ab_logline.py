"""The request log line before and after issue 13's one-pass handler, in one process, rounds interleaved.

    .venv/bin/python bench/ab_logline.py

``Api._log`` for GET /profile (inside a trace, to /dev/null) through google-cloud-logging's
``StructuredLogHandler`` (before) and ``session.logs.JsonLineHandler`` (after), in turn within
each round so that a busy machine hurts both alike. CPU µs per call, median [range].
"""

import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
import micro  # noqa: E402
from google.cloud.logging_v2.handlers.structured_log import StructuredLogHandler  # noqa: E402

from session import logs  # noqa: E402
from session.http import Call  # noqa: E402
from session.store import OpCounts  # noqa: E402

fx = micro.Fixture()
api, req = fx.api, fx.request()
call = Call(api, req, "profile", ())
call.log_fields.update(user_id="0" * 32, sid="abcdef012345")
ops = OpCounts(round_trips=1, reads=2)
devnull = open(os.devnull, "w")
old = StructuredLogHandler(project_id="demo", stream=devnull)
old.filters.insert(0, logs._TraceFilter())
new = logs.JsonLineHandler(devnull)
new.addFilter(logs._TraceFilter())
logger = logging.getLogger("session")
token = logs.current_trace.set(("projects/demo/traces/4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True))
n, rounds = 3000, 11
vals = {"StructuredLogHandler": [], "JsonLineHandler": []}
for _ in range(rounds):
    for name, h in (("StructuredLogHandler", old), ("JsonLineHandler", new)):
        logger.handlers[:] = [h]
        t = time.process_time()
        for _ in range(n):
            api._log(req, "profile", 200, "ok", 0.0, ops, call)
        vals[name].append((time.process_time() - t) / n * 1e6)
for name, v in vals.items():
    print(f"{name}: median {statistics.median(v):.1f} µs [{min(v):.1f}-{max(v):.1f}] per Api._log")
ratios = [b / a for a, b in zip(vals["StructuredLogHandler"], vals["JsonLineHandler"], strict=True)]
print(f"after/before per round: median {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
