#!/usr/bin/env bash
# Deploy the session service to Google Cloud: Firestore (database, TTL policies, indexes) and the functions.
# Run ./deploy.sh --help for the options. Every step looks before it creates, so running it again is safe.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INDEXES_FILE="${ROOT}/firestore.indexes.json"
ALL_FUNCTIONS="register login profile logout sessions reauthenticate security_events devices"
CONFIG_FILE="${ROOT}/session/config.py"
SERVICE_ACCOUNT_NAME="session-service"
# The one role the functions' identity needs: reading and writing documents (granted on the service's database
# only, by an IAM condition). Logs need no role: the platform collects what the functions print to stdout.
DATABASE_ROLE="roles/datastore.user"
# The one role the functions need on the events topic (SESSION_EVENTS_TOPIC), granted on that topic only.
TOPIC_ROLE="roles/pubsub.publisher"
# What earlier versions of this script granted our account, and a re-run takes back.
LEGACY_GRANTS=(roles/datastore.user roles/logging.logWriter)
APIS=(
    cloudfunctions.googleapis.com
    run.googleapis.com
    cloudbuild.googleapis.com
    artifactregistry.googleapis.com
    firestore.googleapis.com
    logging.googleapis.com
    iam.googleapis.com
)

PROJECT="${PROJECT:-}"
REGION="${REGION:-us-central1}"
FIRESTORE_LOCATION="${FIRESTORE_LOCATION:-}"
FIRESTORE_DATABASE="${FIRESTORE_DATABASE:-(default)}"
RUNTIME="${RUNTIME:-python312}"
FUNCTIONS="${FUNCTIONS:-${ALL_FUNCTIONS}}"
MEMORY="${MEMORY:-512Mi}"
CPU="${CPU:-1}"
MIN_INSTANCES="${MIN_INSTANCES:-0}"
MAX_INSTANCES="${MAX_INSTANCES:-10}"
CONCURRENCY="${CONCURRENCY:-16}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-}"
DRY_RUN="${DRY_RUN:-0}"

