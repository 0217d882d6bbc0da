"""Operations for administrators (the CLI): users and their sessions, by username.

They reuse the rules of ``session.service`` (the same liveness rule, the same
epoch bump that ends sessions, the same retry around a precondition write) and
add none of their own. Every command is strong: it reads and writes Firestore.
They log nothing themselves: the CLI writes one audit line per command, with
what these return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from session import errors, liveness, pages, plan, tokens
from session.events import EventType
from session.models import NewPassword, SessionOut, UserChange, UserRecord, normalise_username
from session.plan import Doc, Plan
from session.retry import CONFLICT_TRIES, TRIES, retrying
from session.service import DEFAULT_PAGE_SIZE, SessionService, session_out
from session.store import AccountView, Versioned

# Documents per page (and so per commit) of revoke-everyone, unless told otherwise: within Firestore's 500
# writes per commit, small enough that one commit stays quick.
SWEEP_PAGE = 300
MAX_SWEEP_PAGE = 500


@dataclass(frozen=True, slots=True)
class UserDeleted:
    """What ``AdminService.delete_user`` removed."""

    user_id: str | None  # None: the user document was already gone (a re-run after an interruption)
    sessions: int
    documents: int  # in the user document's subcollections, at any depth


@dataclass(frozen=True, slots=True)
class EveryoneRevoked:
    """What ``AdminService.revoke_everyone`` did."""

    users: int  # users whose auth_epoch was bumped
    scanned: int  # session documents read
    deleted: int  # session documents deleted (every one no longer live)


class AdminService:
    """What the admin CLI can do, over the same store and rules as the session service."""

    def __init__(self, service: SessionService) -> None:
        self.service = service
        self.store = service.store

    async def user(self, username: str) -> Versioned[UserRecord]:
        """The user named ``username``; raises ``NotFound``."""
        user = await self.store.read_user(normalise_username(username))
        if user is None:
            raise errors.NotFound(f"no user {normalise_username(username)!r}")
        return user

    async def update(
        self,
        username: str,
        changes: UserChange,
        *,
        end_sessions: bool = False,
        record: EventType | None = None,
        detail: Mapping[str, str | int | bool | None] | None = None,
    ) -> UserRecord:
        """Apply ``changes`` to a user (retried on races); raises ``NotFound``.

        ``end_sessions`` (a change of credentials) also bumps ``auth_epoch`` and resets the account's
        ledger in the same commit, under the ledger's precondition: every session and trusted device,
        including one being committed right now, is void from then on. Other changes carry a
        precondition on the user as read. ``record``: the security event the change writes in the
        same commit (which also tells a try that landed, its answer lost, from one that did not).
        """
        name = normalise_username(username)

        async def read() -> AccountView:
            return await self.store.read_account(name)

        async def write(view: AccountView) -> UserRecord:
            user = view.user
            if user is None:
                raise errors.NotFound(f"no user {name!r}")
            fields = changes.model_dump(exclude_unset=True)
            try:
                if not end_sessions:
                    change = UserChange(**fields, updated_at=self.service.clock())
                    if record is None:
                        return (await self.store.update_user(user, change)).record
                    edit = Plan((plan.update(Doc.user(name), change, user.update_time),))
                else:
                    epoch = user.record.auth_epoch + 1
                    change = UserChange(**fields, auth_epoch=epoch, updated_at=self.service.clock())
                    reset = self.service.opener.reset_ledger(user.record, view.ledger, None, None)
                    edit = Plan((plan.update(Doc.user(name), change), *reset))
                if record is None:
                    await self.store.commit(edit)
                else:
                    activity = self.service.activity
                    await activity.commit(edit, activity.event(user.record, record, detail=detail))
                return user.record.model_copy(update=change.model_dump(exclude_unset=True))
            finally:  # this instance's cached sessions of the user must not outlive the change
                self.service.forget_user(user.record.user_id)

        return await retrying(
            await read(),
            write,
            read,
            lambda: errors.VersionConflict("the user kept changing; try again"),
            tries=CONFLICT_TRIES if end_sessions else TRIES,  # a ledger reset takes turns with the user's logins
        )

    async def set_disabled(self, username: str, disabled: bool) -> int:
        """Disable (ending every session) or enable a user; returns sessions revoked."""
        return (await self.set_disabled_record(username, disabled))[1]

    async def set_disabled_record(self, username: str, disabled: bool) -> tuple[UserRecord, int]:
        """``set_disabled``, also returning the user as written."""
        kind: EventType = "account_disabled" if disabled else "account_enabled"
        record = await self.update(username, UserChange(disabled=disabled), end_sessions=disabled, record=kind)
        revoked = await self.store.delete_user_sessions(record.user_id) if disabled else 0
        return record, revoked

    async def sessions(
        self, username: str, *, limit: int | None = None, page_token: str | None = None
    ) -> tuple[UserRecord, list[SessionOut], str | None]:
        """The user, their live sessions newest first (never tokens), and the next page's token.

        Without ``limit``, every live session and no token. Raises ``NotFound``, and
        ``InvalidRequest`` for a ``page_token`` that is not one of a sessions listing.
        """
        after = pages.sessions_position(page_token, "`sessions list`")
        user = (await self.user(username)).record
        if limit is None and after is None:
            return user, [session_out(s, current=False) for _, s in await self.service.live_sessions(user)], None
        found, next_token = await self.service.live_sessions_page(user, limit=limit or DEFAULT_PAGE_SIZE, after=after)
        return user, [session_out(s, current=False) for _, s in found], next_token

    async def revoke_all_record(self, username: str) -> tuple[UserRecord, int]:
        """End every session of a user, any being opened right now too; returns the user and how many were deleted.

        The documents go first; the epoch bump after them is what voids a session committed meanwhile.
        """
        user = await self.user(username)
        revoked = await self.store.delete_user_sessions(user.record.user_id, up_to_epoch=user.record.auth_epoch)
        record = await self.update(username, UserChange(), end_sessions=True, record="sessions_revoked_by_admin")
        return record, revoked

    # --- issue 14: the admin's missing tools -------------------------------------------------------------

    async def list_users(self, limit: int, page_token: str | None = None) -> tuple[list[UserRecord], str | None]:
        """Up to ``limit`` users in username order, and the next page's token (``None`` on the last page).

        Reads ``limit + 1`` documents, to know whether another page follows. Raises
        ``InvalidRequest`` for a ``page_token`` that is not one of this listing.
        """
        after = pages.users_position(page_token, "`users list`")
        found = await self.store.list_users(limit + 1, after)
        if len(found) <= limit:
            return found, None
        return found[:limit], pages.encode_users(found[limit - 1].username)

    async def set_password(self, username: str, password: str) -> tuple[UserRecord, int]:
        """Give a user a new password and end every session they have; returns the user and sessions deleted.

        The new hash and the bumped ``auth_epoch`` are one precondition write (retried on
        races), so a login that verified the old password before it cannot keep a session:
        its commit fails the precondition, or its re-read sees the new epoch. The void
        documents are deleted afterwards; a session opened with the new password is kept.
        Raises ``InvalidRequest`` for a password the register endpoint would refuse, ``NotFound``.
        """
        try:
            TypeAdapter(NewPassword).validate_python(password)
        except ValidationError as exc:
            raise errors.InvalidRequest([{"loc": ["password"], "msg": exc.errors()[0]["msg"]}]) from None
        new_hash = await self.service.passwords.hash_async(password)
        change = UserChange(password_hash=new_hash)
        record = await self.update(username, change, end_sessions=True, record="password_set_by_admin")
        revoked = await self.store.delete_user_sessions(record.user_id, up_to_epoch=record.auth_epoch - 1)
        return record, revoked

    async def delete_user(self, username: str) -> UserDeleted:
        """Delete a user and everything stored about them: sessions, subcollections, failed-login counter.

        The user document goes first, under a precondition (retried on races): from that
        moment no session of the user is live (a session needs its user document, with the
        same ``user_id``), and a login racing the delete fails its own precondition on the
        user or its re-read, and removes what it wrote. Then every document below the user
        document, the user's sessions and the counter are deleted. Safe to run again after
        an interruption: with the user document gone, it still removes what was left (the
        sessions by username). Raises ``NotFound`` when there was nothing at all to delete.
        """
        name = normalise_username(username)

        async def remove(current: Versioned[UserRecord] | None) -> str | None:
            if current is None:
                return None
            await self.store.delete_user(current)
            return current.record.user_id

        async def read() -> Versioned[UserRecord] | None:
            return await self.store.read_user(name)

        user_id = await retrying(
            await read(), remove, read, lambda: errors.VersionConflict("the user kept changing; try again")
        )
        if user_id is not None:
            self.service.forget_user(user_id)
        documents = await self.store.delete_user_descendants(name)
        if user_id is not None:
            sessions = await self.store.delete_user_sessions(user_id)
        else:  # no user document holds the name now, so every session naming it is dead: a leftover
            sessions = await self.store.delete_username_sessions(name)
        # Last: a login racing the delete counts its guess on it first. One made later is a guess at a name
        # nobody holds, as anyone can make; its counter expires by TTL.
        await self.store.delete_attempts(tokens.counter_key(name))
        if user_id is None and not documents and not sessions:
            raise errors.NotFound(f"no user {name!r}")
        return UserDeleted(user_id, sessions, documents)

    async def revoke_everyone(
        self,
        *,
        page_size: int = SWEEP_PAGE,
        resume_after: str | None = None,
        progress: Callable[[str], None] = lambda _: None,
    ) -> EveryoneRevoked:
        """End every session of every user (a suspected breach), in pages of ``page_size`` documents.

        1. Every user, in username order (from after ``resume_after``, if given), gets
           ``auth_epoch`` + 1: a server-side increment, one commit per page, no
           precondition. From that write on, each of the user's sessions is void, and a
           login that read the user before it fails its precondition or its re-read (401).
        2. Every session document, in key order, whose session is no longer live (by the
           service's own rule, against its user as stored now) is deleted, one commit per page.

        ``progress`` gets one line per page. Each step is safe to repeat: run again, it
        bumps every epoch again (so sessions opened since the first run began end too:
        their users log in once more) and deletes only dead documents, never a session
        opened after the bump. ``resume_after`` continues an interrupted step 1 after
        the last user a progress line named, sparing the users already done.
        """
        users = 0
        after = resume_after
        activity = self.service.activity
        while True:
            found = await self.store.list_users(page_size, after)
            if not found:
                break
            names = [u.username for u in found]
            ended = [activity.event(u, "sessions_revoked_by_admin", detail={"scope": "everyone"}) for u in found]
            bumped = await self.store.bump_epochs(names, self.service.clock(), ended)
            users += bumped
            if bumped == len(names):  # else some were deleted meanwhile: `events publish-pending` sends the rest
                await activity.publish(ended)
            after = names[-1]
            progress(f"users: {users} ended so far (last: {after})")
            if len(names) < page_size:
                break
        scanned = deleted = 0
        key: str | None = None
        while True:
            page = await self.store.scan_sessions(page_size, key)
            if not page:
                break
            now = self.service.clock()
            owners = await self.store.read_users(sorted({s.username for _, s in page}))
            dead = [k for k, s in page if not liveness.is_live(s, owners.get(s.username), now)]
            deleted += await self.store.delete_sessions(dead)
            scanned += len(page)
            key = page[-1][0]
            progress(f"sessions: {scanned} scanned, {deleted} deleted")
            if len(page) < page_size:
                break
        return EveryoneRevoked(users, scanned, deleted)
