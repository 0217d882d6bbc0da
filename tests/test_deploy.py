"""deploy.sh and .gcloudignore: what the dry run prints, checked against the installed gcloud's own parser."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from deploy_support import (
    CI_TOOLS,
    DEPLOY,
    DRY_RUN_PROJECT,
    ROOT,
    commands,
    deploy_env,
    dry_run,
    flag,
    load_spec,
    require_tool,
    run_deploy,
)

from session.config import VARIABLES

ENTRY_POINTS = ["register", "login", "profile", "logout", "sessions", "reauthenticate", "security_events", "devices"]
ORIGINS = "https://app.example.com,https://admin.example.com"
NO_ACCOUNT = "You do not currently have an active account selected"


SERVICE_SETTINGS = sorted(name for name in VARIABLES if name.startswith("SESSION_"))
EMAIL = f"session-service@{DRY_RUN_PROJECT}.iam.gserviceaccount.com"


def all_dry_runs() -> dict[str, list[list[str]]]:
    """Every mode the parser check covers: default, --single, a given account, settings with commas, a database,
    an events topic."""
    return {
        "default": dry_run(),
        "single": dry_run("--single"),
        "own account": dry_run("--service-account", "fn@other.iam.gserviceaccount.com", "--region", "europe-west1"),
        "settings": dry_run("--single", SESSION_ALLOWED_ORIGINS=ORIGINS, SESSION_SESSIONS_COLLECTION="s2"),
        "database": dry_run("--database", "sessions-db"),
        "events": dry_run("--single", SESSION_EVENTS_TOPIC="session-events"),
    }


# --- the script itself ---------------------------------------------------------------------------------


def test_shellcheck_is_clean() -> None:
    shellcheck = require_tool("shellcheck", "the shell scripts' hygiene")
    result = subprocess.run([shellcheck, str(DEPLOY), str(CI_TOOLS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_mode() -> None:
    assert "\nset -euo pipefail\n" in DEPLOY.read_text()
    assert "\nset -euo pipefail\n" in CI_TOOLS.read_text()


def test_help_describes_every_option() -> None:
    result = subprocess.run(["bash", str(DEPLOY), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    source = DEPLOY.read_text()
    options = set(re.findall(r"^\s+(--[a-z-]+)\)", source, re.MULTILINE))
    assert {"--project", "--single", "--dry-run", "--service-account", "--concurrency"} <= options
    for option in options:
        assert re.search(rf"^\s+{option}\b", text, re.MULTILINE), f"--help does not describe {option}"
    # Every variable the script reads from the environment is named in the help.
    variables = set(re.findall(r'^([A-Z_]+)="\$\{\1:-', source, re.MULTILINE))
    assert {"PROJECT", "REGION", "RUNTIME", "FUNCTIONS", "SERVICE_ACCOUNT"} <= variables
    for variable in variables:
        assert f"[{variable}" in text, f"--help does not name the variable {variable}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option --bogus"),
        (["--region"], "--region needs a value"),
        (["--functions", "login nope"], "unknown function nope"),
        (["--concurrency", "many"], "CONCURRENCY must be a whole number"),
        (["--project", "Not A Project"], "invalid project id"),
    ],
)
def test_bad_usage(args: list[str], message: str) -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY), "--dry-run", *args], env=deploy_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_dry_run_needs_a_project_and_calls_no_gcloud(tmp_path: Path) -> None:
    # A gcloud that leaves a mark: the dry run must never call it, not even to read the configured project.
    mark = tmp_path / "called"
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(mark))}\nexit 3\n')
    fake.chmod(0o755)
    env = deploy_env()
    env["PATH"] = f"{fake.parent}{os.pathsep}{env['PATH']}"
    ok = subprocess.run(["bash", str(DEPLOY), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    del env["PROJECT"]
    no_project = subprocess.run(["bash", str(DEPLOY), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert no_project.returncode == 2
    assert "--project" in no_project.stderr
    assert not mark.exists(), mark.read_text()


# --- what the dry run prints ----------------------------------------------------------------------------


def test_dry_run_prints_only_gcloud_commands() -> None:
    for mode, cmds in all_dry_runs().items():
        assert cmds, mode
        for cmd in cmds:
            assert cmd[0] == "gcloud", f"{mode}: {cmd}"
            # `gcloud projects …` takes the project as its argument.
            assert flag(cmd, "project") == DRY_RUN_PROJECT or (cmd[1] == "projects" and cmd[3] == DRY_RUN_PROJECT), (
                f"{mode}: no --project in {cmd}"
            )


@pytest.mark.parametrize(("args", "expected"), [((), ENTRY_POINTS), (("--single",), ["api"])])
def test_functions_deployed(args: tuple[str, ...], expected: list[str]) -> None:
    cmds = dry_run(*args)
    deploys = commands(cmds, "functions", "deploy")
    # A function is named after its entry point, with "-" for "_" (Cloud Run functions allow no underscore).
    named = [e.replace("_", "-") for e in expected]
    assert [c[3] for c in deploys] == named
    for cmd, entry_point in zip(deploys, expected, strict=True):
        assert flag(cmd, "entry-point") == entry_point
        assert {"--gen2", "--trigger-http", "--allow-unauthenticated"} <= set(cmd)
        assert flag(cmd, "runtime") == "python312"
        assert flag(cmd, "region") == "us-central1"
        assert flag(cmd, "source") == str(ROOT)
        assert flag(cmd, "service-account") == f"session-service@{DRY_RUN_PROJECT}.iam.gserviceaccount.com"
        for name in ("memory", "cpu", "min-instances", "max-instances", "concurrency"):
            assert flag(cmd, name), f"--{name} missing"
        assert flag(cmd, "set-env-vars") == f"GOOGLE_CLOUD_PROJECT={DRY_RUN_PROJECT},FIRESTORE_DATABASE=(default)"
    # The URLs are printed for exactly the functions deployed.
    assert [c[3] for c in commands(cmds, "functions", "describe")] == named


@pytest.mark.parametrize(("mode", "database"), [("default", "(default)"), ("database", "sessions-db")])
def test_dedicated_service_account_with_one_role_on_one_database(mode: str, database: str) -> None:
    cmds = all_dry_runs()[mode]
    assert [c[4] for c in commands(cmds, "iam", "service-accounts", "create")] == ["session-service"]
    (binding,) = commands(cmds, "projects", "add-iam-policy-binding")
    assert flag(binding, "member") == f"serviceAccount:{EMAIL}"
    assert flag(binding, "role") == "roles/datastore.user"  # no roles/logging.logWriter: stdout logs need none
    # The IAM condition Firestore documents for one database (firebase.google.com/docs/firestore/security/iam).
    condition = dict(part.split("=", 1) for part in (flag(binding, "condition") or "").split(","))
    assert condition["expression"] == f'resource.name=="projects/{DRY_RUN_PROJECT}/databases/{database}"'
    assert condition["title"] and condition["description"]
    # The account exists before anything is granted to it or runs as it.
    first_binding = cmds.index(binding)
    assert cmds.index(commands(cmds, "iam", "service-accounts", "create")[0]) < first_binding
    assert first_binding < cmds.index(commands(cmds, "functions", "deploy")[0])
    assert not commands(cmds, "projects", "remove-iam-policy-binding")  # an empty project has nothing to take back


def test_given_service_account_is_used_as_is() -> None:
    cmds = all_dry_runs()["own account"]
    assert not commands(cmds, "iam") and not commands(cmds, "projects")
    for cmd in commands(cmds, "functions", "deploy"):
        assert flag(cmd, "service-account") == "fn@other.iam.gserviceaccount.com"
        assert flag(cmd, "region") == "europe-west1"
    assert flag(commands(cmds, "firestore", "databases", "create")[0], "location") == "europe-west1"


def test_settings_reach_the_functions_and_rename_collections() -> None:
    cmds = all_dry_runs()["settings"]
    (deploy,) = commands(cmds, "functions", "deploy")
    # A value with commas switches gcloud's list delimiter (see `gcloud topic escaping`).
    env_flag = flag(deploy, "set-env-vars") or ""
    assert env_flag.startswith("^|^")
    pairs = dict(pair.split("=", 1) for pair in env_flag[3:].split("|"))
    assert pairs == {
        "GOOGLE_CLOUD_PROJECT": DRY_RUN_PROJECT,
        "FIRESTORE_DATABASE": "(default)",
        "SESSION_ALLOWED_ORIGINS": ORIGINS,
        "SESSION_SESSIONS_COLLECTION": "s2",
    }
    groups = {flag(c, "collection-group") for c in commands(cmds, "firestore") if flag(c, "collection-group")}
    assert "s2" in groups and "sessions" not in groups


def test_only_the_services_settings_are_passed_on() -> None:
    # Every setting session/config.py defines, beside a desktop's and another application's variables.
    extra = {name: "7" for name in SERVICE_SETTINGS}
    result = run_deploy(
        "--dry-run",
        "--single",
        SESSION_MANAGER="local/host:@/tmp/.ICE-unix/42",
        SESSION_OTHER_APP_KEY="s3cr3t",
        **extra,
    )
    assert result.returncode == 0, result.stderr
    (deploy,) = [shlex.split(line) for line in result.stdout.splitlines() if " functions deploy " in line]
    env_flag = flag(deploy, "set-env-vars") or ""
    pairs = dict(pair.split("=", 1) for pair in env_flag.split(","))
    assert sorted(pairs) == sorted(["GOOGLE_CLOUD_PROJECT", "FIRESTORE_DATABASE", *SERVICE_SETTINGS])
    assert "s3cr3t" not in result.stdout and "ICE-unix" not in result.stdout
    assert "not passed on: SESSION_MANAGER SESSION_OTHER_APP_KEY" in result.stderr
    # The list has one home: no setting name is written in deploy.sh itself, beyond its examples and checks.
    written = set(re.findall(r"SESSION_[A-Z0-9_]+", DEPLOY.read_text()))
    assert written <= {
        "SESSION_MANAGER",
        "SESSION_COOKIE_SECURE",
        "SESSION_ALLOWED_ORIGINS",
        "SESSION_PAGE_API_ORIGIN",
        "SESSION_ADDRESS_MAX_FAILURES",
        "SESSION_CLIENT_IP_HEADER",
        "SESSION_USERS_COLLECTION",
        "SESSION_SESSIONS_COLLECTION",
        "SESSION_ATTEMPTS_COLLECTION",
        "SESSION_EVENTS_TOPIC",
    }, written


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SESSION_COOKIE_SECURE": "false"}, "SESSION_COOKIE_SECURE: false would let the session cookie travel"),
        ({"SESSION_COOKIE_SECURE": "0"}, "SESSION_COOKIE_SECURE"),
        ({"SESSION_COOKIE_SECURE": " No "}, "SESSION_COOKIE_SECURE"),
        (
            {"SESSION_ALLOWED_ORIGINS": "https://app.example.com,http://app.example.com"},
            "http://app.example.com is plain",
        ),
        ({"SESSION_PAGE_API_ORIGIN": "http://api.example.com:8080"}, "SESSION_PAGE_API_ORIGIN: http://api.example.com"),
        ({"SESSION_DEFAULT_PERMISSIONS": "read\nadmin"}, "SESSION_DEFAULT_PERMISSIONS: the value must be one line"),
        # Issue 19: on Cloud Functions the peer is Google's front end, shared by every client.
        (
            {"SESSION_ADDRESS_MAX_FAILURES": "100"},
            "SESSION_ADDRESS_MAX_FAILURES: a per-address limit without SESSION_CLIENT_IP_HEADER",
        ),
    ],
)
def test_insecure_settings_are_refused(env: dict[str, str], message: str) -> None:
    result = run_deploy("--dry-run", **env)
    assert result.returncode == 2, result.stdout
    assert "refusing insecure or malformed settings" in result.stderr
    assert message in result.stderr
    assert result.stdout == ""  # not one command


def test_a_per_address_limit_with_the_client_ip_header_is_deployed() -> None:
    result = run_deploy(
        "--dry-run", "--single", SESSION_ADDRESS_MAX_FAILURES="100", SESSION_CLIENT_IP_HEADER="X-Forwarded-For"
    )
    assert result.returncode == 0, result.stderr
    assert "SESSION_ADDRESS_MAX_FAILURES=100" in result.stdout


def test_a_loopback_origin_is_allowed_with_a_warning() -> None:
    result = run_deploy(
        "--dry-run", "--single", SESSION_ALLOWED_ORIGINS="https://app.example.com,http://localhost:3000"
    )
    assert result.returncode == 0, result.stderr
    assert "warning: SESSION_ALLOWED_ORIGINS allows http://localhost:3000" in result.stderr


FAKE_GCLOUD = """#!/bin/sh
# Records each call (one per line, arguments ended by US) and answers like a project an earlier deploy.sh set up.
for arg in "$@"; do printf '%s\\037' "$arg"; done >> "$CALLS"
echo >> "$CALLS"
case "$*" in
    "firestore databases describe"*) echo FIRESTORE_NATIVE ;;
    *" list "*"--format=json"*) echo "[]" ;;
    "iam service-accounts describe"*) echo "$EMAIL" ;;
    "projects get-iam-policy"*) cat "$POLICY" ;;
    "functions describe"*) echo "https://example.invalid/fn" ;;
