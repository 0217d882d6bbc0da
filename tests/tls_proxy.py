"""HTTPS for browser tests: a test CA, a leaf certificate, an NSS database that trusts the CA, and a TLS proxy.

Chromium runs DBSC only over HTTPS that it trusts (``--ignore-certificate-errors``
is not enough), on a registrable host name (not ``localhost``). So:

- ``TestPki.mint`` makes a CA and a leaf for ``host`` (and 127.0.0.1, for httpx) with
  ``cryptography``, as PEM files in a folder;
- ``TestPki.browser_home`` makes a HOME whose ``.pki/nssdb`` trusts that CA
  (``certutil`` from Debian's ``libnss3-tools``): start Chromium with that HOME;
- ``TlsProxy`` terminates TLS on 127.0.0.1 and pipes the bytes to a plain HTTP
  server (a test app, or ``make run``), so the app needs no TLS of its own;
- ``chromium_args`` maps the host name to 127.0.0.1 (``--host-resolver-rules``).

Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEST_HOST = "app.example.test"
CA_NICKNAME = "session-test-ca"


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class TestPki:
    """A test CA and a leaf certificate for ``host``, as PEM files in ``folder``."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    folder: Path
    host: str
    ca_cert: Path
    leaf_chain: Path  # the leaf, then the CA
    leaf_key: Path

    @classmethod
    def mint(cls, folder: Path, host: str = TEST_HOST) -> TestPki:
        """Make the CA and the leaf (P-256, valid from an hour ago for two days)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID

        now = datetime.datetime.now(datetime.UTC)
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
        ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("session test CA"))
            .issuer_name(_name("session test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(host))
            .issuer_name(ca.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        pki = cls(folder, host, folder / "ca.pem", folder / "leaf-chain.pem", folder / "leaf-key.pem")
        pki.ca_cert.write_bytes(ca.public_bytes(pem))
        pki.leaf_chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
        pki.leaf_key.write_bytes(
            leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return pki

    def browser_home(self, home: Path) -> Path:
        """A HOME for Chromium whose NSS database (``$HOME/.pki/nssdb``) trusts the CA; returns ``home``.

        Raises ``RuntimeError`` naming the package when ``certutil`` is missing.
        """
        certutil = shutil.which("certutil")
        if certutil is None:
            raise RuntimeError("certutil not found: apt-get install libnss3-tools (scripts/ci-browser.sh does)")
        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True, exist_ok=True)
        database = f"sql:{nssdb}"
        subprocess.run([certutil, "-N", "-d", database, "--empty-password"], check=True, capture_output=True)
        add = [certutil, "-A", "-d", database, "-n", CA_NICKNAME, "-t", "C,,", "-i", str(self.ca_cert)]
        subprocess.run(add, check=True, capture_output=True)
        listed = subprocess.run([certutil, "-L", "-d", database], check=True, capture_output=True, text=True)
        assert CA_NICKNAME in listed.stdout, listed.stdout
        return home

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.leaf_chain, self.leaf_key)
        context.set_alpn_protocols(["http/1.1"])  # the pipe carries HTTP/1.1, not h2
        return context

    def client_context(self) -> ssl.SSLContext:
        """For httpx and other Python clients: trusts the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def chromium_args(host: str = TEST_HOST) -> list[str]:
    """Flags that send ``host`` to 127.0.0.1 (the port stays the URL's)."""
    return [f"--host-resolver-rules=MAP {host} 127.0.0.1"]


@dataclass
class TlsProxy:
    """Terminates TLS on 127.0.0.1 (a free port) and pipes each connection to ``upstream`` in plain text.

    A context manager; ``port`` is known after ``__enter__``. ``errors`` collects
    what the event loop reported (failed handshakes: a browser that does not
    trust the CA shows up here).
    """

    pki: TestPki
    upstream: tuple[str, int]
    port: int = 0
    connections: int = 0
    errors: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.AbstractServer | None = None

    @property
    def base(self) -> str:
        return f"https://{self.pki.host}:{self.port}"

    def __enter__(self) -> TlsProxy:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _, ctx: self.errors.append(str(ctx.get("exception") or ctx["message"])))
        self._loop = loop
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._pipe, "127.0.0.1", 0, ssl=self.pki.server_context())
            )
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="tls-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the TLS proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        assert loop is not None and server is not None and thread is not None

        async def stop() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    async def _pipe(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            self.errors.append(f"upstream {self.upstream}: {exc}")
            client_writer.close()
            return

        async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        await asyncio.gather(copy(client_reader, up_writer), copy(up_reader, client_writer))


def missing_tools(chromium: str) -> list[str]:
    """What the HTTPS browser tests need and this machine lacks, each with how to get it."""
    missing = []
    if not (shutil.which(chromium) or Path(chromium).is_file()):
        missing.append(f"Chromium ({chromium}): scripts/ci-browser.sh")
    if shutil.which("certutil") is None:
        missing.append("certutil: apt-get install libnss3-tools (scripts/ci-browser.sh)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright for Python: pip install -r requirements-dev.txt")
    return missing


def environ_with_home(home: Path) -> dict[str, str]:
    """The browser's environment: ours, with HOME pointing at the NSS database's home."""
    return {**os.environ, "HOME": str(home)}
