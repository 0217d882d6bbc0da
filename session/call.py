"""One request on its way through the HTTP edge: its body, its credential, what handlers learn about it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from session import credentials, devices, edge, errors, tokens
from session.context import AuthContext, Origin

if TYPE_CHECKING:
    from session.http import Api

MAX_BODY_BYTES = 16 * 1024
JSON = "application/json"
M = TypeVar("M", bound=BaseModel)
# C0, DEL and C1: what a terminal or a log viewer could act on. Headers arrive as Latin-1, so nothing above U+00FF.
_CONTROL_CHARACTERS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], " ")


@dataclass(slots=True)
class Call:
    """One request on its way through: the parsed route and what handlers learn about it."""

    api: Api
    request: Request
    endpoint: str
    params: tuple[str, ...]
    auth: AuthContext | None = None
    log_fields: dict[str, object] = field(default_factory=dict)
    # The cookie of a session this request extended: re-sent so the browser keeps it as long.
    refreshed_cookie: credentials.Cookie | None = None

    async def body(self, model: type[M]) -> M:
        """Read and validate a JSON body. Raises 415, 413, 400 (invalid_json / invalid_request)."""
        media_type, _, params = (self.request.headers.get("content-type") or "").partition(";")
        if media_type.strip().lower() != JSON:
            raise errors.UnsupportedMediaType(f"send the body as {JSON}")
        charset = params.strip().lower()
        if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
            raise errors.UnsupportedMediaType("the body must be UTF-8")
        data = parse_json(await read_body(self.request))
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = exc.errors(include_url=False, include_input=False, include_context=False)
            raise errors.InvalidRequest([{"loc": list(p["loc"]), "msg": p["msg"]} for p in problems]) from None

    def required_credential(self) -> tuple[str, bool]:
        """The presented token and whether it came from the cookie, CSRF-checked (``edge.presented_credential``)."""
        api, request = self.api, self.request
        # The path from the ASGI scope: request.url would build the whole URL and split it again (15 µs).
        return edge.presented_credential(
            request, path=request.scope["path"], cookie_name=api.settings.cookie_name, allowed=api.origins
        )

    async def authenticate(self) -> AuthContext:
        """Authenticate by Bearer token or cookie, enforcing CSRF for cookie requests that change state."""
        token, via_cookie = self.required_credential()
        presented = edge.presented_binding(self.request, via_cookie)
        self.auth = await self.api.service.authenticate(token, presented=presented)
        self.refreshed_cookie = credentials.refreshed_cookie(
            self.api.settings, token, via_cookie, self.auth.extended_for
        )
        self.log_fields["user_id"] = self.auth.principal.user_id
        self.log_fields["sid"] = tokens.log_id(self.auth.token_hash)
        return self.auth

    def device_cookie(self) -> str | None:
        """The device cookie the request carries (the lockout's trusted device), if any."""
        return self.request.cookies.get(credentials.device_cookie_name(self.api.settings))

    def address(self) -> str | None:
        """The client's address by the trusted-header rule (``credentials.client_address``): the address limit's key."""
        settings, request = self.api.settings, self.request
        header = settings.client_ip_header
        forwarded = request.headers.getlist(header) if header else []
        return credentials.client_address(settings, forwarded, request.client.host if request.client else None)

    def origin(self) -> Origin:
        """Where this request comes from, as a new session and a security event record it (never the address)."""
        agent = self.user_agent()
        settings = self.api.settings
        return Origin(
            user_agent=agent,
            device=devices.device_name(agent),
            network=devices.coarse_network(self.address()),
            place=devices.client_place(settings, self.request.headers),
        )

    def user_agent(self) -> str | None:
        """The User-Agent to store with a new session: control characters removed, at most 512 characters.

        It is shown later (``GET /sessions``, the admin CLI), so a client must
        not be able to store terminal escapes or line breaks in it.
        """
        value = self.request.headers.get("user-agent")
        if value is None:
            return None
        cleaned = value.translate(_CONTROL_CHARACTERS).strip()[:512]
        return cleaned or None


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey()
    for key, value in pairs:
        # A lone surrogate escape ("\ud800") is not text: encoding it raises UnicodeEncodeError, a ValueError.
        if not key.isascii():
            key.encode("utf-8")
        if isinstance(value, str) and not value.isascii():
            value.encode("utf-8")
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> object:
    """The JSON value of a request body. Raises ``InvalidJson``.

    Strict where parsers differ, so that no proxy or WAF in front of us reads
    the body otherwise: UTF-8 only (no BOM), no ``NaN`` or ``Infinity``, and no
    object with a key twice (a last-wins reader and a first-wins one would
    see different usernames).
    """
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_object, parse_constant=_no_constant)
    except _DuplicateKey:
        raise errors.InvalidJson("the body has an object with the same key twice") from None
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise errors.InvalidJson("the body is not valid JSON") from None


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, never reading past ``limit``. Raises ``PayloadTooLarge``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise errors.InvalidRequest([{"loc": ["header", "content-length"], "msg": "not a number"}])
        if int(declared) > limit:
            raise errors.PayloadTooLarge(f"the body must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"the body must be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