usage() {
    cat <<EOF
Usage: ./deploy.sh [OPTION]...

Deploy the session service to Google Cloud Functions (2nd gen) on Firestore:
  1. enable the required APIs;
  2. create the Firestore database in native mode, if it is missing;
  3. apply the fieldOverrides of firestore.indexes.json: the TTL policy of every
     TTL field, and the single-field index exemptions;
  4. create every composite index of firestore.indexes.json (they build in the background);
  5. create the runtime service account (unless one is given) and grant it
     roles/datastore.user on the service's Firestore database only (an IAM condition),
     nothing else (logs printed to stdout need no role); grants of earlier versions of
     this script (the role on the whole project, roles/logging.logWriter) are taken back;
  6. when SESSION_EVENTS_TOPIC is set (a topic id in the project, or projects/P/topics/T):
     create the topic if it is missing, and grant the service account created in step 5
     roles/pubsub.publisher on that topic only (a given --service-account needs that grant);
  7. deploy each function with --trigger-http, and print the URLs.
Each step looks before it creates: a second run changes nothing but the functions' code.

Every option can also be set by the environment variable in brackets; a flag wins.

  --project ID             Google Cloud project [PROJECT]
                           (default: gcloud's configured project, "gcloud config get-value project")
  --region REGION          region of the functions [REGION] (default: us-central1)
  --firestore-location LOC location of a new Firestore database [FIRESTORE_LOCATION]
                           (default: the region; nam5 or eur3 for multi-region)
  --database ID            Firestore database [FIRESTORE_DATABASE] (default: "(default)")
  --runtime RUNTIME        Python runtime [RUNTIME] (default: python312)
  --functions "A B ..."    entry points to deploy, each as its own function [FUNCTIONS]
                           (default: "${ALL_FUNCTIONS}")
  --single                 deploy the one function "api", serving every endpoint under
                           its path (/register, /login, ...) and the page in session/static/
  --memory SIZE            memory per instance [MEMORY] (default: 512Mi)
  --cpu N                  CPUs per instance [CPU] (default: 1; concurrency above 1 needs at least 1)
  --min-instances N        instances kept warm [MIN_INSTANCES] (default: 0)
  --max-instances N        upper bound of instances per function [MAX_INSTANCES] (default: 10)
  --concurrency N          requests served at once by one instance [CONCURRENCY] (default: 16)
  --service-account EMAIL  runtime service account [SERVICE_ACCOUNT]; when given it is used as it
                           is: not created, and no role is granted to it (default: create
                           ${SERVICE_ACCOUNT_NAME}@PROJECT.iam.gserviceaccount.com)
  --dry-run                print every gcloud command, one per line and shell-quoted, and run
                           none [DRY_RUN=1]. A dry run calls no gcloud at all: it prints the
                           look-ups too and assumes they find nothing, so the output is what a
                           first deploy into an empty project runs. It needs --project or PROJECT.
  -h, --help               print this help and exit

Service settings: the SESSION_* variables the service defines (the validation aliases of Settings in
session/config.py; see the README's configuration table) are passed to the functions when set, and
nothing else of the environment: other SESSION_* variables (a desktop's SESSION_MANAGER) are named in a
warning and left behind. SESSION_COOKIE_SECURE=false and plain-http origins other than loopback ones
in SESSION_ALLOWED_ORIGINS or SESSION_PAGE_API_ORIGIN are refused. SESSION_USERS_COLLECTION,
SESSION_SESSIONS_COLLECTION and SESSION_ATTEMPTS_COLLECTION rename the collection groups of
firestore.indexes.json. SESSION_EVENTS_TOPIC adds step 6 (and enables pubsub.googleapis.com). The
functions also get GOOGLE_CLOUD_PROJECT and FIRESTORE_DATABASE.

Requires gcloud and python3 (to read firestore.indexes.json and session/config.py; no packages).
Example: PROJECT=my-project ./deploy.sh --single --dry-run
EOF
}

die() {
    echo "deploy.sh: $*" >&2
    exit 2
}

note() {
    echo "==> $*" >&2
}

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --project) need_value "$@"; PROJECT="$2"; shift 2 ;;
        --region) need_value "$@"; REGION="$2"; shift 2 ;;
        --firestore-location) need_value "$@"; FIRESTORE_LOCATION="$2"; shift 2 ;;
        --database) need_value "$@"; FIRESTORE_DATABASE="$2"; shift 2 ;;
        --runtime) need_value "$@"; RUNTIME="$2"; shift 2 ;;
        --functions) need_value "$@"; FUNCTIONS="$2"; shift 2 ;;
        --single) FUNCTIONS="api"; shift ;;
        --memory) need_value "$@"; MEMORY="$2"; shift 2 ;;
        --cpu) need_value "$@"; CPU="$2"; shift 2 ;;
        --min-instances) need_value "$@"; MIN_INSTANCES="$2"; shift 2 ;;
        --max-instances) need_value "$@"; MAX_INSTANCES="$2"; shift 2 ;;
        --concurrency) need_value "$@"; CONCURRENCY="$2"; shift 2 ;;
        --service-account) need_value "$@"; SERVICE_ACCOUNT="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# --- checks -----------------------------------------------------------------------------------

[[ "${DRY_RUN}" == 0 || "${DRY_RUN}" == 1 ]] || die "DRY_RUN must be 0 or 1"
command -v python3 >/dev/null 2>&1 || die "python3 is required (to read firestore.indexes.json)"
[[ -f "${INDEXES_FILE}" ]] || die "missing ${INDEXES_FILE}"
[[ -f "${CONFIG_FILE}" ]] || die "missing ${CONFIG_FILE}"
if [[ "${DRY_RUN}" == 0 ]]; then
    command -v gcloud >/dev/null 2>&1 || die "gcloud is required: https://cloud.google.com/sdk/docs/install"
    if [[ -z "${PROJECT}" ]]; then
        PROJECT="$(gcloud config get-value project 2>/dev/null || true)"
    fi
