"""Cold start alone: spawn → first 200 on GET /profile, the service (as deployed) against the floor.

    .venv/bin/python bench/cold.py [--repeats N]

``make bench`` measures this too, 5 times among its other runs; this runs only the cold starts, more of them
(default 15 pairs, in alternating order) and in about a minute, so a change to the import path can be judged on
its own. Starts an emulator, compiles the sources as a deployment does, registers a user through a first
service process and logs it in, then starts fresh service and floor processes in turn. Prints each figure's
median [min-max] and the per-pair ratio against the 1.15 target.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import base_env, server_settings
from harness.common import OUT, PASSWORD
from harness.processes import answers_200, call
from harness.scenarios import compile_sources, floor_server, service_server
from harness.stats import Figure, ratio, verdict

from devtools.launch import Emulator, serving

TARGET = 1.15


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    compile_sources()
    env = base_env(f"demo-bench-cold-{os.getpid()}", *server_settings())
    times: dict[str, list[float]] = {"service": [], "floor": []}
    with Emulator(log_path=OUT / "emulator-cold.log") as emulator:
        env["FIRESTORE_EMULATOR_HOST"] = emulator.host
        first = service_server("cold-setup", env).start()
        try:
            first.wait_until(serving(first.base + "/"))
            user = {"username": f"cold-{os.getpid()}", "password": PASSWORD}
            assert call(f"{first.base}/register", "POST", user)[0] == 201
            status, body, _ = call(f"{first.base}/login", "POST", user)
            assert status == 200, body
            bearer = {"Authorization": f"Bearer {body['token']}"}
        finally:
            first.stop()
        makers = [("service", service_server), ("floor", floor_server)]
        for rep in range(args.repeats):
            for name, make in makers if rep % 2 == 0 else makers[::-1]:
                server = make(f"cold-{name}", env).start()
                try:
                    times[name].append(server.wait_until(answers_200(f"{server.base}/profile", bearer)))
                finally:
                    server.stop()
    load = os.getloadavg()[0]
    for name, values in times.items():
        print(f"{name}: spawn → first 200 {Figure.of([v * 1000 for v in values]).show('{:.0f}')} ms")
    cold = ratio(times["service"], times["floor"])
    print(f"service / floor: {cold.show('{:.3f}')} (target ≤ {TARGET}): {verdict(cold, TARGET, at_most=True)}")
    print(f"{args.repeats} pairs; load average {load:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
