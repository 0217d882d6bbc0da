"""The ``make bench`` harness: the service against its floor and two peers, on this machine, in one run.

Modules, in the order a run uses them:

- ``tools``: what the run needs on this machine (wrk, the emulator, Node.js, a Python for the aiohttp peer,
  py-spy); installs what it can, else stops at once with one line naming what is missing.
- ``peers``: the express-session and aiohttp-session peers, installed into a cache outside the repository.
- ``processes``: servers in process groups of their own, CPU and memory of their whole process tree (psutil).
- ``load``: wrk runs, each one a ``Phase`` with throughput, latency and the server's CPU and peak memory.
- ``opslog``: Firestore operations per request, counted from the service's own request log.
- ``profiling``: py-spy on a server's process tree under load: where the CPU goes, by frame, package or bucket.
- ``stats``: median and range over the repeats, per-repeat ratios, verdicts.
- ``scenarios``: what is measured (read path, login, fresh instances, cache mode, profiles).
- ``report``: ``bench/results.md``.
- ``cli``: the command line (``bench/run.py``).

The drill-down, ``bench/cpu.py`` (where GET /profile's CPU goes, service against floor), uses them too:

- ``anatomy``: ``cpu.py load``, py-spy under wrk, every sample in a bucket;
- ``steps``: ``cpu.py steps``, in process without network, each step of the service timed alone;
- ``calls``: ``cpu.py calls``, in process on an emulator, the apps and the session check's layers;
- ``cputime``: their CPU-per-call timers.
"""

import sys
from pathlib import Path

# The repository root: devtools.launch (the emulator, free ports, process groups, the wait loop) is shared with
# make run and make test.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
