"""tests/tls_proxy.py: the test PKI, the NSS database, and the TLS proxy in front of `make run`."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.tls_proxy import CA_NICKNAME, TestPki, TlsProxy

PASSWORD = "correct horse battery"


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki.mint(tmp_path / "pki")


@pytest.fixture
def https_server(live_server: str, pki: TestPki) -> Iterator[TlsProxy]:
    """`make run` (conftest's live_server) behind the TLS proxy."""
    with TlsProxy(pki, ("127.0.0.1", int(live_server.rsplit(":", 1)[1]))) as proxy:
        yield proxy


def test_the_proxy_serves_make_run_over_https(https_server: TlsProxy, pki: TestPki) -> None:
    with httpx.Client(base_url=f"https://127.0.0.1:{https_server.port}", verify=pki.client_context()) as client:
        reply = client.post("/register", json={"username": "alice", "password": PASSWORD}, timeout=60)
        assert reply.status_code == 201, reply.text
        login = client.post("/login", json={"username": "alice", "password": PASSWORD}, timeout=30)
        assert login.status_code == 200, login.text
        assert client.get("/profile", headers={"Authorization": f"Bearer {login.json()['token']}"}).status_code == 200
        assert client.get("/nope").status_code == 404
    assert https_server.connections >= 1
    assert https_server.errors == []


def test_a_client_that_does_not_trust_the_test_ca_is_refused(https_server: TlsProxy) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{https_server.port}/", verify=ssl.create_default_context(), timeout=10)


def test_the_leaf_names_the_host_and_loopback_only(pki: TestPki) -> None:
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(pki.leaf_chain.read_bytes())[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["app.example.test"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    context = pki.client_context()
    assert len(context.get_ca_certs()) == 1  # the test CA, and nothing of the system's


def test_the_browser_home_trusts_the_ca_in_its_nss_database(pki: TestPki, tmp_path: Path) -> None:
    if shutil.which("certutil") is None:
        if os.environ.get("CI"):
            pytest.fail("certutil is missing under CI: scripts/ci-browser.sh installs libnss3-tools")
        pytest.skip("certutil is missing (apt-get install libnss3-tools)")
    home = pki.browser_home(tmp_path / "home")
    listed = subprocess.run(
        ["certutil", "-L", "-d", f"sql:{home / '.pki' / 'nssdb'}"], check=True, capture_output=True, text=True
    ).stdout
    (line,) = [line for line in listed.splitlines() if line.startswith(CA_NICKNAME)]
    assert line.split()[-1] == "C,,"  # trusted to issue server certificates