fi
[[ -n "${PROJECT}" ]] || die "no project: pass --project or set PROJECT (or, except in a dry run, gcloud config set project)"
[[ "${PROJECT}" =~ ^[a-z][a-z0-9:.-]{4,61}[a-z0-9]$ ]] || die "invalid project id ${PROJECT}"
FIRESTORE_LOCATION="${FIRESTORE_LOCATION:-${REGION}}"

FUNCTIONS="${FUNCTIONS//,/ }"
read -r -a FUNCTION_LIST <<<"${FUNCTIONS}"
[[ ${#FUNCTION_LIST[@]} -gt 0 ]] || die "FUNCTIONS is empty"
for fn in "${FUNCTION_LIST[@]}"; do
    [[ " ${ALL_FUNCTIONS} api " == *" ${fn} "* ]] || die "unknown function ${fn} (one of: ${ALL_FUNCTIONS} api)"
done
for number in MIN_INSTANCES MAX_INSTANCES CONCURRENCY; do
    [[ "${!number}" =~ ^[0-9]+$ ]] || die "${number} must be a whole number, not ${!number}"
done

# The events topic (issue 22): its project and id. The service validates the value itself at cold start; here
# only its shape matters, to tell the two forms apart.
EVENTS_TOPIC="${SESSION_EVENTS_TOPIC:-}"
TOPIC_PROJECT="${PROJECT}"
TOPIC_ID="${EVENTS_TOPIC}"
if [[ "${EVENTS_TOPIC}" == */* ]]; then
    [[ "${EVENTS_TOPIC}" =~ ^projects/([^/]+)/topics/([^/]+)$ ]] ||
        die "SESSION_EVENTS_TOPIC must be a topic id or projects/PROJECT/topics/TOPIC, not ${EVENTS_TOPIC}"
    TOPIC_PROJECT="${BASH_REMATCH[1]}"
    TOPIC_ID="${BASH_REMATCH[2]}"
fi
if [[ -n "${EVENTS_TOPIC}" ]]; then
    APIS+=(pubsub.googleapis.com)
fi

if [[ -z "${SERVICE_ACCOUNT}" ]]; then
    SERVICE_ACCOUNT="${SERVICE_ACCOUNT_NAME}@${PROJECT}.iam.gserviceaccount.com"
    CREATE_SERVICE_ACCOUNT=1
else
    CREATE_SERVICE_ACCOUNT=0
fi

# settings: the service's own settings found in our environment, one NAME=VALUE line each. The names are
# the SESSION_* validation aliases of Settings in session/config.py, read from its text (no import: the
# deployer needs no virtualenv), so the list has one home. Refuses insecure values; names what it leaves.
settings() {
    python3 - "${CONFIG_FILE}" <<'PY'
import ast, os, sys

tree = ast.parse(open(sys.argv[1], encoding="utf-8").read())
names = set()
for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"):
    for call in (n for n in ast.walk(cls) if isinstance(n, ast.Call)):
        for keyword in (k for k in call.keywords if k.arg == "validation_alias"):
            value = keyword.value
            for const in [value] if isinstance(value, ast.Constant) else getattr(value, "args", []):
                if isinstance(const, ast.Constant) and isinstance(const.value, str):
                    names.add(const.value)
names = sorted(name for name in names if name.startswith("SESSION_"))
if not names:
    sys.exit("deploy.sh: found no SESSION_* settings in session/config.py")

problems = []


def origins(name):
    for origin in (part.strip() for part in os.environ.get(name, "").split(",")):
        if origin.lower().startswith("http://"):
            host = origin[7:].split("/", 1)[0].rsplit(":", 1)[0].lower()
            if host in ("localhost", "127.0.0.1", "[::1]"):
                print(f"deploy.sh: warning: {name} allows {origin}, a page on the deployer's own machine", file=sys.stderr)
            else:
                problems.append(f"{name}: {origin} is plain http: anyone on its network can act with a user's session")


if os.environ.get("SESSION_COOKIE_SECURE", "").strip().lower() in ("0", "off", "f", "false", "n", "no"):
    problems.append("SESSION_COOKIE_SECURE: false would let the session cookie travel over plain http; unset it")
origins("SESSION_ALLOWED_ORIGINS")
origins("SESSION_PAGE_API_ORIGIN")
try:
    per_address = int(os.environ.get("SESSION_ADDRESS_MAX_FAILURES", "0").strip() or "0")
except ValueError:
    per_address = 0  # the service's own validation names a bad number
if per_address > 0 and not os.environ.get("SESSION_CLIENT_IP_HEADER", "").strip():
    problems.append(
        "SESSION_ADDRESS_MAX_FAILURES: a per-address limit without SESSION_CLIENT_IP_HEADER counts the address of"
        " Google's front end, shared by every client: one attacker would lock everyone out; set"
        " SESSION_CLIENT_IP_HEADER (X-Forwarded-For) or leave SESSION_ADDRESS_MAX_FAILURES unset"
    )
for name in names:
    if "\n" in os.environ.get(name, "") or "\r" in os.environ.get(name, ""):
        problems.append(f"{name}: the value must be one line")
if problems:
    sys.exit("deploy.sh: refusing insecure or malformed settings:\n  " + "\n  ".join(problems))
left = sorted(name for name in os.environ if name.startswith("SESSION_") and name not in names)
if left:
    print(f"deploy.sh: warning: not settings of the service, so not passed on: {' '.join(left)}", file=sys.stderr)
for name in names:
    if name in os.environ:
        print(f"{name}={os.environ[name]}")
PY
}

# The functions' environment: the project and database, then the service's settings given to us.
ENV_VARS=("GOOGLE_CLOUD_PROJECT=${PROJECT}" "FIRESTORE_DATABASE=${FIRESTORE_DATABASE}")
setting_lines="$(settings)" || exit 2
while IFS= read -r pair; do
    [[ -n "${pair}" ]] && ENV_VARS+=("${pair}")
done <<<"${setting_lines}"
# gcloud splits --set-env-vars on commas; a value with one (a list of origins) needs another delimiter.
env_delimiter=","
for pair in "${ENV_VARS[@]}"; do
    [[ "${pair}" != *$'\n'* ]] || die "environment values must be one line: ${pair%%=*}"
    if [[ "${pair}" == *,* ]]; then
        env_delimiter="|"
    fi
done
env_flag=""
for pair in "${ENV_VARS[@]}"; do
    if [[ "${env_delimiter}" == "|" && "${pair}" == *"|"* ]]; then
        die "a value holds both ',' and '|': ${pair%%=*}"
    fi
    env_flag+="${env_flag:+${env_delimiter}}${pair}"
done
if [[ "${env_delimiter}" == "|" ]]; then
    env_flag="^|^${env_flag}"
fi

# --- running and printing commands -----------------------------------------------------------

exec 3>&1 # the dry-run listing goes here, even from inside $(...)
export CLOUDSDK_CORE_DISABLE_PROMPTS=1

show() {
    local line
    line="$(printf '%q ' "$@")"
    printf '%s\n' "${line% }" >&3
}

# run CMD...: a command that changes something; a dry run prints it instead.
run() {
    if [[ "${DRY_RUN}" == 1 ]]; then
        show "$@"
        return 0
    fi
    "$@"
}

# look CMD...: a read-only look-up. A dry run prints it and reports that it found nothing (status 1).
look() {
    if [[ "${DRY_RUN}" == 1 ]]; then
        show "$@"
        return 1
    fi
    "$@"
}

# look_list CMD...: a read-only listing as JSON that must succeed; a dry run prints it and returns [].
look_list() {
    if [[ "${DRY_RUN}" == 1 ]]; then
        show "$@"
        echo "[]"
        return 0
    fi
    "$@"
}

# plan KIND: what of firestore.indexes.json is still missing, one tab-separated line each:
#   ttl CG FIELD | exempt CG FIELD | index CG SCOPE FIELD-CONFIG...
# compared with EXISTING_TTLS, EXISTING_FIELDS and EXISTING_INDEXES (gcloud's JSON listings).
plan() {
    python3 - "${INDEXES_FILE}" "$1" <<'PY'
import json, os, sys

spec_path, kind = sys.argv[1], sys.argv[2]
with open(spec_path) as f:
    spec = json.load(f)
# The file names the default collections; the service may be configured to use others.
rename = {
    "users": os.environ.get("SESSION_USERS_COLLECTION") or "users",
    "sessions": os.environ.get("SESSION_SESSIONS_COLLECTION") or "sessions",
    "login_attempts": os.environ.get("SESSION_ATTEMPTS_COLLECTION") or "login_attempts",
}


def existing(name):
    return json.loads(os.environ.get(name) or "[]") or []


def group_and_leaf(resource):  # .../collectionGroups/CG/fields/F or .../collectionGroups/CG/indexes/ID
    parts = resource.split("/")
    return parts[parts.index("collectionGroups") + 1], parts[-1]


def index_key(group, scope, fields):
    cols = []
    for field in fields:
        if field["fieldPath"] == "__name__":
            continue
        cols.append((field["fieldPath"], field.get("order"), field.get("arrayConfig")))
    return group, scope, tuple(cols)


out = []
if kind == "ttl":
    live = {group_and_leaf(f["name"]) for f in existing("EXISTING_TTLS")
            if f.get("ttlConfig", {}).get("state") in ("ACTIVE", "CREATING")}
    for o in spec.get("fieldOverrides", []):
        if o.get("ttl"):
            key = (rename.get(o["collectionGroup"], o["collectionGroup"]), o["fieldPath"])
            if key not in live:
                out.append(["ttl", *key])
elif kind == "exempt":
    done = set()
    for f in existing("EXISTING_FIELDS"):
        config = f.get("indexConfig", {})
        if not config.get("usesAncestorConfig") and not config.get("indexes"):
            done.add(group_and_leaf(f["name"]))
    for o in spec.get("fieldOverrides", []):
        if o["indexes"]:
            sys.exit(f"deploy.sh applies only exemptions (\"indexes\": []), not {o}")
        key = (rename.get(o["collectionGroup"], o["collectionGroup"]), o["fieldPath"])
        if key not in done:
            out.append(["exempt", *key])
elif kind == "index":
    have = set()
    for i in existing("EXISTING_INDEXES"):
        if i.get("state") != "NEEDS_REPAIR":
            have.add(index_key(group_and_leaf(i["name"])[0], i.get("queryScope"), i.get("fields", [])))
    for i in spec["indexes"]:
        group = rename.get(i["collectionGroup"], i["collectionGroup"])
        if index_key(group, i["queryScope"], i["fields"]) in have:
            continue
        configs = []
        for field in i["fields"]:
            config = f"field-path={field['fieldPath']}"
            if field.get("order"):
                config += f",order={field['order'].lower()}"
            if field.get("arrayConfig"):
                config += f",array-config={field['arrayConfig'].lower()}"
            configs.append(config)
        out.append(["index", group, i["queryScope"].lower().replace("_", "-"), *configs])
else:
    sys.exit(f"unknown plan kind {kind}")
for row in out:
    print("\t".join(row))
PY
}

GCLOUD_PROJECT_FLAGS=(--project="${PROJECT}")
DATABASE_FLAGS=(--database="${FIRESTORE_DATABASE}" --project="${PROJECT}")

if [[ "${DRY_RUN}" == 1 ]]; then
    note "dry run: these are the commands of a first deploy into an empty project; none is run"
fi
note "project ${PROJECT}, region ${REGION}, functions: ${FUNCTION_LIST[*]}"

# --- 1. APIs -----------------------------------------------------------------------------------

enabled="$(look gcloud services list --enabled "${GCLOUD_PROJECT_FLAGS[@]}" --format='value(config.name)')" || enabled=""
missing_apis=()
for api in "${APIS[@]}"; do
    grep -qx "${api}" <<<"${enabled}" || missing_apis+=("${api}")
done
if [[ ${#missing_apis[@]} -gt 0 ]]; then
    note "enabling ${missing_apis[*]}"
    run gcloud services enable "${missing_apis[@]}" "${GCLOUD_PROJECT_FLAGS[@]}"
fi

# --- 2. the database ---------------------------------------------------------------------------

if db_type="$(look gcloud firestore databases describe "${DATABASE_FLAGS[@]}" --format='value(type)' 2>/dev/null)"; then
    [[ "${db_type}" == "FIRESTORE_NATIVE" ]] ||
        die "database ${FIRESTORE_DATABASE} exists in mode ${db_type}; the service needs Firestore in native mode"
else
    note "creating the Firestore database ${FIRESTORE_DATABASE} in ${FIRESTORE_LOCATION}"
    run gcloud firestore databases create "${DATABASE_FLAGS[@]}" --location="${FIRESTORE_LOCATION}" \
        --type=firestore-native
fi

# --- 3. field overrides: index exemptions, then TTL policies ------------------------------------
# Each waits for its operation: Firestore runs one field operation at a time per field.

EXISTING_FIELDS="$(look_list gcloud firestore indexes fields list "${DATABASE_FLAGS[@]}" --format=json)"
EXISTING_TTLS="$(look_list gcloud firestore fields ttls list "${DATABASE_FLAGS[@]}" --format=json)"
EXISTING_INDEXES="$(look_list gcloud firestore indexes composite list "${DATABASE_FLAGS[@]}" --format=json)"
export EXISTING_FIELDS EXISTING_TTLS EXISTING_INDEXES

exemptions="$(plan exempt)"
while IFS=$'\t' read -r _ group field; do
    [[ -n "${field:-}" ]] || continue
    note "exempting ${group}.${field} from single-field indexing"
    run gcloud firestore indexes fields update "${field}" --collection-group="${group}" --disable-indexes \
        "${DATABASE_FLAGS[@]}"
done <<<"${exemptions}"

ttls="$(plan ttl)"
while IFS=$'\t' read -r _ group field; do
    [[ -n "${field:-}" ]] || continue
    note "enabling the TTL policy on ${group}.${field}"
    run gcloud firestore fields ttls update "${field}" --collection-group="${group}" --enable-ttl \
        "${DATABASE_FLAGS[@]}"
done <<<"${ttls}"

# --- 4. composite indexes (built in the background; queries that need one fail until it is READY) ---

indexes="$(plan index)"
while IFS=$'\t' read -r -a row; do
    [[ ${#row[@]} -ge 4 ]] || continue
    field_flags=()
    for config in "${row[@]:3}"; do
        field_flags+=(--field-config="${config}")
    done
    note "creating a composite index on ${row[1]}"
    run gcloud firestore indexes composite create --collection-group="${row[1]}" --query-scope="${row[2]}" \
        "${field_flags[@]}" "${DATABASE_FLAGS[@]}" --async
done <<<"${indexes}"

# --- 5. the runtime service account --------------------------------------------------------------

if [[ "${CREATE_SERVICE_ACCOUNT}" == 1 ]]; then
    if ! look gcloud iam service-accounts describe "${SERVICE_ACCOUNT}" "${GCLOUD_PROJECT_FLAGS[@]}" \
        --format='value(email)' >/dev/null 2>&1; then
        note "creating the service account ${SERVICE_ACCOUNT}"
        run gcloud iam service-accounts create "${SERVICE_ACCOUNT_NAME}" "${GCLOUD_PROJECT_FLAGS[@]}" \
            --display-name="Session service functions"
    fi
    member="serviceAccount:${SERVICE_ACCOUNT}"
    # The condition Firestore documents for access to one database (firebase.google.com/docs/firestore/security/iam).
    database_expression="resource.name==\"projects/${PROJECT}/databases/${FIRESTORE_DATABASE}\""
    granted="$(look gcloud projects get-iam-policy "${PROJECT}" --flatten='bindings[].members' \
        --format='value(bindings.role,bindings.members,bindings.condition.expression)')" || granted=""
    if ! grep -qxF "${DATABASE_ROLE}"$'\t'"${member}"$'\t'"${database_expression}" <<<"${granted}"; then
        note "granting ${DATABASE_ROLE} on the database ${FIRESTORE_DATABASE} to ${SERVICE_ACCOUNT}"
        # A new account takes a few seconds to become visible to IAM.
        for attempt in 1 2 3 4 5 6; do
            if run gcloud projects add-iam-policy-binding "${PROJECT}" --member="${member}" --role="${DATABASE_ROLE}" \
                --condition="expression=${database_expression},title=session-service-database,description=Only the database of the session service" \
                >/dev/null; then
                break
            fi
            [[ "${attempt}" -lt 6 ]] || die "could not grant ${DATABASE_ROLE} to ${SERVICE_ACCOUNT}"
            sleep 10
        done
    fi
    for role in "${LEGACY_GRANTS[@]}"; do
        # An unconditional grant (no expression) of an earlier deploy: wider than the service needs.
        if grep -qxF "${role}"$'\t'"${member}"$'\t' <<<"${granted}" || grep -qxF "${role}"$'\t'"${member}" <<<"${granted}"; then
            note "taking back ${role} on the whole project from ${SERVICE_ACCOUNT}"
            run gcloud projects remove-iam-policy-binding "${PROJECT}" --member="${member}" --role="${role}" \
                --condition=None >/dev/null
        fi
    done
fi

# --- 6. the events topic (SESSION_EVENTS_TOPIC) ---------------------------------------------------

if [[ -n "${EVENTS_TOPIC}" ]]; then
    TOPIC_FLAGS=(--project="${TOPIC_PROJECT}")
    if ! look gcloud pubsub topics describe "${TOPIC_ID}" "${TOPIC_FLAGS[@]}" --format='value(name)' >/dev/null 2>&1; then
        note "creating the Pub/Sub topic ${TOPIC_ID} in ${TOPIC_PROJECT}"
        run gcloud pubsub topics create "${TOPIC_ID}" "${TOPIC_FLAGS[@]}"
    fi
    if [[ "${CREATE_SERVICE_ACCOUNT}" == 1 ]]; then
        # Adding a binding that exists changes nothing, so a re-run may add it again.
        note "granting ${TOPIC_ROLE} on the topic ${TOPIC_ID} to ${SERVICE_ACCOUNT}"
        run gcloud pubsub topics add-iam-policy-binding "${TOPIC_ID}" "${TOPIC_FLAGS[@]}" \
            --member="serviceAccount:${SERVICE_ACCOUNT}" --role="${TOPIC_ROLE}" >/dev/null
    else
        note "the given service account ${SERVICE_ACCOUNT} needs ${TOPIC_ROLE} on ${TOPIC_ID} to publish events"
    fi
fi

# --- 7. the functions ----------------------------------------------------------------------------

# A function's name is its entry point with "-" for "_" (Cloud Run functions names allow no underscore).
for fn in "${FUNCTION_LIST[@]}"; do
    note "deploying ${fn//_/-}"
    run gcloud functions deploy "${fn//_/-}" --gen2 "${GCLOUD_PROJECT_FLAGS[@]}" --region="${REGION}" \
        --runtime="${RUNTIME}" --source="${ROOT}" --entry-point="${fn}" --trigger-http --allow-unauthenticated \
        --service-account="${SERVICE_ACCOUNT}" --memory="${MEMORY}" --cpu="${CPU}" \
        --min-instances="${MIN_INSTANCES}" --max-instances="${MAX_INSTANCES}" --concurrency="${CONCURRENCY}" \
        --set-env-vars="${env_flag}"
done

note "URLs:"
for fn in "${FUNCTION_LIST[@]}"; do
    if url="$(look gcloud functions describe "${fn//_/-}" --gen2 "${GCLOUD_PROJECT_FLAGS[@]}" --region="${REGION}" \
        --format='value(serviceConfig.uri)')"; then
        printf '%-16s %s\n' "${fn//_/-}" "${url}"
    fi
done
