"""The admin CLI: ``python -m session …``, with the service's own settings and store.

    python -m session --version
    python -m session check-config
    python -m session users create NAME [--permission P …] [--password-stdin]
    python -m session users set-permissions NAME P …
    python -m session users disable NAME | users enable NAME
    python -m session users list [--limit N] [--page-token T]
    python -m session users set-password NAME [--password-stdin]
    python -m session users delete NAME
    python -m session sessions list NAME [--limit N] [--page-token T]
    python -m session sessions revoke-all NAME
    python -m session sessions revoke-everyone --yes [--batch-size N] [--resume-after NAME]
    python -m session audit [--fix] [--page-size N]

Every command first says on stderr which project, database and emulator it talks
to, and where its security events go. Exit status 0 on success; otherwise 1 (or 2
for bad usage or settings) with one line on stderr, never a traceback. Whatever it
prints from the store is escaped (a user agent cannot rewrite the terminal).

Every command that reaches the store writes exactly one audit line (``_audit``):
a structured log line whose ``event`` names what happened (``user_disabled``,
``sessions_revoked_all``, …, or ``admin_command_failed``) and which carries the
``command`` and its ``target``, never a password. The lines never go to the
terminal: against a real project they go to Cloud Logging (log ``session-admin``),
next to the functions' own, so an audit finds admin actions where it finds the
rest; against an emulator, which has no Cloud Logging, they are appended as the
same JSON lines to a file (``--log-file``, default
``$XDG_STATE_HOME/session-service/admin.jsonl``). Only the ``session.admin``
logger reaches that log, so a service event raised inside a command (a user
registered) cannot add a second line. ``check-config``, ``--version`` and usage
errors (exit status 2) touch no data and write none.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from pydantic import SecretBytes, SecretStr, ValidationError

from session import errors, logs, security_log
from session.commands import parser, run
from session.config import ConfigError, Settings, load_settings
from session.models import (
    is_valid_username,
    normalise_username,
)
from session.runtime import store_failure
from session.store import StoreCorrupt, StoreError

CLOUD_LOG_NAME = "session-admin"
# The one logger whose records reach the admin's audit log.
AUDIT_LOGGER = security_log.AUDIT_LOGGER
# Commands that read a password before connecting.
_PASSWORD_COMMANDS = {("users", "create"), ("users", "set-password")}


class CliError(Exception):
    """A failure to report as one line (``error: …``) with exit status ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- what the CLI prints ----------------------------------------------------------------------------


def _out(text: str) -> None:
    """Print ``text`` on stdout, every control character escaped (stored data is untrusted)."""
    print("\n".join(logs.printable(line) for line in text.split("\n")))


def _err(text: str) -> None:
    """Print ``text`` on stderr, line by line, every control character escaped."""
    print("\n".join(logs.printable(line) for line in text.split("\n")), file=sys.stderr)


def _alias_names(field_name: str, model: type[Settings] = Settings) -> tuple[str, ...]:
    """The environment variables that set ``field_name``, first the documented one."""
    alias = model.model_fields[field_name].validation_alias
    if isinstance(alias, str):
        return (alias,)
    return tuple(choice for choice in getattr(alias, "choices", ()) if isinstance(choice, str))


def _is_secret(settings: Settings, name: str) -> bool:
    """A field whose value must never be printed: a ``SecretStr``/``SecretBytes``, or one declared ``repr=False``."""
    info = type(settings).model_fields[name]
    return not info.repr or isinstance(getattr(settings, name), SecretStr | SecretBytes)


