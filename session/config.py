"""The one settings object: read from the environment once, validated at cold start.

Nothing else in the package reads ``os.environ``; every component receives the
``Settings`` it needs through its constructor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# OWASP's minimum for argon2id (Password Storage Cheat Sheet): m=19 MiB, t=2, p=1.
ARGON2_MIN_MEMORY_KIB = 19 * 1024
ARGON2_MIN_TIME_COST = 2

CommaList = tuple[str, ...]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ConfigError(Exception):
    """The environment does not describe a valid configuration."""


class Settings(BaseModel):
    """Every tunable of the service; see the README's configuration table.

    Built from the environment by ``load_settings`` (each field's alias is its
    variable). A plain pydantic model rather than pydantic-settings: the
    variables are flat strings, and the extra import would cost cold start.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    project: str = Field(
        default="demo-session",
        min_length=1,
        validation_alias=AliasChoices("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"),
    )
    emulator_host: str | None = Field(default=None, validation_alias="FIRESTORE_EMULATOR_HOST")
    database: str = Field(default="(default)", min_length=1, validation_alias="FIRESTORE_DATABASE")
    port: int = Field(default=8080, ge=1, le=65535, validation_alias="PORT")

    users_collection: str = Field(
        default="users", pattern=r"^[A-Za-z0-9_-]{1,100}$", validation_alias="SESSION_USERS_COLLECTION"
    )
    sessions_collection: str = Field(
        default="sessions", pattern=r"^[A-Za-z0-9_-]{1,100}$", validation_alias="SESSION_SESSIONS_COLLECTION"
    )
    attempts_collection: str = Field(
        default="login_attempts", pattern=r"^[A-Za-z0-9_-]{1,100}$", validation_alias="SESSION_ATTEMPTS_COLLECTION"
    )

    ttl_seconds: float = Field(default=86400, gt=0, validation_alias="SESSION_TTL_SECONDS")
    idle_seconds: float = Field(default=7200, gt=0, validation_alias="SESSION_IDLE_SECONDS")
    touch_seconds: float = Field(default=60, ge=0, validation_alias="SESSION_TOUCH_SECONDS")

    allow_registration: bool = Field(default=True, validation_alias="SESSION_ALLOW_REGISTRATION")
    default_permissions: CommaList = Field(default=("read",), validation_alias="SESSION_DEFAULT_PERMISSIONS")

    cookie_name: str = Field(default="__session", validation_alias="SESSION_COOKIE_NAME")
    cookie_secure: bool = Field(default=True, validation_alias="SESSION_COOKIE_SECURE")
    allowed_origins: CommaList = Field(default=(), validation_alias="SESSION_ALLOWED_ORIGINS")

    login_max_failures: int = Field(default=5, ge=1, validation_alias="SESSION_LOGIN_MAX_FAILURES")
    login_window_seconds: float = Field(default=900, gt=0, validation_alias="SESSION_LOGIN_WINDOW_SECONDS")

    firestore_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, validation_alias="SESSION_FIRESTORE_TIMEOUT_SECONDS"
    )

    argon2_time_cost: int = Field(
        default=ARGON2_MIN_TIME_COST, ge=ARGON2_MIN_TIME_COST, validation_alias="SESSION_ARGON2_TIME_COST"
    )
    argon2_memory_kib: int = Field(
        default=ARGON2_MIN_MEMORY_KIB, ge=ARGON2_MIN_MEMORY_KIB, validation_alias="SESSION_ARGON2_MEMORY_KIB"
    )
    argon2_parallelism: int = Field(default=1, ge=1, le=16, validation_alias="SESSION_ARGON2_PARALLELISM")

    log_level: str = Field(default="INFO", validation_alias="SESSION_LOG_LEVEL")
    # json: one structured line per record, for Cloud Logging (deployed); text: one readable line (make run).
    log_format: str = Field(default="json", pattern=r"^(json|text)$", validation_alias="SESSION_LOG_FORMAT")

    @field_validator("default_permissions", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("default_permissions")
    @classmethod
    def _permission_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name.replace(":", "").replace("_", "").replace("-", "").replace(".", "").isalnum():
                raise ValueError(f"invalid permission name {name!r}")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return tuple(origin.lower() for origin in value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @model_validator(mode="after")
    def _cookie_name(self) -> Settings:
        if not self.cookie_name or not all(c.isalnum() or c in "_-" for c in self.cookie_name):
            raise ValueError("SESSION_COOKIE_NAME must be letters, digits, '_' or '-'")
        return self


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


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from the environment (or ``environ``).

    Raises ``ConfigError`` with one readable line per invalid variable.
    """
    source = os.environ if environ is None else environ
    try:
        return Settings.model_validate({name: value for name, value in source.items() if name in VARIABLES})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = ".".join(str(part) for part in error["loc"]) or "settings"
            lines.append(f"  {loc}: {error['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
