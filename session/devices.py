"""What a session or an event says about where it came from: a device name, a coarse network, a place.

- ``device_name``: a readable name such as "Chrome 156 on Linux", parsed from a User-Agent
  by ``ua-parser`` and its built-in rules (imported on the first call, not at cold start);
- ``coarse_network`` / ``client_network``: the IPv4 /24 or IPv6 /48 around the client
  address that ``credentials.client_address`` chose (the trusted-header rule); the address
  itself is never returned, so it never needs to be stored;
- ``client_place``: the value of the header named by ``SESSION_CLIENT_GEO_HEADER`` (a load
  balancer's ``{client_region},{client_city}``), cleaned and capped.

Every function here takes what a client sent and never raises on it: the worst input gives ``None``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING

from session.config import Settings
from session.credentials import client_address

if TYPE_CHECKING:
    from ua_parser import Parser

# Real User-Agents are about 100 to 300 characters; the parser's time grows with the length (about 6 ms per
# KiB uncached) and its cache keeps up to 2000 strings, so a longer header is cut before it is parsed.
MAX_USER_AGENT = 512
# A name is two families and two versions; a family is the parser's, which may quote the User-Agent.
MAX_DEVICE_NAME = 100
MAX_PLACE = 100
IPV4_PREFIX = 24
IPV6_PREFIX = 48

# C0, DEL and C1: what a terminal or a log viewer could act on (the same set as the HTTP edge removes from a
# User-Agent). Headers arrive as Latin-1, so nothing above U+00FF can be a control character from a header.
_CONTROL_CHARACTERS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], " ")

# ua-parser names some mobile browsers by their platform ("Mobile Safari", "Chrome Mobile iOS"); the OS already
# says that, so the name keeps the browser's own. Only renames: the parsing is the parser's.
_BROWSER_NAMES = {
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari (in an app)",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome (in an app)",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
}
_UNKNOWN = frozenset({"", "Other"})

_parser: Parser | None = None


def clean_text(value: str | None, limit: int) -> str | None:
    """``value`` without control characters, trimmed and cut to ``limit`` characters; ``None`` if nothing is left."""
    if value is None:
        return None
    # Cut first (generously: leading blanks are stripped after), so a huge header costs no more than a short one.
    cleaned = value[: 4 * limit].translate(_CONTROL_CHARACTERS).strip()[:limit].strip()
    return cleaned or None


def _user_agent_parser() -> Parser:
    """The parser with ua-parser's built-in rules for browsers and systems, made on the first login of the instance.

    Not the package's global parser: without a compiled regex engine that one compiles all its
    rules (devices' too) on first use, about three times the cost of compiling, on demand, only
    the browser and system rules a name needs.
    """
    global _parser
    if _parser is None:
        from ua_parser import BasicResolver, Cache, CachingResolver, load_lazy_builtins
        from ua_parser import Parser as UserAgentParser

        browsers, systems, _devices = load_lazy_builtins()
        _parser = UserAgentParser(CachingResolver(BasicResolver((browsers, systems, [])), Cache(2000)))
    return _parser


def _named(family: str | None, major: str | None) -> str | None:
    if family is None or family in _UNKNOWN:
        return None
    return f"{family} {major}" if major else family


def device_name(user_agent: str | None) -> str | None:
    """A readable name for the browser and system of ``user_agent``: "Firefox 146 on Windows".

    Only the browser's major version is kept (the rest changes with every update and
    names nobody's device). A browser the rules do not know gives "Unknown browser on
    Linux", a known one on an unknown system its name alone ("curl 8"); ``None`` when
    neither is known (no header, an empty or unrecognised one), so a page can say it in
    its own words and the raw ``user_agent`` stays beside it. Never raises.
    """
    text = clean_text(user_agent, MAX_USER_AGENT)
    if text is None:
        return None
    from ua_parser import Domain

    try:
        result = _user_agent_parser()(text, Domain.USER_AGENT | Domain.OS)
    except Exception:  # a rule that breaks on some input must not break a login
        return None
    agent = result.user_agent
    browser = _named(_BROWSER_NAMES.get(agent.family, agent.family), agent.major) if agent else None
    system = _named(result.os.family, None) if result.os else None
    if browser is None and system is None:
        return None
    name = f"{browser or 'Unknown browser'} on {system}" if system else str(browser)
    return clean_text(name, MAX_DEVICE_NAME)


def coarse_network(address: str | None) -> str | None:
    """The IPv4 /24 or IPv6 /48 that holds ``address``, as text: "203.0.113.0/24", "2001:db8:1::/48".

    ``address`` is what ``credentials.client_address`` gives: an address, an IPv6 /64
    network, or text that is not an address (a test client's name). An IPv4-mapped IPv6
    address counts as IPv4. ``None`` for anything that is not an address or a network
    at least as narrow as the prefix, so the result is always a network of exactly
    /24 or /48 and never the address itself. Never raises.
    """
    if not address or len(address) > 64:
        return None
    try:
        network = ipaddress.ip_network(address.strip(), strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        if network.prefixlen != 128:
            return None
        network = ipaddress.IPv4Network(network.network_address.ipv4_mapped)
    prefix = IPV4_PREFIX if network.version == 4 else IPV6_PREFIX
    if network.prefixlen < prefix:
        return None
    return str(network.supernet(new_prefix=prefix))


def client_network(settings: Settings, forwarded: list[str], peer: str | None) -> str | None:
    """The coarse network of the request's client: ``coarse_network`` of ``credentials.client_address``.

    ``forwarded`` and ``peer`` are as ``client_address`` takes them (the values of
    ``SESSION_CLIENT_IP_HEADER``, the connection's peer), so the network is judged by
    the same trusted-header rule as the per-address login limit.
    """
    return coarse_network(client_address(settings, forwarded, peer))


def client_place(settings: Settings, headers: Mapping[str, str]) -> str | None:
    """The place the header ``SESSION_CLIENT_GEO_HEADER`` names, cleaned and capped at ``MAX_PLACE`` characters.

    ``None`` when the setting is unset (no header is believed then) or the header is
    missing or empty. Set the variable only behind a proxy that writes the header
    itself, replacing what a client sent (a Cloud Load Balancer's custom request header
    such as ``X-Client-Geo-Location: {client_region},{client_city}``): a client can
    send any header. ``headers`` is the framework's case-insensitive mapping.
    """
    if settings.client_geo_header is None:
        return None
    return clean_text(headers.get(settings.client_geo_header), MAX_PLACE)
