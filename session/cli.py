"""The admin CLI: ``python -m session …``, with the service's own settings and store.

    python -m session check-config
    python -m session users create NAME [--permission P …] [--password-stdin]
    python -m session users set-permissions NAME P …
    python -m session users disable NAME | users enable NAME
    python -m session sessions list NAME
    python -m session sessions revoke-all NAME

Exit status 0 on success; otherwise 1 (or 2 for bad usage) with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence

from pydantic import TypeAdapter, ValidationError

from session import errors
from session.admin import AdminService
from session.config import ConfigError, Settings, load_settings
from session.models import Permission, RegisterRequest
from session.service import SessionService
from session.store import FirestoreStore, StoreUnavailable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m session", description="Administer the session service.")
    sub = parser.add_subparsers(dest="group", required=True)
    sub.add_parser("check-config", help="validate the settings from the environment and print them")

    users = sub.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    create = users.add_parser("create", help="create a user")
    create.add_argument("name")
    create.add_argument("--permission", action="append", default=None, metavar="P")
    create.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    setp = users.add_parser("set-permissions", help="replace a user's permissions")
    setp.add_argument("name")
    setp.add_argument("permissions", nargs="*", metavar="P")
    for action in ("disable", "enable"):
        users.add_parser(action, help=f"{action} a user").add_argument("name")

    sessions = sub.add_parser("sessions", help="inspect and revoke sessions").add_subparsers(
        dest="action", required=True
    )
    sessions.add_parser("list", help="a user's live sessions (never tokens)").add_argument("name")
    sessions.add_parser("revoke-all", help="revoke every session of a user").add_argument("name")
    return parser


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise errors.BadRequest("the passwords differ")
    return first


def _permissions(values: Sequence[str]) -> list[str]:
    adapter = TypeAdapter(Permission)
    return [adapter.validate_python(v) for v in values]


async def _run(args: argparse.Namespace, settings: Settings) -> str:
    service = SessionService(settings, FirestoreStore(settings))
    try:
        if args.group == "users" and args.action == "create":
            password = _read_password(args.password_stdin)
            perms = _permissions(args.permission) if args.permission is not None else list(settings.default_permissions)
            req = RegisterRequest(username=args.name, password=password)
            user = await service.register(req, permissions=perms)
            return f"created {user.username} ({user.user_id}) with permissions {','.join(user.permissions) or '-'}"
        if args.group == "users" and args.action == "set-permissions":
            record = await AdminService(service).update(args.name, {"permissions": _permissions(args.permissions)})
            return f"{record.username}: permissions {','.join(record.permissions) or '-'}"
        if args.group == "users" and args.action in ("disable", "enable"):
            revoked = await AdminService(service).set_disabled(args.name, args.action == "disable")
            suffix = f", {revoked} session(s) revoked" if args.action == "disable" else ""
            return f"{args.name.lower()}: {args.action}d{suffix}"
        if args.group == "sessions" and args.action == "list":
            rows = await AdminService(service).sessions(args.name)
            lines = [f"{'ID':<26}{'CREATED':<29}{'LAST SEEN':<29}{'EXPIRES':<29}USER AGENT"]
            for s in rows:
                data = s.model_dump(mode="json")
                times = "".join(f"{data[k]:<29}" for k in ("created_at", "last_seen_at", "expires_at"))
                lines.append(f"{s.id:<26}{times}{s.user_agent or '-'}")
            return "\n".join(lines)
        if args.group == "sessions" and args.action == "revoke-all":
            revoked = await AdminService(service).revoke_all(args.name)
            return f"{args.name.lower()}: {revoked} session(s) revoked"
        raise errors.BadRequest("unknown command")
    finally:
        await service.store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.group == "check-config":
        print(f"configuration OK (project {settings.project}, emulator {settings.emulator_host or 'none'})")
        return 0
    try:
        print(asyncio.run(_run(args, settings)))
    except errors.InvalidRequest as exc:
        print(f"error: invalid input: {exc.detail}", file=sys.stderr)
        return 1
    except errors.SessionError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: invalid {'.'.join(map(str, first['loc'])) or 'value'}: {first['msg']}", file=sys.stderr)
        return 1
    except StoreUnavailable:
        print("error: Firestore is unavailable", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
