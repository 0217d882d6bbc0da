"""The one settings object: read from the environment once, validated at cold start.

Nothing else in the package reads ``os.environ``; every component receives the
``Settings`` it needs through its constructor.

Every number has bounds that can work (finite, and no larger than what the
rest of the system accepts: a browser keeps a cookie 400 days at most), and
the cross-field rules hold (the touch interval is shorter than the idle
timeout, which is no longer than the lifetime). An invalid setting stops the
start-up with one line naming the variable and what it allows; so does an
unknown ``SESSION_*`` variable that looks like a misspelt one. Other unknown
``SESSION_*`` variables (a desktop's ``SESSION_MANAGER``) get a one-line warning.

deploy.sh reads the variable names from this file's text (``validation_alias``
strings in ``Settings``), without importing it: keep each alias a literal.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from session.clock import DAY
from session.config_messages import error_line, unknown_variable_lines
from session.models import PERMISSION_PATTERN

# OWASP's minimum for argon2id (Password Storage Cheat Sheet): m=19 MiB, t=2, p=1.
ARGON2_MIN_MEMORY_KIB = 19 * 1024
ARGON2_MIN_TIME_COST = 2
# Upper bounds that keep a login from exhausting the instance: each hashing thread (one per CPU) holds
# memory_kib while it works, and time_cost multiplies the CPU time of every login.
ARGON2_MAX_MEMORY_KIB = 256 * 1024
ARGON2_MAX_TIME_COST = 10
# RFC 6265bis caps a cookie's Max-Age at 400 days; a longer session would outlive its cookie.
MAX_TTL_SECONDS = 400 * DAY
MAX_LOGIN_WINDOW_SECONDS = 30 * DAY
# NIST SP 800-63B-4, AAL2: an inactivity timeout of at most 1 hour is recommended (reauthentication at least
# every 24 hours: the default SESSION_TTL_SECONDS).
DEFAULT_IDLE_SECONDS = 3600
DEFAULT_TOUCH_SECONDS = 60
# The staleness a cached session may reach, and the entries an instance may keep (≈ 4 to 6 KiB each).
MAX_CACHE_SECONDS = 3600
MAX_CACHE_SIZE = 1_000_000
# A ledger entry is a 64-character key: a thousand keep the ledger document far below Firestore's 1 MiB.
MAX_SESSIONS_PER_USER = 1000

# How long an account's security events are kept (their TTL): at least a day, since TTL deletion itself lags
# up to a day; at most 400 days, as long as a device may stay trusted (SESSION_DEVICE_COOKIE_DAYS), so the login
# that made any still-trusted device can be shown. More would keep networks and places past any use they have.
DEFAULT_EVENTS_DAYS = 90
MAX_EVENTS_DAYS = 400
# A Pub/Sub topic id (3 to 255 characters, a letter first, not starting with "goog"), or its full name
# projects/PROJECT/topics/TOPIC with a project id (6 to 30 characters, optionally domain-scoped "example.com:p").
TOPIC_ID_PATTERN = r"(?!goog)[A-Za-z][A-Za-z0-9._~+%-]{2,254}"
PROJECT_ID_PATTERN = r"(?:[a-z0-9][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
TOPIC_PATTERN = rf"^(?:projects/{PROJECT_ID_PATTERN}/topics/)?{TOPIC_ID_PATTERN}$"

# Collection ids: no '/', and not Firestore's reserved __…__ form.
COLLECTION_PATTERN = r"^(?!__.*__$)[A-Za-z0-9_-]{1,100}$"
# A Firestore database id (4 to 63 characters, a lower-case letter first), or "(default)".
DATABASE_PATTERN = r"^(?:\(default\)|[a-z][a-z0-9-]{2,61}[a-z0-9])$"

CommaList = tuple[str, ...]
log = logging.getLogger("session.config")


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _check_pattern(pattern: str, value: str, rule: str) -> str:
    if re.fullmatch(pattern, value) is None:
        raise ValueError(rule)
    return value


_ORIGIN_RE = re.compile(r"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.IGNORECASE)


def _origin(value: str) -> str:
    """``scheme://host[:port]`` in lower case; raises ``ValueError`` for anything else (a path, a user, …)."""
    match = _ORIGIN_RE.fullmatch(value)
    if match is None or (match.group(3) is not None and not 0 < int(match.group(3)) < 65536):
        raise ValueError(f"{value!r} is not an origin like https://app.example.com")
    return value.lower()


