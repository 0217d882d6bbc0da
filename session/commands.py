"""The admin CLI's commands: one function each, and the table that names them.

Each takes the parsed arguments with the runtime it runs on and returns an ``Outcome``: what to
print, and the one audit line the CLI writes for it. ``session.cli`` parses, reads passwords,
translates errors and writes the audit line; nothing here prints or logs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from session import __version__, errors
from session.activity import MAX_PENDING_PAGE, PENDING_PAGE
from session.admin import MAX_SWEEP_PAGE, SWEEP_PAGE
from session.audit import AUDIT_PAGE, COST, MAX_AUDIT_PAGE, Audit
from session.audit_store import AuditStore
from session.config import Settings
from session.listing import MAX_PAGE_SIZE
from session.models import Permission, RegisterRequest, SessionOut, UserChange, UserRecord, normalise_username, utc_text
from session.runtime import Runtime, build
from session.trusted import TrustedDevice


@dataclass(frozen=True, slots=True)
class Outcome:
    """A command's result: what to print, and the audit line's event name, level and fields."""

    text: str
    event: str
    fields: dict[str, object] = field(default_factory=dict)
    level: int = logging.WARNING
    status: int = 0  # the exit status of a command that ran (audit: 1 when something needs attention)


@dataclass(frozen=True, slots=True)
class Invocation:
    """One command as asked: its arguments, the settings, the password read for it, and the runtime."""

    args: argparse.Namespace
    settings: Settings
    password: str | None
    runtime: Runtime


Command = Callable[[Invocation], Awaitable[Outcome]]
USERS_PAGE = 50
MAX_USERS_PAGE = 1000


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def permissions(values: Sequence[str]) -> list[str]:
    adapter = TypeAdapter(Permission)
    return [adapter.validate_python(v) for v in values]


def _sessions_table(rows: Sequence[SessionOut]) -> list[str]:
    lines = [f"{'ID':<26}{'CREATED':<29}{'LAST SEEN':<29}{'EXPIRES':<29}{'DEVICE':<34}{'NETWORK':<22}USER AGENT"]
    for s in rows:
        data = s.model_dump(mode="json")
        times = "".join(f"{data[k]:<29}" for k in ("created_at", "last_seen_at", "expires_at"))
        where = f"{(s.device or '-')[:32]:<34}{s.network or '-':<22}"
        lines.append(f"{s.id:<26}{times}{where}{s.user_agent or '-'}")
    return lines


def _devices_table(rows: Sequence[TrustedDevice]) -> list[str]:
    lines = [f"{'ID':<26}{'CREATED':<29}{'LAST USED':<29}DEVICE"]
    for d in rows:
        lines.append(
            f"{d.id:<26}{utc_text(d.record.created_at):<29}{utc_text(d.last_used_at):<29}{d.record.device or '-'}"
        )
    return lines


def _users_table(rows: Sequence[UserRecord]) -> list[str]:
    lines = [f"{'USERNAME':<66}{'USER ID':<34}{'STATUS':<10}{'CREATED':<29}PERMISSIONS"]
    for u in rows:
        created = utc_text(u.created_at)
        status = "disabled" if u.disabled else "enabled"
        lines.append(f"{u.username:<66}{u.user_id:<34}{status:<10}{created:<29}{','.join(u.permissions) or '-'}")
    return lines


def _next_page(token: str | None) -> list[str]:
    return [f"next page: --page-token {token}"] if token else []


async def users_create(call: Invocation) -> Outcome:
    args, settings = call.args, call.settings
    assert call.password is not None  # read by main() before connecting
    perms = permissions(args.permission) if args.permission is not None else list(settings.default_permissions)
    req = RegisterRequest(username=args.name, password=call.password)
    user = await call.runtime.service.register(req, permissions=perms)
    return Outcome(
        f"created {user.username} ({user.user_id}) with permissions {','.join(user.permissions) or '-'}",
        "user_created",
        {"user_id": user.user_id, "permissions": user.permissions},
    )


async def users_set_permissions(call: Invocation) -> Outcome:
    change = UserChange(permissions=permissions(call.args.permissions))
    record = await call.runtime.admin.update(call.args.name, change)
    return Outcome(
        f"{record.username}: permissions {','.join(record.permissions) or '-'}",
        "user_permissions_set",
        {"user_id": record.user_id, "permissions": record.permissions},
    )


async def users_disable_or_enable(call: Invocation) -> Outcome:
    disable = call.args.action == "disable"
    record, revoked = await call.runtime.admin.set_disabled_record(call.args.name, disable)
    suffix = f", {revoked} session(s) revoked" if disable else ""
    return Outcome(
        f"{record.username}: {call.args.action}d{suffix}",
        "user_disabled" if disable else "user_enabled",
        {"user_id": record.user_id, "sessions_revoked": revoked},
    )


async def users_list(call: Invocation) -> Outcome:
    users, next_token = await call.runtime.admin.list_users(call.args.limit, call.args.page_token)
    return Outcome(
        "\n".join([*_users_table(users), *_next_page(next_token)]),
        "users_listed",
        {"count": len(users), "more": next_token is not None},
        logging.INFO,
    )


async def users_set_password(call: Invocation) -> Outcome:
    assert call.password is not None  # read by main() before connecting
    record, revoked = await call.runtime.admin.set_password(call.args.name, call.password)
    return Outcome(
        f"{record.username}: password set, {revoked} session(s) revoked",
        "user_password_set",
        {"user_id": record.user_id, "sessions_revoked": revoked},
    )


async def users_delete(call: Invocation) -> Outcome:
    deleted = await call.runtime.admin.delete_user(call.args.name)
    gone = "deleted" if deleted.user_id else "was already deleted; removed what was left"
    return Outcome(
        f"{normalise_username(call.args.name)}: {gone}, {deleted.sessions} session(s)"
        f" and {deleted.documents} document(s) below the user",
        "user_deleted",
        {"user_id": deleted.user_id, "sessions_deleted": deleted.sessions, "documents_deleted": deleted.documents},
    )


async def sessions_list(call: Invocation) -> Outcome:
    args = call.args
    owner, rows, next_token = await call.runtime.admin.sessions(args.name, limit=args.limit, page_token=args.page_token)
    return Outcome(
        "\n".join([*_sessions_table(rows), *_next_page(next_token)]),
        "sessions_listed",
        {"user_id": owner.user_id, "count": len(rows), "more": next_token is not None},
        logging.INFO,
    )


async def sessions_revoke_all(call: Invocation) -> Outcome:
    record, revoked = await call.runtime.admin.revoke_all_record(call.args.name)
    return Outcome(
        f"{record.username}: {revoked} session(s) revoked",
        "sessions_revoked_all",
        {"user_id": record.user_id, "count": revoked},
    )


async def sessions_revoke_everyone(call: Invocation) -> Outcome:
    args = call.args
    everyone = await call.runtime.admin.revoke_everyone(
        page_size=args.batch_size,
        resume_after=normalise_username(args.resume_after) if args.resume_after else None,
        progress=lambda line: _err(f"revoke-everyone: {line}"),
    )
    return Outcome(
        f"every session ended: {everyone.users} user(s);"
        f" {everyone.deleted} of {everyone.scanned} session document(s) deleted",
        "sessions_revoked_everyone",
        {
            "users": everyone.users,
            "sessions_scanned": everyone.scanned,
            "sessions_deleted": everyone.deleted,
            "resume_after": args.resume_after,
        },
    )


async def devices_list(call: Invocation) -> Outcome:
    user = (await call.runtime.admin.user(call.args.name)).record
    found = await call.runtime.service.devices.trusted(user)
    return Outcome(
        "\n".join(_devices_table(found)), "devices_listed", {"user_id": user.user_id, "count": len(found)}, logging.INFO
    )


async def devices_revoke(call: Invocation) -> Outcome:
    user = (await call.runtime.admin.user(call.args.name)).record
    await call.runtime.service.devices.end_trust(user, call.args.id)
    return Outcome(
        f"{user.username}: device {call.args.id} is no longer trusted", "device_revoked", {"user_id": user.user_id}
    )


async def events_publish_pending(call: Invocation) -> Outcome:
    activity = call.runtime.service.activity
    if not activity.publisher.enabled:
        raise errors.InvalidRequest(
            [{"loc": ["SESSION_EVENTS_TOPIC"], "msg": "no topic is set: nothing to publish to"}]
        )
    done = await activity.publish_pending(
        page=call.args.page_size, progress=lambda line: _err(f"publish-pending: {line}")
    )
    return Outcome(
        f"{done.published} event(s) published, {done.left} left (run again later for those)",
        "events_published",
        {"found": done.found, "published": done.published, "left": done.left},
        logging.INFO,
        status=1 if done.left else 0,
    )


async def audit(call: Invocation) -> Outcome:
    args, runtime = call.args, call.runtime
    report = await Audit(
        AuditStore(runtime.store),
        call.settings,
        runtime.service.clock,
        fix=args.fix,
        page=args.page_size,
        progress=lambda line: _err(f"audit: {line}"),
    ).run()
    return Outcome(
        "\n".join(report.lines()),
        "audit_fixed" if args.fix else "audit_completed",
        report.as_fields(),
        logging.WARNING if args.fix else logging.INFO,
        status=1 if report.unrepaired() else 0,
    )


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (a usage error otherwise)."""

    def parse(value: str) -> int:
        if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {value!r}")
        return int(value)

    return parse


