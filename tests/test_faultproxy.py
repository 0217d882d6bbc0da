"""The fault proxy itself: a cut really loses the answer of a request that landed, latency delays, refusals refuse.

Driven with the plain Firestore client (no retry), so what the service's store would
see is seen here raw: ``ServiceUnavailable`` (gRPC UNAVAILABLE).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from tests.faultproxy import FaultProxy


@pytest.fixture
def proxy(emulator_host: str) -> Iterator[FaultProxy]:
    with FaultProxy(emulator_host, hold=0.2, seed=1) as running:
        yield running


def _client(host: str, project: str) -> firestore.Client:
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = host
    try:
        return firestore.Client(project=project)
    finally:
        os.environ["FIRESTORE_EMULATOR_HOST"] = saved or ""


def test_a_cut_request_answers_unavailable_although_the_write_landed(
    proxy: FaultProxy, emulator_host: str, project: str
) -> None:
    through, direct = _client(proxy.host, project), _client(emulator_host, project)
    through.collection("probe").document("warm").set({"n": 0})  # the connection and its preface are up
    doc = f"cut-{uuid.uuid4().hex[:8]}"
    with proxy.cutting(1.0), pytest.raises(gexc.ServiceUnavailable):
        through.collection("probe").document(doc).set({"n": 1}, retry=None, timeout=5)
    assert proxy.stats.cuts == 1
    landed = direct.collection("probe").document(doc).get()
    assert landed.exists and landed.to_dict() == {"n": 1}
    # With the cutting over, the same client reconnects by itself.
    assert through.collection("probe").document(doc).get(retry=None, timeout=5).to_dict() == {"n": 1}
    through.close()
    direct.close()


def test_requests_are_counted_per_rpc_and_latency_delays_them(proxy: FaultProxy, project: str) -> None:
    through = _client(proxy.host, project)
    through.collection("probe").document("a").get()
    before = proxy.stats.requests
    proxy.latency = 0.3
    started = time.monotonic()
    through.collection("probe").document("a").get(retry=None, timeout=5)
    elapsed = time.monotonic() - started
    assert proxy.stats.requests == before + 1
    assert elapsed >= 0.3
    assert proxy.stats.cuts == 0
    through.close()


def test_refused_connections_answer_unavailable_until_the_window_ends(proxy: FaultProxy, project: str) -> None:
    through = _client(proxy.host, project)
    through.collection("probe").document("a").get()
    proxy.refuse_for(3.0)
    proxy.reset_all()
    window = time.monotonic() + 2.5
    while time.monotonic() < window:  # every call fails: the old connection is gone, new ones are refused
        with pytest.raises(gexc.ServiceUnavailable):
            through.collection("probe").document("a").get(retry=None, timeout=2)
        time.sleep(0.1)
    assert proxy.stats.refused >= 1
    time.sleep(0.6)
    deadline = time.monotonic() + 10  # gRPC reconnects with a backoff of about a second after a refusal
    while True:
        try:
            through.collection("probe").document("a").get(retry=None, timeout=5)
            break
        except gexc.ServiceUnavailable:
            assert time.monotonic() < deadline, "no reconnection after the refusals stopped"
            time.sleep(0.2)
    through.close()