esac
exit 0
"""


@pytest.mark.parametrize("already_narrowed", [False, True])
def test_a_rerun_takes_back_what_earlier_versions_granted(tmp_path: Path, already_narrowed: bool) -> None:
    """Not a dry run: a fake gcloud answers as a project deployed by the old script (both roles, project-wide)."""
    member = f"serviceAccount:{EMAIL}"
    expression = f'resource.name=="projects/{DRY_RUN_PROJECT}/databases/(default)"'
    policy = [
        "roles/owner\tuser:me@example.com\t",
        f"roles/datastore.user\t{member}\t",
        f"roles/logging.logWriter\t{member}",
    ]
    if already_narrowed:
        policy = ["roles/owner\tuser:me@example.com\t", f"roles/datastore.user\t{member}\t{expression}"]
    (tmp_path / "policy").write_text("\n".join(policy) + "\n")
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    env = deploy_env(CALLS=str(calls), POLICY=str(tmp_path / "policy"), EMAIL=EMAIL)
    env["PATH"] = f"{fake.parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["bash", str(DEPLOY), "--single"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    made = [line.split("\x1f")[:-1] for line in calls.read_text().splitlines()]
    removed = [c for c in made if c[:2] == ["projects", "remove-iam-policy-binding"]]
    added = [c for c in made if c[:2] == ["projects", "add-iam-policy-binding"]]
    if already_narrowed:
        assert removed == [] and added == []
    else:
        assert sorted(flag(["gcloud", *c], "role") or "" for c in removed) == [
            "roles/datastore.user",
            "roles/logging.logWriter",
        ]
        assert all(flag(["gcloud", *c], "condition") == "None" for c in removed)
        assert all(flag(["gcloud", *c], "member") == member for c in removed)
        (grant,) = added
        assert f"expression={expression}," in (flag(["gcloud", *grant], "condition") or "")
        assert made.index(grant) < made.index(removed[0])  # granted on the database before taken from the project
    assert [c[:3] for c in made if c[:2] == ["functions", "deploy"]] == [["functions", "deploy", "api"]]


@pytest.mark.parametrize(
    ("topic", "project", "topic_id"),
    [
        ("session-events", DRY_RUN_PROJECT, "session-events"),  # an id: in the service's project
        ("projects/events-hub/topics/session-events", "events-hub", "session-events"),
    ],
)
def test_the_events_topic_is_created_and_only_it_granted(topic: str, project: str, topic_id: str) -> None:
    cmds = dry_run("--single", SESSION_EVENTS_TOPIC=topic)
    (describe,) = commands(cmds, "pubsub", "topics", "describe")
    (create,) = commands(cmds, "pubsub", "topics", "create")
    (grant,) = commands(cmds, "pubsub", "topics", "add-iam-policy-binding")
    for cmd in (describe, create, grant):
        assert (cmd[4], flag(cmd, "project")) == (topic_id, project)
    assert (flag(grant, "member"), flag(grant, "role")) == (f"serviceAccount:{EMAIL}", "roles/pubsub.publisher")
    # The topic only: no Pub/Sub role on a project, and the database role as before.
    assert [flag(c, "role") for c in commands(cmds, "projects", "add-iam-policy-binding")] == ["roles/datastore.user"]
    assert "pubsub.googleapis.com" in commands(cmds, "services", "enable")[0]
    # Looked up, created, granted once the account exists, all before the function runs as it.
    order = [cmds.index(c) for c in (describe, create, grant, commands(cmds, "functions", "deploy")[0])]
    assert order == sorted(order)
    assert cmds.index(commands(cmds, "iam", "service-accounts", "create")[0]) < cmds.index(grant)
    env_flag = flag(commands(cmds, "functions", "deploy")[0], "set-env-vars") or ""
    assert f"SESSION_EVENTS_TOPIC={topic}" in env_flag.split(",")


def test_without_an_events_topic_nothing_of_pubsub() -> None:
    cmds = dry_run("--single")
    assert not commands(cmds, "pubsub")
    assert "pubsub.googleapis.com" not in commands(cmds, "services", "enable")[0]


def test_a_given_service_account_gets_no_topic_grant_but_a_note() -> None:
    result = run_deploy(
        "--dry-run", "--single", "--service-account", "fn@other.iam.gserviceaccount.com", SESSION_EVENTS_TOPIC="ev1"
    )
    assert result.returncode == 0, result.stderr
    cmds = [shlex.split(line) for line in result.stdout.splitlines()]
    assert commands(cmds, "pubsub", "topics", "create") and not commands(
        cmds, "pubsub", "topics", "add-iam-policy-binding"
    )
    assert "fn@other.iam.gserviceaccount.com needs roles/pubsub.publisher on ev1" in result.stderr


@pytest.mark.parametrize(
    "topic", ["projects/p-1/subscriptions/s", "projects//topics/t", "a/b", "projects/p/topics/t/x"]
)
def test_an_events_topic_of_another_shape_is_refused(topic: str) -> None:
    result = run_deploy("--dry-run", SESSION_EVENTS_TOPIC=topic)
    assert result.returncode == 2
    assert "SESSION_EVENTS_TOPIC must be a topic id or projects/PROJECT/topics/TOPIC" in result.stderr
    assert result.stdout == ""


def test_firestore_before_functions() -> None:
    cmds = dry_run()
    steps = [" ".join(c[1:4]) for c in cmds]
    first_deploy = steps.index("functions deploy register")
    for step in ("services enable cloudfunctions.googleapis.com", "firestore databases create"):
        assert steps.index(step) < first_deploy
    apis = commands(cmds, "services", "enable")[0]
    assert {"firestore.googleapis.com", "cloudfunctions.googleapis.com", "run.googleapis.com"} <= set(apis)
    assert flag(commands(cmds, "firestore", "databases", "create")[0], "type") == "firestore-native"


def test_composite_indexes_created_from_the_file() -> None:
    spec = load_spec()
    created = []
    for cmd in commands(dry_run(), "firestore", "indexes", "composite", "create"):
        fields = [arg.split("=", 1)[1] for arg in cmd if arg.startswith("--field-config=")]
        created.append((flag(cmd, "collection-group"), flag(cmd, "query-scope"), fields))
    expected = [
        (
            index["collectionGroup"],
            index["queryScope"].lower().replace("_", "-"),  # gcloud says collection-group
            [f"field-path={f['fieldPath']},order={f['order'].lower()}" for f in index["fields"]],
        )
        for index in spec["indexes"]
    ]
    assert created == expected


# --- the installed gcloud accepts every command ----------------------------------------------------------


def _gcloud_env(config: str) -> dict[str, str]:
    """No credentials, no configuration, no prompts, no update checks: parsing needs no network."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": config,
        "LANG": "C.UTF-8",
        "CLOUDSDK_CONFIG": config,
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
    }