class ConfigError(Exception):
    """The environment does not describe a valid configuration."""


class Settings(BaseModel):
    """Every tunable of the service; docs/configuration.md is generated from these fields (`make docs`).

    Built from the environment by ``load_settings`` (each field's alias is its
    variable). A plain pydantic model rather than pydantic-settings: the
    variables are flat strings, and the extra import would cost cold start.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    project: str = Field(
        default="demo-session", min_length=1, validation_alias=AliasChoices("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")
    )
    emulator_host: str | None = Field(default=None, validation_alias="FIRESTORE_EMULATOR_HOST")
    # host:port of a Pub/Sub emulator (tests): the events' publisher connects there, without credentials.
    pubsub_emulator_host: str | None = Field(default=None, validation_alias="PUBSUB_EMULATOR_HOST")
    database: str = Field(default="(default)", min_length=1, validation_alias="FIRESTORE_DATABASE")
    port: int = Field(default=8080, ge=1, le=65535, validation_alias="PORT")

    users_collection: str = Field(default="users", validation_alias="SESSION_USERS_COLLECTION")
    sessions_collection: str = Field(default="sessions", validation_alias="SESSION_SESSIONS_COLLECTION")
    attempts_collection: str = Field(default="login_attempts", validation_alias="SESSION_ATTEMPTS_COLLECTION")

    ttl_seconds: float = Field(
        default=DAY, gt=0, le=MAX_TTL_SECONDS, allow_inf_nan=False, validation_alias="SESSION_TTL_SECONDS"
    )
    # Unset: DEFAULT_IDLE_SECONDS, or the lifetime if that is shorter (see _durations).
    idle_seconds: float = Field(
        default=DEFAULT_IDLE_SECONDS,
        gt=0,
        le=MAX_TTL_SECONDS,
        allow_inf_nan=False,
        validation_alias="SESSION_IDLE_SECONDS",
    )
    # Unset: DEFAULT_TOUCH_SECONDS, or half the idle timeout if that is shorter (see _durations).
    touch_seconds: float = Field(
        default=DEFAULT_TOUCH_SECONDS,
        ge=0,
        le=MAX_TTL_SECONDS,
        allow_inf_nan=False,
        validation_alias="SESSION_TOUCH_SECONDS",
    )

    allow_registration: bool = Field(default=True, validation_alias="SESSION_ALLOW_REGISTRATION")
    default_permissions: CommaList = Field(default=("read",), validation_alias="SESSION_DEFAULT_PERMISSIONS")

    cookie_name: str = Field(default="__session", validation_alias="SESSION_COOKIE_NAME")
    cookie_secure: bool = Field(default=True, validation_alias="SESSION_COOKIE_SECURE")
    allowed_origins: CommaList = Field(default=(), validation_alias="SESSION_ALLOWED_ORIGINS")
    # The origin the page at / calls; None: the page's own origin.
    page_api_origin: str | None = Field(default=None, validation_alias="SESSION_PAGE_API_ORIGIN")

    login_max_failures: int = Field(default=5, ge=1, le=1000, validation_alias="SESSION_LOGIN_MAX_FAILURES")
    login_window_seconds: float = Field(
        default=900,
        ge=1,
        le=MAX_LOGIN_WINDOW_SECONDS,
        allow_inf_nan=False,
        validation_alias="SESSION_LOGIN_WINDOW_SECONDS",
    )

    # The device cookie (docs/security.md): how long a browser stays trusted after its last successful login, and
    # the guesses a trusted browser may make per window (unset: SESSION_LOGIN_MAX_FAILURES).
    device_cookie_days: int = Field(default=90, ge=1, le=400, validation_alias="SESSION_DEVICE_COOKIE_DAYS")
    device_max_failures: int = Field(default=5, ge=1, le=1000, validation_alias="SESSION_DEVICE_MAX_FAILURES")
    # The most trusted devices a user may have at once; a login past it ends the least recently used one's trust.
    max_devices_per_user: int = Field(default=10, ge=1, le=100, validation_alias="SESSION_MAX_DEVICES_PER_USER")
    # Failed logins per client address across usernames; 0: off (the default, see docs/security.md for why).
    address_max_failures: int = Field(default=0, ge=0, le=1_000_000, validation_alias="SESSION_ADDRESS_MAX_FAILURES")
    address_window_seconds: float = Field(
        default=900,
        ge=1,
        le=MAX_LOGIN_WINDOW_SECONDS,
        allow_inf_nan=False,
        validation_alias="SESSION_ADDRESS_WINDOW_SECONDS",
    )
    # The header a trusted proxy appends the client address to (X-Forwarded-For), and which entry from the right
    # is the one it appended; unset: the peer address of the connection, and no header is believed.
    client_ip_header: str | None = Field(default=None, validation_alias="SESSION_CLIENT_IP_HEADER")
    client_ip_hops: int = Field(default=1, ge=1, le=10, validation_alias="SESSION_CLIENT_IP_HOPS")
    # The header a trusted proxy writes the client's place into (a load balancer's custom header such as
    # X-Client-Geo-Location: {client_region},{client_city}); unset: no place is recorded, and no header believed.
    client_geo_header: str | None = Field(default=None, validation_alias="SESSION_CLIENT_GEO_HEADER")
    # The most sessions a user may have at once; a login beyond it ends the least recently used one. 0: no cap.
    max_sessions_per_user: int = Field(
        default=20, ge=0, le=MAX_SESSIONS_PER_USER, validation_alias="SESSION_MAX_PER_USER"
    )

    # How recently the password must have been proved (SessionRecord.auth_time) for the sensitive
    # operations (a new email, listing or revoking other sessions). At most a day: older is no step-up.
    reauth_seconds: int = Field(default=600, ge=1, le=DAY, validation_alias="SESSION_REAUTH_SECONDS")

    # The Pub/Sub topic every security event is published to (a topic id in `project`, or projects/P/topics/T);
    # unset: nothing is published and the Pub/Sub client is never imported. Events are kept SESSION_EVENTS_DAYS.
    events_topic: str | None = Field(default=None, validation_alias="SESSION_EVENTS_TOPIC")
    events_days: int = Field(
        default=DEFAULT_EVENTS_DAYS, ge=1, le=MAX_EVENTS_DAYS, validation_alias="SESSION_EVENTS_DAYS"
    )

    firestore_timeout_seconds: float = Field(
        default=5.0, ge=0.5, le=60, allow_inf_nan=False, validation_alias="SESSION_FIRESTORE_TIMEOUT_SECONDS"
    )

    argon2_time_cost: int = Field(
        default=ARGON2_MIN_TIME_COST,
        ge=ARGON2_MIN_TIME_COST,
        le=ARGON2_MAX_TIME_COST,
        validation_alias="SESSION_ARGON2_TIME_COST",
    )
    argon2_memory_kib: int = Field(
        default=ARGON2_MIN_MEMORY_KIB,
        ge=ARGON2_MIN_MEMORY_KIB,
        le=ARGON2_MAX_MEMORY_KIB,
        validation_alias="SESSION_ARGON2_MEMORY_KIB",
    )
    argon2_parallelism: int = Field(default=1, ge=1, le=16, validation_alias="SESSION_ARGON2_PARALLELISM")

    log_level: str = Field(default="INFO", validation_alias="SESSION_LOG_LEVEL")
    # json: one structured line per record, for Cloud Logging (deployed); text: one readable line (make run).
    log_format: str = Field(default="json", pattern=r"^(json|text)$", validation_alias="SESSION_LOG_FORMAT")

    # 0: every session check reads Firestore (strong). N > 0: an instance may accept a session it
    # read within the last N seconds without reading again (see session.cache and docs/security.md).
    cache_seconds: float = Field(
        default=0, ge=0, le=MAX_CACHE_SECONDS, allow_inf_nan=False, validation_alias="SESSION_CACHE_SECONDS"
    )
    cache_size: int = Field(default=10_000, ge=1, le=MAX_CACHE_SIZE, validation_alias="SESSION_CACHE_SIZE")

    # Device Bound Session Credentials (session.dbsc) for cookie sessions: off (the default) or on; and the
    # lifetime of a bound session's short-lived cookie, after which the browser must prove its key again. At
    # most a day: a longer one gives a stolen copy as long as a session cookie. Tests set a few seconds.
    dbsc: Literal["off", "on"] = Field(default="off", validation_alias="SESSION_DBSC")
    dbsc_cookie_seconds: int = Field(default=600, ge=1, le=DAY, validation_alias="SESSION_DBSC_COOKIE_SECONDS")

    @field_validator("default_permissions", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("default_permissions")
    @classmethod
    def _permission_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            _check_pattern(
                PERMISSION_PATTERN, name, f"{name!r} is not a permission name (1 to 64 of A-Z a-z 0-9 : . _ -)"
            )
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_origin(origin) for origin in value)

    @field_validator("page_api_origin")
    @classmethod
    def _page_api_origin(cls, value: str | None) -> str | None:
        return _origin(value) if value else None

    @field_validator("users_collection", "sessions_collection", "attempts_collection")
    @classmethod
    def _collection(cls, value: str) -> str:
        return _check_pattern(
            COLLECTION_PATTERN, value, "must be 1 to 100 of A-Z a-z 0-9 _ -, and not of the form __name__ (reserved)"
        )

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        return _check_pattern(
            DATABASE_PATTERN,
            value,
            "must be (default), or 4 to 63 of a-z 0-9 -, starting with a letter and not ending with '-'",
        )

    @model_validator(mode="after")
    def _durations(self) -> Settings:
        given = self.model_fields_set
        # The defaults follow a shorter lifetime, so that shortening SESSION_TTL_SECONDS alone is enough.
        if "idle_seconds" not in given:
            object.__setattr__(self, "idle_seconds", min(DEFAULT_IDLE_SECONDS, self.ttl_seconds))
        if "touch_seconds" not in given:
            object.__setattr__(self, "touch_seconds", min(DEFAULT_TOUCH_SECONDS, self.idle_seconds / 2))
        if self.idle_seconds > self.ttl_seconds:
            raise ValueError(
                f"SESSION_IDLE_SECONDS: must be at most SESSION_TTL_SECONDS ({self.ttl_seconds:g}), as a session "
                f"ends then anyway; got {self.idle_seconds:g}"
            )
        if self.touch_seconds >= self.idle_seconds:
            raise ValueError(
                f"SESSION_TOUCH_SECONDS: must be less than SESSION_IDLE_SECONDS ({self.idle_seconds:g}), or no "
                f"request could extend a session before it goes idle; got {self.touch_seconds:g}"
            )
        collections = (self.users_collection, self.sessions_collection, self.attempts_collection)
        if len(set(collections)) != len(collections):
            raise ValueError(
                "SESSION_USERS_COLLECTION, SESSION_SESSIONS_COLLECTION, SESSION_ATTEMPTS_COLLECTION: must be "
                f"three different collections; got {', '.join(collections)}"
            )
        return self

    @model_validator(mode="after")
    def _device_limit(self) -> Settings:
        if "device_max_failures" not in self.model_fields_set:  # the default follows the username-wide limit
            object.__setattr__(self, "device_max_failures", self.login_max_failures)
        return self

    @field_validator("client_ip_header", "client_geo_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if not value:
            return None
        return _check_pattern(r"[A-Za-z0-9-]{1,64}", value, "must be a header name, 1 to 64 of A-Z a-z 0-9 -").lower()

    @field_validator("events_topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if not value:
            return None
        return _check_pattern(
            TOPIC_PATTERN,
            value,
            "must be a Pub/Sub topic id (3 to 255 of A-Z a-z 0-9 - _ . ~ + %, a letter first, not starting with "
            "goog), or projects/PROJECT/topics/TOPIC",
        )

    @property
    def events_topic_path(self) -> str | None:
        """The full name of ``SESSION_EVENTS_TOPIC`` (a bare id is in ``project``); ``None`` when unset."""
        if self.events_topic is None or self.events_topic.startswith("projects/"):
            return self.events_topic
        return f"projects/{self.project}/topics/{self.events_topic}"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("cookie_name")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        return _check_pattern(r"[A-Za-z0-9_-]{1,64}", value, "must be 1 to 64 of A-Z a-z 0-9 _ -")


def _variables() -> frozenset[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return frozenset(names)


VARIABLES = _variables()
_FIELDS_BY_VARIABLE = {
    alias: field
    for field in Settings.model_fields.values()
    for alias in ([field.validation_alias] if isinstance(field.validation_alias, str) else [])
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from the environment (or ``environ``).

    Raises ``ConfigError`` with one readable line per invalid variable (the
    variable, what it allows, what it was), and for each unknown ``SESSION_*``
    variable that looks like a misspelt setting (naming the closest one).
    Other unknown ``SESSION_*`` variables are logged as a warning and ignored.
    """
    source = os.environ if environ is None else environ
    lines = unknown_variable_lines(source, VARIABLES, log)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate({name: value for name, value in source.items() if name in VARIABLES})
    except ValidationError as exc:
        lines += [error_line(error, _FIELDS_BY_VARIABLE) for error in exc.errors(include_url=False)]
    if lines or settings is None:
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    return settings