def parser() -> argparse.ArgumentParser:
    """The CLI's arguments: every command of ``COMMANDS``, and ``check-config``."""
    parser = argparse.ArgumentParser(prog="python -m session", description="Administer the session service.")
    parser.add_argument("--version", action="version", version=f"session-service {__version__}")
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="append security events as JSON lines to PATH (default against an emulator:"
        " $XDG_STATE_HOME/session-service/admin.jsonl; against a real project: Cloud Logging)",
    )
    sub = parser.add_subparsers(dest="group", required=True)
    check = sub.add_parser("check-config", help="validate the settings and print each one and where it came from")
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing when the settings are valid")

    _users_commands(sub.add_parser("users", help="manage users").add_subparsers(dest="action", required=True))
    _sessions_commands(
        sub.add_parser("sessions", help="inspect and revoke sessions").add_subparsers(dest="action", required=True)
    )
    _devices_commands(
        sub.add_parser("devices", help="a user's trusted devices").add_subparsers(dest="action", required=True)
    )
    events = sub.add_parser("events", help="security events").add_subparsers(dest="action", required=True)
    pending = events.add_parser(
        "publish-pending",
        help="publish to SESSION_EVENTS_TOPIC every event not yet published; exit 1 when some are left",
        description="Publish, oldest first, every security event still marked published: false (Pub/Sub was down,"
        " or an instance stopped before it published), and mark each one published. Safe to run at any time and"
        " on a schedule: a subscriber may see an event twice (delivery is at least once; deduplicate by id)."
        " Cost per page: one query (a read per event), one Publish call, one commit (a write per event).",
    )
    pending.add_argument(
        "--page-size",
        type=_bounded(1, MAX_PENDING_PAGE),
        default=PENDING_PAGE,
        metavar="N",
        help=f"events per page (default {PENDING_PAGE})",
    )
    _audit_command(sub)
    return parser


