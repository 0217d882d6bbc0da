"""What each setting means: the text of docs/configuration.md, by Settings field (``make docs``)."""

from __future__ import annotations

DESCRIPTIONS: dict[str, str] = {
    "project": (
        "The Google Cloud project of Firestore, and the project in log trace names (`make run`: `demo-session-local`)."
    ),
    "emulator_host": "`host:port` of a Firestore emulator; no credentials are needed then. Unset: the real Firestore.",
    "pubsub_emulator_host": (
        "`host:port` of a Pub/Sub emulator (the tests): the security events' publisher connects there, "
        "without credentials."
    ),
    "database": (
        "The Firestore database id: `(default)`, or 4 to 63 of `a-z 0-9 -`, starting with a letter and not "
        "ending with `-`."
    ),
    "port": "The port `make run` serves on (always bound to 127.0.0.1).",
    "users_collection": (
        "The collection of user documents. Collection names are 1 to 100 of `A-Z a-z 0-9 _ -`, not of the "
        "form `__name__`, and the three must differ."
    ),
    "sessions_collection": "The collection of session documents.",
    "attempts_collection": "The collection of failed-login counters.",
    "ttl_seconds": (
        "Absolute session lifetime in seconds (fractions allowed); at most 400 days, the longest a browser "
        "keeps a cookie. The default follows NIST SP 800-63B-4 for AAL2: reauthentication at least every 24 "
        "hours."
    ),
    "idle_seconds": (
        "Idle timeout: a session unused this long ends. Unset: 3600, or the lifetime if shorter; at most "
        "`SESSION_TTL_SECONDS`. The default follows NIST SP 800-63B-4 for AAL2: an inactivity timeout of at "
        "most 1 hour."
    ),
    "touch_seconds": (
        "At most one idle-deadline write per session per this many seconds. Unset: 60, or half the idle "
        "timeout if shorter; less than `SESSION_IDLE_SECONDS`."
    ),
    "allow_registration": (
        "`false` makes `POST /register` answer 403 `registration_disabled` (the admin CLI can still create users)."
    ),
    "default_permissions": "Comma-separated permissions given to new users (each 1 to 64 of `A-Z a-z 0-9 : . _ -`).",
    "cookie_name": (
        "The session cookie's name, 1 to 64 of `A-Z a-z 0-9 _ -`; keep `__session` behind Firebase Hosting "
        "(the one cookie it forwards)."
    ),
    "cookie_secure": (
        "The `Secure` cookie attribute (browsers accept it on `http://localhost` too). `deploy.sh` refuses `false`."
    ),
    "allowed_origins": (
        "Comma-separated origins (`https://app.example.com`) granted CORS and allowed to make "
        "cookie-authenticated changes (CSRF). `make run` sets its own origins when unset."
    ),
    "page_api_origin": (
        "The origin (`https://api.example.com`) the page at `/` sends its requests to; the server writes it "
        "into the page and its Content-Security-Policy, and no URL parameter can change it. Unset: the page's"
        " own origin."
    ),
    "login_max_failures": (
        "Failed logins per username within the window before lockout (429 `too_many_attempts`, even for the "
        "right password)."
    ),
    "login_window_seconds": "The lockout window, from the first failure.",
    "device_cookie_days": (
        "How long a browser stays trusted after its last successful login (the device cookie's `Max-Age`, "
        "renewed by each login from it)."
    ),
    "device_max_failures": (
        "Failed logins per window from one trusted browser (one presenting the user's device cookie) before "
        "that browser is locked out; its own counter, not the username's. Unset: "
        "`SESSION_LOGIN_MAX_FAILURES`."
    ),
    "max_devices_per_user": (
        "The most trusted devices (device cookies) one user may have; a login from a new browser past it ends"
        " the trust of the least recently used."
    ),
    "address_max_failures": (
        "Failed logins per client address per window, across all usernames (credential stuffing from one "
        "address); 0 turns it off. Turn it on only with a client address you can trust "
        "(`SESSION_CLIENT_IP_HEADER`)."
    ),
    "address_window_seconds": "The per-address window, from the first failure.",
    "client_ip_header": (
        "The header a trusted proxy appends the client address to (`X-Forwarded-For` on Cloud Functions). "
        "Unset: the connection's peer address, and no header is believed."
    ),
    "client_ip_hops": (
        "Which entry of `SESSION_CLIENT_IP_HEADER`, counted from the right, the trusted proxy wrote: 1 for "
        "Cloud Functions or Cloud Run called directly, 2 or more behind an external Application Load "
        "Balancer."
    ),
    "client_geo_header": (
        "The header a trusted proxy writes the client's place into (a load balancer's custom header such as "
        "`X-Client-Geo-Location`), for the security events (issue 22). Unset: no place is recorded, and no "
        "header is believed."
    ),
    "max_sessions_per_user": (
        "The most sessions one user may have at once; a login beyond it ends the user's least recently used "
        "session. 0: no cap."
    ),
    "reauth_seconds": (
        "How recently the password must have been proved in a session (its `auth_time`) for a new email, "
        "listing or revoking other sessions, and revoke-all (ASVS 7.5.1, 7.5.2); else 403 "
        "`reauthentication_required`."
    ),
    "events_topic": (
        "The Pub/Sub topic for security events (issue 22): a topic id in the project, or "
        "`projects/P/topics/T`. Validated and read by `deploy.sh`; the service does not emit events yet."
    ),
    "events_days": "How long an account's security events are kept (their TTL), in days (issue 22).",
    "firestore_timeout_seconds": (
        "The deadline of every Firestore call, retries included; past it the request answers 503 `service_unavailable`."
    ),
    "argon2_time_cost": "argon2id iterations; 2 is OWASP's minimum.",
    "argon2_memory_kib": (
        "argon2id memory in KiB, held by each hashing thread (one per CPU) while it works; 19456 (19 MiB) is "
        "OWASP's minimum."
    ),
    "argon2_parallelism": "argon2id lanes.",
    "log_level": "`DEBUG`, `INFO`, `WARNING` or `ERROR`.",
    "log_format": (
        "`json`: one structured line per record, for Cloud Logging; `text`: one readable line (`make run` in "
        "a terminal uses `text`)."
    ),
    "cache_seconds": (
        "The consistency dial: 0 reads Firestore on every session check; N > 0 lets an instance accept a "
        'session it read within the last N seconds without reading again (docs/security.md, "Bounded '
        'staleness").'
    ),
    "cache_size": (
        "The most sessions one instance keeps for `SESSION_CACHE_SECONDS` (least recently used out first). "
        "Each entry is about 4 KiB (5.5 KiB with a 512-character user agent, a full profile and 10 "
        "permissions), so the default holds at most about 40 to 55 MiB."
    ),
    "dbsc": (
        "Device Bound Session Credentials for cookie sessions: `on` offers every new session cookie for binding to "
        "the browser's key (`Secure-Session-Registration`), and a bound session then needs its short-lived bound "
        "cookie on every request. Browsers without DBSC keep today's behaviour. `off` again accepts bound sessions "
        "with the session cookie alone. Not behind Firebase Hosting (only `__session` reaches the function): "
        "docs/dbsc.md."
    ),
    "dbsc_cookie_seconds": (
        "The lifetime of a bound session's short-lived cookie, after which the browser must prove its key "
        "again: a stolen copy of the cookies works at most this long. Each refresh costs two requests, two "
        "reads and two writes; Chromium signs at most 6 times per 9 minutes per site, so keep it well above 90 "
        "(docs/dbsc.md)."
    ),
}
