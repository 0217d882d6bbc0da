"""session.devices: device names from real User-Agents, coarse networks, the place header."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from session.config import load_settings
from session.devices import (
    MAX_DEVICE_NAME,
    MAX_PLACE,
    client_network,
    client_place,
    coarse_network,
    device_name,
)
from tests.conftest import ROOT

CHROME_LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"

USER_AGENTS = [
    # (what, User-Agent, device name)
    ("Chrome on Linux", CHROME_LINUX, "Chrome 156 on Linux"),
    (
        "Firefox on Windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:146.0) Gecko/20100101 Firefox/146.0",
        "Firefox 146 on Windows",
    ),
    (
        "Safari on iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.6 Mobile/15E148 Safari/604.1",
        "Safari 18 on iOS",
    ),
    (
        "Safari on macOS",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 "
        "Safari/605.1.15",
        "Safari 18 on Mac OS X",
    ),
    (
        "Edge on Windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 "
        "Safari/537.36 Edg/142.0.3595.94",
        "Edge 142 on Windows",
    ),
    (
        "Chrome on Android",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Mobile "
        "Safari/537.36",
        "Chrome 142 on Android",
    ),
    (
        "Chrome on iOS",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/142.0.7444.77 Mobile/15E148 Safari/604.1",
        "Chrome 142 on iOS",
    ),
    (
        "Firefox on Android",
        "Mozilla/5.0 (Android 15; Mobile; rv:146.0) Gecko/146.0 Firefox/146.0",
        "Firefox 146 on Android",
    ),
    ("curl: a browser, no system", "curl/8.14.1", "curl 8"),
    ("a system, no browser", "Mozilla/5.0 (X11; Linux x86_64)", "Unknown browser on Linux"),
    ("an unknown client", "python-httpx/0.28.1", None),
    ("no header", None, None),
    ("empty", "", None),
    ("blank", "   ", None),
    ("garbage", "\x00\x1b[31m;;;((( ]]]%%", None),
    ("control characters around a real one", f"\x1b[2J{CHROME_LINUX}\r\n", "Chrome 156 on Linux"),
    ("10 kB of nothing", "A" * 10_240, None),
    ("10 kB after a real one: only the first 512 are read", CHROME_LINUX + " x" * 5_000, "Chrome 156 on Linux"),
    ("10 kB before a real one: cut before it", "x " * 5_000 + CHROME_LINUX, None),
]


@pytest.mark.parametrize(("user_agent", "name"), [row[1:] for row in USER_AGENTS], ids=[row[0] for row in USER_AGENTS])
def test_device_name_from_a_real_user_agent(user_agent: str | None, name: str | None) -> None:
    assert device_name(user_agent) == name


def test_a_long_user_agent_costs_no_more_than_a_capped_one() -> None:
    device_name(CHROME_LINUX)  # the rules are loaded by the first call
    started = time.perf_counter()
    for index in range(20):
        assert device_name(f"{index}" + "\x7f(" * 500_000) is None  # 1 MB each, different (no cache)
    assert time.perf_counter() - started < 2.0


@given(st.text(max_size=2000))
def test_device_name_never_raises_and_stays_short_and_printable(user_agent: str) -> None:
    name = device_name(user_agent)
    assert name is None or (0 < len(name) <= MAX_DEVICE_NAME and name.isprintable())


def test_the_parser_is_imported_by_the_first_name_not_by_the_module() -> None:
    code = (
        "import sys, session.devices as d; assert 'ua_parser' not in sys.modules; "
        f"print(d.device_name({CHROME_LINUX!r})); assert 'ua_parser' in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Chrome 156 on Linux"


# --- the network ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("203.0.113.0", "203.0.113.0/24"),
        ("10.1.2.255", "10.1.2.0/24"),
        ("2001:db8:abcd:12:34:56:78:9a", "2001:db8:abcd::/48"),
        ("2001:db8:abcd:12::/64", "2001:db8:abcd::/48"),  # what client_address gives for IPv6
        ("::ffff:198.51.100.9", "198.51.100.0/24"),  # IPv4-mapped: the IPv4 /24
        ("::1", "::/48"),
        ("testclient", None),  # not an address: the test client's peer name
        ("2001:db8::/32", None),  # wider than /48: it would not name a /48
        ("203.0.0.0/16", None),
        ("::ffff:0:0/96", None),
        ("203.0.113.77:8080", None),
        ("", None),
        (None, None),
        (" 203.0.113.77 ", "203.0.113.0/24"),
        ("1" * 10_000, None),
    ],
)
def test_coarse_network(address: str | None, network: str | None) -> None:
    assert coarse_network(address) == network


_ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Network((a, 64), strict=False))),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.text(max_size=80),
)


@given(_ADDRESSES)
def test_coarse_network_never_raises_and_never_returns_the_address(address: str) -> None:
    network = coarse_network(address)
    if network is None:
        return
    parsed = ipaddress.ip_network(network)  # strict: the host bits are zero
    assert parsed.prefixlen == (24 if parsed.version == 4 else 48)
    assert network != address.strip()
    host = ipaddress.ip_network(address.strip(), strict=False)
    if isinstance(host, ipaddress.IPv6Network) and host.network_address.ipv4_mapped is not None:
        host = ipaddress.ip_network(host.network_address.ipv4_mapped)
    assert host.subnet_of(parsed)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "forwarded", "peer", "network"),
    [
        ({}, ["198.51.100.1"], "203.0.113.9", "203.0.113.0/24"),  # no header setting: the peer, the header ignored
        (
            {"SESSION_CLIENT_IP_HEADER": "X-Forwarded-For"},
            ["198.51.100.1, 192.0.2.44"],
            "10.0.0.1",
            "192.0.2.0/24",  # the entry the trusted proxy appended (one hop from the right)
        ),
        (
            {"SESSION_CLIENT_IP_HEADER": "X-Forwarded-For", "SESSION_CLIENT_IP_HOPS": "2"},
            ["2001:db8:aaaa:1::5, 192.0.2.44"],
            "10.0.0.1",
            "2001:db8:aaaa::/48",
        ),
        ({}, [], None, None),
        ({}, [], "testclient", None),
    ],
)
def test_client_network_follows_the_trusted_header_rule(
    env: dict[str, str], forwarded: list[str], peer: str | None, network: str | None
) -> None:
    assert client_network(load_settings(env), forwarded, peer) == network


# --- the place ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "place"),
    [
        ({"x-client-geo-location": "US,Mountain View"}, "US,Mountain View"),
        ({"X-Client-Geo-Location": "  DE,Berlin  "}, "DE,Berlin"),
        ({"x-client-geo-location": "FR,\x1b[2JParis\r\nSet-Cookie: x"}, "FR, [2JParis  Set-Cookie: x"),
        ({"x-client-geo-location": "x" * 10_000}, "x" * MAX_PLACE),
        ({"x-client-geo-location": ""}, None),
        ({"x-client-geo-location": "\t \x00"}, None),
        ({"x-other": "US,Mountain View"}, None),
    ],
)
def test_client_place_is_cleaned_and_capped(headers: dict[str, str], place: str | None) -> None:
    settings = load_settings({"SESSION_CLIENT_GEO_HEADER": "X-Client-Geo-Location"})
    assert client_place(settings, Headers(headers)) == place


def test_no_place_is_believed_without_the_setting() -> None:
    assert client_place(load_settings({}), Headers({"x-client-geo-location": "US,Mountain View"})) is None