def _shown(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "(empty)"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def describe(settings: Settings, environ: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    """(variable, effective value, where it came from) for every setting; secrets shown as ``(hidden)``.

    Where it came from is ``environment`` or ``default``. Whether a value is
    hidden depends on the field's type and declaration, never on its name or
    value, so a secret added later is hidden without touching this function.
    """
    for name in type(settings).model_fields:
        variables = _alias_names(name, type(settings)) or (name,)
        given = next((v for v in variables if v in environ), None)
        value = "(hidden)" if _is_secret(settings, name) else _shown(getattr(settings, name))
        yield given or variables[0], value, "environment" if given else "default"


def _target(settings: Settings, environ: Mapping[str, str]) -> str:
    """The one line that says what this command talks to."""
    project = settings.project
    if not any(v in environ for v in _alias_names("project")):
        project += " (default: GOOGLE_CLOUD_PROJECT is not set)"
    where = f"emulator {settings.emulator_host}" if settings.emulator_host else "Google Cloud (no emulator)"
    return f"session: project {project}, database {settings.database}, {where}"


# --- the structured log ------------------------------------------------------------------------------


def _default_log_file(environ: Mapping[str, str]) -> Path:
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "session-service" / "admin.jsonl"


def _report_log_error(record: logging.LogRecord) -> None:
    """A failed write of a security event: one warning line, not logging's traceback."""
    exc = sys.exc_info()[1]
    _err(f"warning: could not log the {record.getMessage()!r} event: {type(exc).__name__}: {exc}")


def _log_to_file(settings: Settings, path: Path) -> Callable[[], None]:
    """Send the ``session`` loggers' records to ``path`` as JSON lines; returns a closer."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream: IO[str] = open(path, "a", encoding="utf-8")  # closed by the returned closer
    except OSError as exc:
        raise CliError(f"cannot open the log file {path}: {exc.strerror}") from None
    handler = logs.make_handler(settings.model_copy(update={"log_format": "json"}), stream)
    _install(handler)
    return stream.close


def _log_to_cloud(settings: Settings) -> Callable[[], None]:
    """Send the ``session`` loggers' records to Cloud Logging (log ``session-admin``), synchronously."""
    from google.cloud.logging import Client
    from google.cloud.logging.handlers import CloudLoggingHandler
    from google.cloud.logging.handlers.transports import SyncTransport

    client = Client(project=settings.project)  # type: ignore[no-untyped-call]  # raises DefaultCredentialsError without credentials
    _install(CloudLoggingHandler(client, name=CLOUD_LOG_NAME, transport=SyncTransport))
    return client.close


def _install(handler: logging.Handler) -> None:
    handler.handleError = _report_log_error  # type: ignore[method-assign]
    handler.addFilter(logging.Filter(AUDIT_LOGGER))  # the audit line alone: one per command
    logs.install(handler, logging.INFO)


# --- the commands --------------------------------------------------------------------------------------


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password: pipe it in and pass --password-stdin", status=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)  # never echo a password
        try:
            first = getpass.getpass("Password: ")
            again = getpass.getpass("Repeat password: ")
        except (EOFError, getpass.GetPassWarning):
            raise CliError("no password given") from None
    if again != first:
        raise CliError("the passwords differ")
    return first


def _command_name(args: argparse.Namespace) -> str:
    return f"{args.group} {args.action}" if args.action else args.group


def _audit_target(args: argparse.Namespace) -> str:
    """What a command acts on: the username it names (as stored: lower case), or ``*`` for every user.

    A name that is no username (the command failed on it) is named as given.
    """
    name = getattr(args, "name", None)
    if not isinstance(name, str):
        return "*"
    return normalise_username(name) if is_valid_username(name) else name


def _audit(args: argparse.Namespace, event: str, level: int, fields: Mapping[str, object]) -> None:
    """The one audit line of a command: what happened, the command, its target; never a password."""
    security_log.audit(event, level, command=_command_name(args), target=_audit_target(args), by="admin", **fields)


def _check_config(settings: Settings, environ: Mapping[str, str]) -> str:
    rows = list(describe(settings, environ))
    width = max(len(variable) for variable, _, _ in rows) + 2
    values = max(len(value) for _, value, _ in rows) + 2
    lines = [f"{'VARIABLE':<{width}}{'VALUE':<{values}}SOURCE"]
    lines += [f"{variable:<{width}}{value:<{values}}{source}" for variable, value, source in rows]
    return "\n".join([*lines, "configuration OK"])


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _translate(exc: Exception, settings: Settings) -> CliError:
    """The one line to print for a failure of a command (store, credentials, input, anything)."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, errors.InvalidRequest):
        return CliError(f"invalid input: {exc.detail}")
    if isinstance(exc, errors.SessionError):
        return CliError(exc.detail)
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return CliError(f"invalid {'.'.join(map(str, first['loc'])) or 'value'}: {first['msg']}")
    if isinstance(exc, StoreError):
        # Classified (and logged) as the service does it, worded for an admin with the cause.
        problem = store_failure(settings, exc)
        if isinstance(problem, errors.ServiceUnavailable):
            where = f"the Firestore emulator at {settings.emulator_host}" if settings.emulator_host else "Firestore"
            cause = exc.__cause__ or exc
            return CliError(f"{where} is unavailable: {type(cause).__name__}: {_one_line(cause)}")
        if isinstance(exc, StoreCorrupt):
            return CliError(f"a stored document does not match its model: {_one_line(exc)}")
        return CliError(f"Firestore refused the change: {_one_line(exc)}")
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, auth_exceptions.DefaultCredentialsError):
        return CliError(
            f"no Google credentials to reach project {settings.project}: set FIRESTORE_EMULATOR_HOST=host:port"
            " for an emulator, or GOOGLE_CLOUD_PROJECT and run `gcloud auth application-default login`"
        )
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return CliError(f"Google credentials failed: {_one_line(exc)}")
    return CliError(f"unexpected {type(exc).__name__}: {_one_line(exc)}")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        _err(f"error: {exc}")
        return 2
    close: Callable[[], None] | None = None
    try:
        if args.group == "check-config":
            if not args.quiet:
                _err(_target(settings, env))
                _out(_check_config(settings, env))
            return 0
        if (args.group, args.action) == ("sessions", "revoke-everyone") and not args.yes:
            raise CliError("sessions revoke-everyone ends every session of every user: pass --yes to do it", status=2)
        # Before connecting to anything: a missing password is the first thing to say.
        password = _read_password(args.password_stdin) if (args.group, args.action) in _PASSWORD_COMMANDS else None
        _err(_target(settings, env))
        if args.log_file is None and not settings.emulator_host:
            _err(f"session: security events go to Cloud Logging, log {CLOUD_LOG_NAME}")
            close = _log_to_cloud(settings)
        else:
            path = args.log_file or _default_log_file(env)
            _err(f"session: security events go to {path}")
            close = _log_to_file(settings, path)
        try:
            done = asyncio.run(run(args, settings, password))
        except KeyboardInterrupt:
            _audit(args, "admin_command_failed", logging.WARNING, {"error": "interrupted"})
            raise
        except Exception as exc:
            failure = _translate(exc, settings)
            _audit(args, "admin_command_failed", logging.WARNING, {"error": failure.message})
            raise failure from None
        _audit(args, done.event, done.level, done.fields)
        _out(done.text)
        return done.status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI's last line of defence: one line, never a traceback
        failure = _translate(exc, settings)
        _err(f"error: {failure.message}")
        return failure.status
    finally:
        if close is not None:
            try:
                close()
            except Exception as exc:  # closing a log must not turn a success into a traceback
                _err(f"warning: closing the log failed: {_one_line(exc)}")