def _devices_commands(devices: Any) -> None:
    devices.add_parser("list", help="a user's trusted devices, most recently used first").add_argument("name")
    revoke = devices.add_parser("revoke", help="end the trust of one of a user's devices (its sessions stay)")
    revoke.add_argument("name")
    revoke.add_argument("id", help="the device's id, as `devices list` shows it")


def _users_commands(users: Any) -> None:
    create = users.add_parser("create", help="create a user")
    create.add_argument("name")
    create.add_argument("--permission", action="append", default=None, metavar="P")
    create.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    setp = users.add_parser("set-permissions", help="replace a user's permissions")
    setp.add_argument("name")
    setp.add_argument("permissions", nargs="*", metavar="P")
    for action in ("disable", "enable"):
        users.add_parser(action, help=f"{action} a user").add_argument("name")
    listing = users.add_parser("list", help="users in username order, one page at a time")
    listing.add_argument(
        "--limit", type=_bounded(1, MAX_USERS_PAGE), default=USERS_PAGE, help=f"users per page (default {USERS_PAGE})"
    )
    listing.add_argument("--page-token", default=None, metavar="T", help="the token a previous page printed")
    setpw = users.add_parser("set-password", help="give a user a new password and end every session they have")
    setpw.add_argument("name")
    setpw.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    users.add_parser(
        "delete", help="delete a user, their sessions, their counter and every document below the user"
    ).add_argument("name")