def _verdict(argv: list[str], code: int, output: str) -> str | None:
    """None when gcloud parsed ``argv`` and stopped only for want of an account; otherwise what went wrong."""
    if code == 1 and NO_ACCOUNT in output:
        return None
    return f"exit {code}: gcloud {shlex.join(argv)}\n{output.strip()[-1500:]}"


def _parse_check(argv: tuple[str, ...]) -> str | None:
    """One command, in its own gcloud process (a second or two each)."""
    with tempfile.TemporaryDirectory(prefix="gcloud-config-") as config:
        try:
            result = subprocess.run(
                ["gcloud", *argv],
                env=_gcloud_env(config),
                capture_output=True,
                text=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return f"timed out: gcloud {shlex.join(argv)}"
    return _verdict(list(argv), result.returncode, result.stderr)


def _batch_parse_check(argvs: list[tuple[str, ...]]) -> list[str | None] | None:
    """Every command in one gcloud process (tests/gcloud_batch_parse.py); None if that runner can't work here."""
    gcloud = Path(shutil.which("gcloud") or "gcloud").resolve()
    sdk = gcloud.parent.parent
    bundled = sdk / "platform" / "bundledpythonunix" / "bin" / "python3"
    python = os.environ.get("CLOUDSDK_PYTHON") or (str(bundled) if bundled.exists() else shutil.which("python3"))
    if not (sdk / "lib" / "gcloud.py").exists() or python is None:
        return None
    with tempfile.TemporaryDirectory(prefix="gcloud-config-") as config:
        try:
            result = subprocess.run(
                [python, str(Path(__file__).parent / "gcloud_batch_parse.py"), str(sdk / "lib")],
                env=_gcloud_env(config),
                input=json.dumps([list(a) for a in argvs]),
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            return None
    if result.returncode != 0:
        return None
    try:
        rows = json.loads(result.stdout)
    except ValueError:
        return None
    if [tuple(r["argv"]) for r in rows] != argvs:
        return None
    return [_verdict(r["argv"], r["code"], r["stderr"]) for r in rows]


def test_gcloud_accepts_every_command() -> None:
    require_tool("gcloud", "deploy.sh's commands against gcloud's parser")
    unique = sorted({tuple(cmd[1:]) for cmds in all_dry_runs().values() for cmd in cmds})
    assert len(unique) >= 20
    bad = ("firestore", "fields", "ttls", "update", "expires_at", "--collection-group=sessions", "--enable-tll")
    sample = next(a for a in unique if a[:2] == ("functions", "deploy"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        # The fast path: every command in one gcloud process. Beside it, in their own processes as a
        # user would run them, a sample command and a broken one: the fast path must agree with both.
        batch = pool.submit(_batch_parse_check, [*unique, bad])
        alone = list(pool.map(_parse_check, [sample, bad]))
        verdicts = batch.result()
        if verdicts is None:  # gcloud's internals changed: one process per command, in parallel
            verdicts = list(pool.map(_parse_check, [*unique, bad]))
    assert alone[0] is None, alone[0]
    assert alone[1] is not None and alone[1].startswith("exit 2"), alone[1]
    *verdicts, bad_verdict = verdicts
    assert bad_verdict is not None and bad_verdict.startswith("exit 2"), bad_verdict
    problems = [v for v in verdicts if v is not None]
    assert not problems, "\n\n".join(problems)


# --- .gcloudignore -------------------------------------------------------------------------------------


def test_upload_is_only_what_the_functions_need() -> None:
    gcloud = require_tool("gcloud", "what .gcloudignore uploads")
    with tempfile.TemporaryDirectory(prefix="gcloud-config-") as config:
        env = dict(os.environ, CLOUDSDK_CONFIG=config, CLOUDSDK_CORE_DISABLE_PROMPTS="1")
        result = subprocess.run(
            [gcloud, "meta", "list-files-for-upload", str(ROOT)], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 0, result.stderr
    uploaded = set(result.stdout.split())
    assert {
        "main.py",
        "requirements.txt",
        "session/__init__.py",
        "session/store/__init__.py",
        "session/store/client.py",
    } <= uploaded
    wanted = {"main.py", "requirements.txt"}
    for folder in ("session",):
        for path in (ROOT / folder).rglob("*") if (ROOT / folder).is_dir() else ():
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                wanted.add(path.relative_to(ROOT).as_posix())
    assert uploaded == wanted
