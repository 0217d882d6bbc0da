"""firestore.indexes.json against the code: the queries it really runs, the TTL fields it writes, firebase-tools.

The emulator needs no index and deletes nothing by TTL, so these checks are what stands between a
missing index or TTL policy and production.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AppFactory, bearer, free_port, login, register
from deploy_support import CI_TOOLS, ROOT, commands, dry_run, flag, load_spec, missing_tool, require_tool
from pydantic import AwareDatetime, BaseModel

from session import cli, events, models
from session.config import Settings
from session.store import DEVICES, LEDGER_COLLECTION, QueryShape
from session.store.base import EVENTS
from session.store.client import Client

SETTINGS_DEFAULTS = Settings.model_construct()
DEFAULT_COLLECTIONS = {
    SETTINGS_DEFAULTS.users_collection,
    SETTINGS_DEFAULTS.sessions_collection,
    SETTINGS_DEFAULTS.attempts_collection,
}
SESSIONS = SETTINGS_DEFAULTS.sessions_collection
# The queries we know of, so that the check cannot pass on an empty recording.
USERS = SETTINGS_DEFAULTS.users_collection
# A user's sessions, newest first, in a total order (the public id breaks ties): GET /sessions and its pages.
LIST_SESSIONS = QueryShape(SESSIONS, ("user_id",), (("created_at", "DESCENDING"), ("public_id", "DESCENDING")))
# Every user's events not yet published, oldest first (`events publish-pending`): a collection-group query.
PENDING_EVENTS = QueryShape(EVENTS, ("published",), (("at", "ASCENDING"),), group=True)
KNOWN_SHAPES = {
    LIST_SESSIONS,
    QueryShape(SESSIONS, ("user_id",)),  # revoke all of a user's sessions
    QueryShape(SESSIONS, ("public_id",)),  # revoke one session by its public id
    QueryShape(SESSIONS, ("username",)),  # users delete, run again after the user document is gone
    QueryShape(USERS, (), (("__name__", "ASCENDING"),)),  # users list; revoke-everyone's pass over the users
    QueryShape(SESSIONS, (), (("__name__", "ASCENDING"),)),  # revoke-everyone's pass over every session
    QueryShape(DEVICES, (), (("__name__", "ASCENDING"),)),  # GET /devices, `devices list`
    QueryShape(EVENTS, (), (("at", "DESCENDING"), ("__name__", "DESCENDING"))),  # GET /security-events
    PENDING_EVENTS,
}
VALIDATOR = ROOT / "scripts" / "validate-firestore-indexes.cjs"
PASSWORD = "correct horse battery"


# --- which index serves a query ------------------------------------------------------------------------


def _override(spec: dict[str, Any], group: str, field: str) -> dict[str, Any] | None:
    for o in spec.get("fieldOverrides", []):
        if o["collectionGroup"] == group and o["fieldPath"] == field:
            return dict(o)
    return None


def _single_field(spec: dict[str, Any], group: str, field: str, order: str | None) -> bool:
    """Does the single-field index of ``field`` exist (automatic, or as its override declares)?"""
    override = _override(spec, group, field)
    if override is None:
        return True  # automatic: ascending, descending and array-contains, collection scope
    return any(
        i.get("queryScope", "COLLECTION") == "COLLECTION" and "order" in i and order in (None, i["order"])
        for i in override["indexes"]
    )


def _composite(index: dict[str, Any], shape: QueryShape) -> bool:
    """Does the composite ``index`` serve ``shape``: its equalities first (any order), then its sort?"""
    scope = "COLLECTION_GROUP" if shape.group else "COLLECTION"
    if index["collectionGroup"] != shape.collection or index["queryScope"] != scope:
        return False
    fields = [f for f in index["fields"] if f["fieldPath"] != "__name__"]
    if any("order" not in f for f in fields):
        return False
    n = len(shape.equalities)
    head, tail = fields[:n], fields[n:]
    return {f["fieldPath"] for f in head} == set(shape.equalities) and [
        (f["fieldPath"], f["order"]) for f in tail
    ] == list(shape.order_by)


def served_by(shape: QueryShape, spec: dict[str, Any]) -> str | None:
    """How Firestore would serve ``shape`` with the indexes of ``spec``; None if it would fail for want of one."""
    eq, order = shape.equalities, shape.order_by
    if len(order) == 2 and order[1][0] == "__name__" and order[1][1] == order[0][1]:
        order = order[:1]  # the document name in the same direction: every index's own tie-break
    if not shape.group:  # automatic single-field indexes are of collection scope only
        if not eq and (not order or order == (("__name__", "ASCENDING"),)):
            return "the built-in document-name index"
        if len(eq) == 1 and not order and _single_field(spec, shape.collection, eq[0], None):
            return f"the automatic single-field index of {eq[0]}"
        if not eq and len(order) == 1 and _single_field(spec, shape.collection, *order[0]):
            return f"the automatic single-field index of {order[0][0]}"
    for index in spec["indexes"]:
        if _composite(index, shape):
            return f"the composite index {[(f['fieldPath'], f.get('order')) for f in index['fields']]}"
    return None


# --- driving every query path of the real service -------------------------------------------------------


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _exercise_every_query(make_client: AppFactory) -> None:
    client = make_client()
    register(client, "alice")
    register(client, "bob")
    tokens = [login(client, "alice") for _ in range(3)]
    me = bearer(tokens[0])

    listed = client.get("/sessions", headers=me)  # list_sessions
    assert listed.status_code == 200, listed.text
    other = next(s["id"] for s in listed.json()["sessions"] if not s["current"])
    assert client.delete(f"/sessions/{other}", headers=me).status_code == 204  # find_session
    assert client.delete("/sessions", headers=me).status_code == 204  # delete_user_sessions, keeping ours
    changed = client.post(
        "/profile/password",
        json={"current_password": PASSWORD, "new_password": "another horse battery"},
        headers=me,
    )  # delete_user_sessions, all
    assert changed.status_code == 200, changed.text
    paged = client.get("/sessions?limit=1", headers=bearer(changed.json()["token"]))  # list_sessions, a page
    assert paged.status_code == 200, paged.text
    # Issue 22: the account's events and devices, and every user's events still to publish.
    assert client.get("/security-events?limit=1", headers=bearer(changed.json()["token"])).status_code == 200
    assert client.get("/devices", headers=bearer(changed.json()["token"])).status_code == 200
    # No event is pending (this app has no topic, so none was written unpublished): the query runs, nothing is sent.
    with _environ(
        SESSION_EVENTS_TOPIC="projects/demo-x/topics/events", PUBSUB_EMULATOR_HOST=f"127.0.0.1:{free_port()}"
    ):
        assert cli.main(["events", "publish-pending"]) == 0
    # The admin CLI, in-process: the same store, the same recorder.
    assert cli.main(["sessions", "list", "alice"]) == 0
    assert cli.main(["sessions", "list", "alice", "--limit", "1"]) == 0
    assert cli.main(["sessions", "revoke-all", "alice"]) == 0
    assert cli.main(["users", "disable", "bob"]) == 0
    assert cli.main(["users", "list", "--limit", "1"]) == 0  # list_users
    assert cli.main(["sessions", "revoke-everyone", "--yes", "--batch-size", "2"]) == 0  # list_usernames, scan
    assert cli.main(["users", "delete", "bob"]) == 0  # delete_user_sessions by user id
    assert cli.main(["users", "delete", "bob"]) == 1  # gone: the leftover sweep by username finds nothing


def test_every_query_has_an_index_and_every_index_a_query(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every query goes through Client._run with its shape: record the shapes of the queries this test drives.
    shapes: set[QueryShape] = set()
    run = Client._run

    async def recording(self: Client, query: Any, shape: QueryShape) -> Any:
        shapes.add(shape)
        return await run(self, query, shape)

    monkeypatch.setattr(Client, "_run", recording)
    _exercise_every_query(make_client)
    assert {s.collection for s in shapes} <= DEFAULT_COLLECTIONS | {DEVICES, EVENTS}
    assert shapes >= KNOWN_SHAPES, f"not recorded: {KNOWN_SHAPES - shapes}"
    spec = load_spec()
    unserved = [s for s in sorted(shapes, key=repr) if served_by(s, spec) is None]
    assert not unserved, f"no index in firestore.indexes.json serves {unserved}"
    for index in spec["indexes"]:
        assert any(_composite(index, s) for s in shapes), f"no query needs {index}: remove it"


@pytest.mark.parametrize(
    ("edit", "shape"),
    [
        (lambda spec: spec["indexes"].clear(), LIST_SESSIONS),
        (lambda spec: spec["indexes"][0]["fields"][1].update(order="ASCENDING"), LIST_SESSIONS),
        (lambda spec: spec["indexes"][0]["fields"].pop(), LIST_SESSIONS),
        (
            lambda spec: spec["fieldOverrides"].append(
                {"collectionGroup": SESSIONS, "fieldPath": "public_id", "indexes": []}
            ),
            QueryShape(SESSIONS, ("public_id",)),
        ),
        (lambda spec: None, QueryShape(SESSIONS, ("user_id", "public_id"))),
        (lambda spec: spec["indexes"].pop(), PENDING_EVENTS),
        (
            lambda spec: spec["fieldOverrides"].append({"collectionGroup": EVENTS, "fieldPath": "at", "indexes": []}),
            QueryShape(EVENTS, (), (("at", "DESCENDING"), ("__name__", "DESCENDING"))),
        ),
    ],
    ids=[
        "no composite index",
        "wrong direction",
        "no tie-breaker",
        "exempted equality field",
        "two equalities",
        "no collection-group index",
        "events ordered by an exempted field",
    ],
)
def test_index_check_can_fail(edit: Any, shape: QueryShape) -> None:
    spec = copy.deepcopy(load_spec())
    edit(spec)
    assert served_by(shape, spec) is None


# --- TTL fields ------------------------------------------------------------------------------------------


def _emulator(host: str, project: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    url = f"http://{host}/v1/projects/{project}/databases/(default)/documents{path}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", "Authorization": "Bearer owner"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def _records() -> Iterator[type[BaseModel]]:
    """The stored-record models of session.models and session.events."""
    for module, name in [(m, n) for m in (models, events) for n in dir(m)]:
        value = getattr(module, name)
        if (
            name.endswith("Record")
            and not name.startswith("_")
            and isinstance(value, type)
            and issubclass(value, BaseModel)
        ):
            yield value


def test_ttl_fields_of_the_code_are_declared_and_enabled(
    make_client: AppFactory, emulator_host: str, project: str
) -> None:
    # Write one document of each kind with the real service: a user, its session ledger, a session, a counter,
    # and (below the user too) the device of the device cookie.
    client = make_client()
    register(client, "alice")
    login(client, "alice")
    assert client.post("/login", json={"username": "mallory", "password": "guess"}).status_code == 401

    # Which collection holds which record: the one whose documents carry exactly that model's fields.
    # Collection groups (what a TTL policy names): the top-level collections and those below their documents.
    written: dict[str, list[dict[str, Any]]] = {}
    for collection in _emulator(emulator_host, project, ":listCollectionIds", {})["collectionIds"]:
        documents = _emulator(emulator_host, project, f"/{collection}")["documents"]
        written.setdefault(collection, []).extend(d["fields"] for d in documents)
        for document in documents:
            path = document["name"].split("/documents/", 1)[1]
            for group in _emulator(emulator_host, project, f"/{path}:listCollectionIds", {}).get("collectionIds", []):
                below = _emulator(emulator_host, project, f"/{path}/{group}")["documents"]
                written.setdefault(group, []).extend(d["fields"] for d in below)
    collection_of: dict[type[BaseModel], str] = {}
    for model in _records():
        required = {name for name, field in model.model_fields.items() if field.is_required()}
        for collection, docs in written.items():
            # Every required field, and nothing the record does not know (optional ones may be absent).
            if all(required <= set(doc) <= set(model.model_fields) for doc in docs):
                collection_of[model] = collection
    assert set(collection_of) == set(_records()), f"no documents written for {set(_records()) - set(collection_of)}"
    assert set(collection_of.values()) == DEFAULT_COLLECTIONS | {LEDGER_COLLECTION, DEVICES, EVENTS}

    # A TTL field is a record's aware-datetime `expires_at`, stored as a Timestamp (TTL ignores anything else).
    code_ttl = set()
    for model, collection in collection_of.items():
        field = model.model_fields.get("expires_at")
        if field is not None:
            assert field.annotation is AwareDatetime, model
            assert all("timestampValue" in doc["expires_at"] for doc in written[collection])
            code_ttl.add((collection, "expires_at"))
    assert len(code_ttl) >= 4  # sessions, login_attempts, devices and events

    spec = load_spec()
    overrides = spec["fieldOverrides"]
    declared_ttl = {(o["collectionGroup"], o["fieldPath"]) for o in overrides if o.get("ttl")}
    assert declared_ttl == code_ttl
    for o in overrides:
        if o.get("ttl"):
            assert o["ttl"] is True and o["indexes"] == [], o  # a monotonic timestamp: exempt it from indexing
        # Every override names a field the code writes (a typo would exempt or expire nothing).
        model = next(m for m, c in collection_of.items() if c == o["collectionGroup"])
        assert o["fieldPath"] in model.model_fields, o

    cmds = dry_run()
    enabled = {(flag(c, "collection-group"), c[5]) for c in commands(cmds, "firestore", "fields", "ttls", "update")}
    assert all("--enable-ttl" in c for c in commands(cmds, "firestore", "fields", "ttls", "update"))
    assert enabled == code_ttl
    exempted = {(flag(c, "collection-group"), c[5]) for c in commands(cmds, "firestore", "indexes", "fields", "update")}
    assert exempted == {(o["collectionGroup"], o["fieldPath"]) for o in overrides}


# --- firebase-tools' own validator -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def firebase_tools() -> str:
    """The pinned firebase-tools, installed once into the cache outside the repo (scripts/ci-tools.sh)."""
    require_tool("node", "firestore.indexes.json with firebase-tools")
    prefix = subprocess.run(
        ["bash", str(CI_TOOLS), "--firebase-tools-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not (Path(prefix) / ".complete").exists():
        require_tool("npm", "firestore.indexes.json with firebase-tools")
        installed = subprocess.run(
            ["bash", str(CI_TOOLS), "firebase-tools"], capture_output=True, text=True, timeout=900
        )
        if installed.returncode != 0:
            missing_tool(f"could not install firebase-tools into {prefix}: {installed.stderr.strip()[-500:]}")
    return prefix


def _validate(prefix: str, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(VALIDATOR), prefix], input=json.dumps(spec), capture_output=True, text=True, timeout=120
    )


def test_firebase_tools_accepts_the_file(firebase_tools: str) -> None:
    result = _validate(firebase_tools, load_spec())
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda spec: spec["indexes"][0].pop("queryScope"), 'Must contain "queryScope"'),
        (lambda spec: spec["fieldOverrides"][0].update(ttl="true"), 'Property "ttl" must be of type boolean'),
        (lambda spec: spec["indexes"][0]["fields"][1].update(order="DESC"), 'Field "order" must be one of'),
    ],
    ids=["no query scope", "ttl as a string", "bad order"],
)
def test_firebase_tools_rejects_a_broken_file(firebase_tools: str, edit: Any, message: str) -> None:
    spec = copy.deepcopy(load_spec())
    edit(spec)
    result = _validate(firebase_tools, spec)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