def _sessions_commands(sessions: Any) -> None:
    slist = sessions.add_parser("list", help="a user's live sessions (never tokens)")
    slist.add_argument("name")
    slist.add_argument(
        "--limit", type=_bounded(1, MAX_PAGE_SIZE), default=None, help="one page of this many (default: all of them)"
    )
    slist.add_argument("--page-token", default=None, metavar="T", help="the token a previous page printed")
    sessions.add_parser("revoke-all", help="revoke every session of a user").add_argument("name")
    everyone = sessions.add_parser("revoke-everyone", help="end every session of every user (a suspected breach)")
    everyone.add_argument("--yes", action="store_true", help="really do it")
    everyone.add_argument(
        "--batch-size",
        type=_bounded(1, MAX_SWEEP_PAGE),
        default=SWEEP_PAGE,
        metavar="N",
        help=f"documents per page and per commit (default {SWEEP_PAGE})",
    )
    everyone.add_argument(
        "--resume-after", default=None, metavar="NAME", help="continue an interrupted run after this user"
    )


def _audit_command(sub: Any) -> None:
    audit = sub.add_parser(
        "audit",
        help="find what breaks the service's invariants; exit 1 when something needs attention",
        description="Read every session, user (devices, ledger) and failed-login counter, page by page, and print"
        " one line per kind of finding, with a count and a few ids; progress goes to stderr. " + COST,
    )
    audit.set_defaults(action=None)
    audit.add_argument("--fix", action="store_true", help="delete dead sessions and orphans, drop stale ledger entries")
    audit.add_argument(
        "--page-size",
        type=_bounded(1, MAX_AUDIT_PAGE),
        default=AUDIT_PAGE,
        metavar="N",
        help=f"documents per page (default {AUDIT_PAGE})",
    )


COMMANDS: dict[tuple[str, str | None], Command] = {
    ("users", "create"): users_create,
    ("users", "set-permissions"): users_set_permissions,
    ("users", "disable"): users_disable_or_enable,
    ("users", "enable"): users_disable_or_enable,
    ("users", "list"): users_list,
    ("users", "set-password"): users_set_password,
    ("users", "delete"): users_delete,
    ("sessions", "list"): sessions_list,
    ("sessions", "revoke-all"): sessions_revoke_all,
    ("sessions", "revoke-everyone"): sessions_revoke_everyone,
    ("devices", "list"): devices_list,
    ("devices", "revoke"): devices_revoke,
    ("events", "publish-pending"): events_publish_pending,
    ("audit", None): audit,
}


async def run(args: argparse.Namespace, settings: Settings, password: str | None = None) -> Outcome:
    """Run the command ``args`` names (argparse admits no other) on a runtime of its own, closed afterwards."""
    runtime = build(settings)
    try:
        return await COMMANDS[(args.group, args.action)](Invocation(args, settings, password, runtime))
    finally:
        await runtime.store.close()
