"""Django settings for Keyward, read from the environment (see README: Configuration).

With no configuration at all the service runs on its embedded default: SQLite and the local
secret store in a data directory, secrets generated there, a broker that needs no server.
`KEYWARD_PRODUCTION=true` turns every such convenience into a start-up error instead.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from audit import note
from settings.env import (
    REGION_NAME,
    Env,
    generated_secret,
    http_endpoint,
    parse_ring,
    s3_location,
    warn,
)
from settings.oidc import oidc_settings
from tenants.sso import SsoPolicy
from tenants.validators import SLUG_PATTERN

BASE_DIR = Path(__file__).resolve().parent.parent
env = Env()

PRODUCTION = env.flag("KEYWARD_PRODUCTION", False)
DEBUG = env.flag("KEYWARD_DEBUG", False)
DATA_DIR = Path(env.text("KEYWARD_DATA_DIR", str(BASE_DIR / "var"))).resolve()
# prometheus_client's multiprocess mode: every process writes its samples under this
# directory, and reads where from the environment when it is first imported (core.metrics,
# imported only after the settings).
METRICS_DIR = Path(env.text("KEYWARD_METRICS_DIR", str(DATA_DIR / "metrics"))).resolve()
try:
    METRICS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
except OSError as exc:
    raise ImproperlyConfigured(
        f"KEYWARD_METRICS_DIR: cannot create {METRICS_DIR} ({exc})"
    ) from None
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
# A Celery worker serves its own processes' counters on this port (0: it does not), for a
# deployment where workers share no metrics directory with a web server.
WORKER_METRICS_PORT = env.number("KEYWARD_WORKER_METRICS_PORT", 0, minimum=0, maximum=65535)

_database_url = env.secret("KEYWARD_DATABASE_URL")
_embedded_parts: list[str] = []


def _secret_or_generated(name: str, filename: str, factory: str = "token") -> str:
    value = env.secret(name)
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"{name}: required when KEYWARD_PRODUCTION is true")
    _embedded_parts.append(name)
    return generated_secret(DATA_DIR, filename, factory)


SECRET_KEY = _secret_or_generated("KEYWARD_SECRET_KEY", "django-secret-key")
PEPPERS = parse_ring(
    "KEYWARD_PEPPERS",
    _secret_or_generated("KEYWARD_PEPPERS", "peppers", "ring"),
    min_bytes=32,
    decode=False,
)
AUDIT_HMAC_KEY = _secret_or_generated("KEYWARD_AUDIT_HMAC_KEY", "audit-hmac-key").encode()
# The longest an event waits before the sequencer integrates it into its chain.
AUDIT_MERGE_DELAY_MS = env.number("KEYWARD_AUDIT_MERGE_DELAY_MS", 1000, minimum=50, maximum=60000)
# Names this deployment's audit log in its signed checkpoints (each chain's origin is this,
# a slash and the chain) and names its signing key: a schema-less URL by convention.
DEFAULT_ORIGIN = "localhost/keyward-audit"
AUDIT_ORIGIN = env.text("KEYWARD_AUDIT_ORIGIN", DEFAULT_ORIGIN)
if not AUDIT_ORIGIN.isprintable() or any(c.isspace() or c == "+" for c in AUDIT_ORIGIN):
    raise ImproperlyConfigured("KEYWARD_AUDIT_ORIGIN: no spaces, plus signs or control characters")
# Where the latest signed checkpoint of each chain is kept, outside the database: this
# directory when set, else the S3 bucket below when set, else Vault's KV under the vault
# store, else DATA_DIR/audit-checkpoints.
AUDIT_CHECKPOINT_DIR = env.text("KEYWARD_AUDIT_CHECKPOINT_DIR")


def _checkpoint_bucket() -> dict[str, Any]:
    """The S3-compatible bucket that keeps the checkpoints (empty when
    KEYWARD_AUDIT_CHECKPOINT_S3_URL is not set): auditor.archive.S3Location's fields."""
    url = env.text("KEYWARD_AUDIT_CHECKPOINT_S3_URL")
    options: dict[str, Any] = {
        "endpoint": http_endpoint(
            "KEYWARD_AUDIT_CHECKPOINT_S3_ENDPOINT", env.text("KEYWARD_AUDIT_CHECKPOINT_S3_ENDPOINT")
        ),
        "region": env.text("KEYWARD_AUDIT_CHECKPOINT_S3_REGION"),
        "access_key_id": env.text("KEYWARD_AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID"),
        "secret_access_key": env.secret("KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY") or "",
        "ca_cert": env.text("KEYWARD_AUDIT_CHECKPOINT_S3_CACERT"),
    }
    timeout = env.number("KEYWARD_AUDIT_CHECKPOINT_S3_TIMEOUT_MS", 5000, minimum=100, maximum=60000)
    if not url:
        # A misspelt URL variable would otherwise leave the checkpoints on local disk.
        if any(options.values()):
            raise ImproperlyConfigured(
                "KEYWARD_AUDIT_CHECKPOINT_S3_URL: required by the other "
                "KEYWARD_AUDIT_CHECKPOINT_S3_* variables that are set"
            )
        return {}
    if bool(options["access_key_id"]) != bool(options["secret_access_key"]):
        raise ImproperlyConfigured(
            "KEYWARD_AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID and _SECRET_ACCESS_KEY: set both, or "
            "neither to use the AWS SDK's own credentials (web identity, instance role)"
        )
    if options["region"] and not REGION_NAME.fullmatch(options["region"]):
        raise ImproperlyConfigured("KEYWARD_AUDIT_CHECKPOINT_S3_REGION: not a region name")
    bucket, prefix = s3_location("KEYWARD_AUDIT_CHECKPOINT_S3_URL", url)
    return {"bucket": bucket, "prefix": prefix, "timeout": timeout / 1000, **options}


AUDIT_CHECKPOINT_S3 = _checkpoint_bucket()
if AUDIT_CHECKPOINT_DIR and AUDIT_CHECKPOINT_S3:
    raise ImproperlyConfigured(
        "KEYWARD_AUDIT_CHECKPOINT_DIR and KEYWARD_AUDIT_CHECKPOINT_S3_URL: set one, not both"
    )
# Witnesses (c2sp.org/tlog-witness) each new checkpoint is submitted to: "<verifier key>
# <URL prefix>" pairs, comma-separated; and how many cosignatures verification requires.

MAX_WITNESSES = 32  # each adds a line to every checkpoint; notes carry at most 64


def _witnesses(entries: list[str]) -> list[tuple[str, str]]:
    """Each witness's cosigner key and URL prefix, refused unless well-formed and distinct."""
    pairs = [tuple(entry.split()) for entry in entries]
    if len(pairs) > MAX_WITNESSES:
        raise ImproperlyConfigured(f"KEYWARD_AUDIT_WITNESSES: at most {MAX_WITNESSES} witnesses")
    names, publics = [], []
    for pair in pairs:
        if len(pair) != 2 or not pair[1].startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                "KEYWARD_AUDIT_WITNESSES: expected '<verifier key> <http(s) URL prefix>' "
                "pairs, comma-separated"
            )
        try:
            key = note.Verifier.parse(pair[0])
        except note.NoteError as exc:
            raise ImproperlyConfigured(f"KEYWARD_AUDIT_WITNESSES: {exc}") from None
        if key.kind != note.COSIGNATURE_V1:
            raise ImproperlyConfigured(f"KEYWARD_AUDIT_WITNESSES: {key.name} is no cosigner key")
        if key.name == AUDIT_ORIGIN:
            raise ImproperlyConfigured("KEYWARD_AUDIT_WITNESSES: a witness is named as the log")
        names.append(key.name)
        publics.append(key.public_key)
    if len(set(names)) != len(names) or len(set(publics)) != len(publics):
        raise ImproperlyConfigured(
            "KEYWARD_AUDIT_WITNESSES: a witness is named twice, or two share a key"
        )
    if pairs and AUDIT_ORIGIN == DEFAULT_ORIGIN:
        raise ImproperlyConfigured(
            "KEYWARD_AUDIT_ORIGIN: witnesses need a name of this deployment's own, "
            f"not the default {DEFAULT_ORIGIN}"
        )
    return [(key, url) for key, url in pairs]


AUDIT_WITNESSES = _witnesses(env.csv("KEYWARD_AUDIT_WITNESSES"))
AUDIT_WITNESS_QUORUM = env.number(
    "KEYWARD_AUDIT_WITNESS_QUORUM", 0, minimum=0, maximum=len(AUDIT_WITNESSES)
)
AUDIT_WITNESS_TIMEOUT_MS = env.number(
    "KEYWARD_AUDIT_WITNESS_TIMEOUT_MS", 5000, minimum=100, maximum=60000
)
SECRET_STORE = env.choice("KEYWARD_SECRET_STORE", ("local", "vault"), "local")


def _vault_store() -> dict[str, Any]:
    auth = env.choice("KEYWARD_VAULT_AUTH", ("token", "approle", "kubernetes"), "token")
    store: dict[str, Any] = {
        "backend": "vault",
        "addr": env.text("KEYWARD_VAULT_ADDR"),
        "auth": auth,
        "token": env.secret("KEYWARD_VAULT_TOKEN") or "",
        "role_id": env.text("KEYWARD_VAULT_ROLE_ID"),
        "secret_id": env.secret("KEYWARD_VAULT_SECRET_ID") or "",
        "approle_mount": env.text("KEYWARD_VAULT_APPROLE_MOUNT", "approle"),
        "k8s_role": env.text("KEYWARD_VAULT_K8S_ROLE"),
        "k8s_jwt_path": env.text(
            "KEYWARD_VAULT_K8S_JWT_PATH", "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ),
        "k8s_mount": env.text("KEYWARD_VAULT_K8S_MOUNT", "kubernetes"),
        "namespace": env.text("KEYWARD_VAULT_NAMESPACE"),
        "ca_cert": env.text("KEYWARD_VAULT_CACERT"),
        "kv_mount": env.text("KEYWARD_VAULT_KV_MOUNT", "secret"),
        "transit_mount": env.text("KEYWARD_VAULT_TRANSIT_MOUNT", "transit"),
        "path_prefix": env.text("KEYWARD_VAULT_PATH_PREFIX", "keyward"),
        "timeout": env.number("KEYWARD_VAULT_TIMEOUT_MS", 5000, minimum=100) / 1000,
    }
    needed = {"token": ("token",), "approle": ("role_id", "secret_id"), "kubernetes": ("k8s_role",)}
    for field in ("addr", *needed[auth]):
        if not store[field]:
            variable = {
                "addr": "KEYWARD_VAULT_ADDR",
                "token": "KEYWARD_VAULT_TOKEN",
                "role_id": "KEYWARD_VAULT_ROLE_ID",
                "secret_id": "KEYWARD_VAULT_SECRET_ID",
                "k8s_role": "KEYWARD_VAULT_K8S_ROLE",
            }[field]
            raise ImproperlyConfigured(
                f"{variable}: required when the vault store uses {auth} auth"
            )
    return store


def _extra_stores() -> dict[str, dict[str, Any]]:
    raw = env.secret("KEYWARD_SECRET_STORES")
    if not raw:
        return {}
    try:
        stores = json.loads(raw)
    except ValueError:
        raise ImproperlyConfigured("KEYWARD_SECRET_STORES: not valid JSON") from None
    if not isinstance(stores, dict) or not all(
        isinstance(v, dict) and v.get("backend") in ("local", "vault") for v in stores.values()
    ):
        raise ImproperlyConfigured(
            'KEYWARD_SECRET_STORES: expected {"name": {"backend": "vault", "addr": ...}, ...}'
        )
    if "default" in stores:
        raise ImproperlyConfigured(
            "KEYWARD_SECRET_STORES: 'default' is set by KEYWARD_SECRET_STORE"
        )
    return stores


SECRET_STORES: dict[str, dict[str, Any]] = {
    "default": _vault_store() if SECRET_STORE == "vault" else {"backend": "local"},
    **_extra_stores(),
}
# The region of the default store; each entry of KEYWARD_SECRET_STORES may name its own
# ("region"). A store that names none is a region of its own.
SECRET_STORE_REGION = env.text("KEYWARD_SECRET_STORE_REGION")
if SECRET_STORE_REGION:
    SECRET_STORES["default"]["region"] = SECRET_STORE_REGION
if not all(
    isinstance(store.get("region", ""), str) and len(store.get("region", "")) <= 63
    for store in SECRET_STORES.values()
):
    raise ImproperlyConfigured("KEYWARD_SECRET_STORES: a region is a name of up to 63 characters")
MASTER_KEYS: dict[int, bytes] = {}
if any(store["backend"] == "local" for store in SECRET_STORES.values()):
    MASTER_KEYS = parse_ring(
        "KEYWARD_MASTER_KEYS",
        _secret_or_generated("KEYWARD_MASTER_KEYS", "master-keys", "ring-key32"),
        min_bytes=32,
        decode=True,
    )

if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured("KEYWARD_DEBUG: must be false when KEYWARD_PRODUCTION is true")
    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured("KEYWARD_SECRET_KEY: use at least 50 random characters")
    if not _database_url:
        raise ImproperlyConfigured("KEYWARD_DATABASE_URL: required when KEYWARD_PRODUCTION is true")
    if not env.csv("KEYWARD_ALLOWED_HOSTS"):
        raise ImproperlyConfigured(
            "KEYWARD_ALLOWED_HOSTS: required when KEYWARD_PRODUCTION is true"
        )

ALLOWED_HOSTS = env.csv("KEYWARD_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.csv("KEYWARD_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "audit",
    "stores",
    "notify",
    "tenants",
    "kms",
    "auditor",
    "api",
    "console",
    "ops",
]

# What a bearer-token JSON API needs, and no more: the API reads and sets no cookie, so no
# session, CSRF or session-authentication middleware runs here; the console's views bring
# their own (console.security).
MIDDLEWARE = [
    "api.observe.RequestMetricsMiddleware",
    "api.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "api.middleware.RequestLineMiddleware",
    "api.middleware.BodySizeLimitMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "settings.urls"
WSGI_APPLICATION = "settings.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ],
        },
    },
]


def _databases() -> dict[str, Any]:
    if _database_url:
        scheme = _database_url.partition("://")[0]
        if scheme not in ("postgres", "postgresql", "pgsql", "sqlite"):
            raise ImproperlyConfigured(
                "KEYWARD_DATABASE_URL: use a postgres://... (or sqlite:///...) URL"
            )
        try:
            config: dict[str, Any] = environ.Env.db_url_config(_database_url)
        except Exception:
            raise ImproperlyConfigured("KEYWARD_DATABASE_URL: not a valid database URL") from None
        if not config.get("ENGINE"):
            raise ImproperlyConfigured("KEYWARD_DATABASE_URL: unsupported database scheme")
        config["CONN_MAX_AGE"] = env.number("KEYWARD_DB_CONN_MAX_AGE", 60)
        # Off by default: a health check is one more round trip on every request. A
        # connection that broke while idle fails one request with 503 and is replaced.
        config["CONN_HEALTH_CHECKS"] = env.flag("KEYWARD_DB_HEALTH_CHECKS", False)
        if config["ENGINE"].endswith("postgresql") and env.flag(
            "KEYWARD_DB_PREPARED_STATEMENTS", True
        ):
            # Server-side binding lets psycopg prepare the statements a connection repeats
            # (after 5 executions); turn it off behind a transaction-pooling PgBouncer.
            config.setdefault("OPTIONS", {}).update(
                {"server_side_binding": True, "prepare_threshold": 5}
            )
        return {"default": config}
    _embedded_parts.append("KEYWARD_DATABASE_URL")
    DATA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "keyward.sqlite3"),
            # IMMEDIATE takes the write lock at BEGIN, which serialises audit-chain appends
            # between the web server and the worker sharing one file.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # Tests use a file too (not Django's shared in-memory database), so that
            # threads and other processes see the same locking as the service.
            "TEST": {"NAME": str(DATA_DIR / "test-keyward.sqlite3")},
        }
    }


DATABASES = _databases()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DB_APP_ROLE = env.text("KEYWARD_DB_APP_ROLE")

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.text("KEYWARD_STATIC_ROOT", str(DATA_DIR / "static")))
with contextlib.suppress(OSError):  # a read-only image serves collected files from elsewhere
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "no-referrer"
X_FRAME_OPTIONS = "DENY"
# Only the console (/console/) reads or sets cookies: its session and CSRF middleware run
# on its views alone (console.security), and the cookies are scoped to its path.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = PRODUCTION
SESSION_COOKIE_SAMESITE = "Strict"
SESSION_COOKIE_PATH = "/console/"
SESSION_COOKIE_NAME = "keyward_session"
SESSION_COOKIE_AGE = env.number(
    "KEYWARD_CONSOLE_SESSION_SECONDS", 28800, minimum=60, maximum=604800
)
CSRF_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"
CSRF_COOKIE_PATH = "/console/"
CSRF_COOKIE_NAME = "keyward_csrf"
CSRF_FAILURE_VIEW = "console.views.signin.csrf_failure"
LOGIN_URL = "/console/login/"
# Single sign-on to the console over OpenID Connect (settings/oidc.py), off unless
# configured; mozilla-django-oidc reads the OIDC_* names. The claims policy is OIDC_POLICY.
_oidc = oidc_settings(env, production=PRODUCTION)
OIDC_POLICY: SsoPolicy | None = _oidc["OIDC_POLICY"]
OIDC_ISSUER: str = _oidc.get("OIDC_ISSUER", "")
OIDC_RP_CLIENT_ID: str = _oidc["OIDC_RP_CLIENT_ID"]
OIDC_RP_CLIENT_SECRET: str = _oidc["OIDC_RP_CLIENT_SECRET"]
OIDC_RP_SCOPES: str = _oidc.get("OIDC_RP_SCOPES", "openid")
OIDC_OP_AUTHORIZATION_ENDPOINT: str = _oidc["OIDC_OP_AUTHORIZATION_ENDPOINT"]
OIDC_OP_TOKEN_ENDPOINT: str = _oidc["OIDC_OP_TOKEN_ENDPOINT"]
OIDC_OP_USER_ENDPOINT: str = _oidc["OIDC_OP_USER_ENDPOINT"]
OIDC_OP_JWKS_ENDPOINT: str = _oidc["OIDC_OP_JWKS_ENDPOINT"]
# ID tokens signed with the provider's published keys only; state, nonce and PKCE on.
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_NONCE = True
OIDC_USE_PKCE = True
OIDC_TIMEOUT = 10
OIDC_STORE_ACCESS_TOKEN = False
OIDC_STORE_ID_TOKEN = False
OIDC_AUTHENTICATION_CALLBACK_URL = "console:oidc_callback"
LOGIN_REDIRECT_URL = "/console/"
LOGIN_REDIRECT_URL_FAILURE = "/console/login/"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "console.oidc.SsoBackend",
]
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.flag("KEYWARD_BEHIND_TLS_PROXY", False) else None
)
# Sent on HTTPS answers only (the TLS terminator's, with KEYWARD_BEHIND_TLS_PROXY).
SECURE_HSTS_SECONDS = env.number("KEYWARD_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.flag("KEYWARD_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env.flag("KEYWARD_HSTS_PRELOAD", False)
# TLS usually ends at the load balancer, and in-cluster callers and probes speak plain
# HTTP to the pod; a deployment that serves TLS itself turns the redirect on.
SECURE_SSL_REDIRECT = env.flag("KEYWARD_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# `manage.py check --deploy` warnings that do not apply, each for its reason:
SILENCED_SYSTEM_CHECKS = [
    # The API reads and sets no cookie (see MIDDLEWARE); the console's views are each
    # protected by CsrfViewMiddleware themselves (console.security).
    "security.W003",
    # Preloading commits the whole registered domain: its owner's decision, not a default.
    *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
    # Redirecting is the TLS terminator's job unless KEYWARD_SSL_REDIRECT says otherwise.
    *([] if SECURE_SSL_REDIRECT else ["security.W008"]),
]

MAX_BODY_BYTES = env.number("KEYWARD_MAX_BODY_BYTES", 65536, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES
TRUSTED_PROXY_COUNT = env.number("KEYWARD_TRUSTED_PROXY_COUNT", 0, maximum=10)
CREDENTIAL_LAST_USED_INTERVAL = 60

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.BearerAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Keyward API",
    "DESCRIPTION": "Key management for bring-your-own-key AI products.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Stable names for choice sets that share a field name ("status").
    "ENUM_NAME_OVERRIDES": {
        "TenantStatusEnum": "tenants.models.TenantStatus",
        "KeyStatusEnum": "kms.models.KeyStatus",
    },
    "PATH_CONVERTER_OVERRIDES": {
        "tenant_slug": {"type": "string", "pattern": SLUG_PATTERN.replace("\\Z", "$")},
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_plain_views",
        "api.schema.add_error_responses",
        "api.schema.add_links",
    ],
}

CELERY_BROKER_URL = env.secret("KEYWARD_BROKER_URL") or ""
# How long a delivered, unacknowledged message waits before Redis hands it to another worker
# (a worker killed mid-task). Every countdown and retry stays below it (JOB_MAX_COUNTDOWN),
# so no message is ever delivered twice for waiting.
BROKER_VISIBILITY_TIMEOUT = env.number("KEYWARD_BROKER_VISIBILITY_TIMEOUT", 300, minimum=2)
JOB_MAX_COUNTDOWN = max(1, BROKER_VISIBILITY_TIMEOUT * 4 // 5)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {}
if not CELERY_BROKER_URL:
    if PRODUCTION:
        raise ImproperlyConfigured("KEYWARD_BROKER_URL: required when KEYWARD_PRODUCTION is true")
    _embedded_parts.append("KEYWARD_BROKER_URL")
    _queue_dir = DATA_DIR / "broker"
    _queue_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(DATA_DIR / "broker-control"),
        "store_processed": False,
    }
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # An unacknowledged task (its worker died) is handed out again after this many seconds.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": BROKER_VISIBILITY_TIMEOUT}
CELERY_TASK_DEFAULT_QUEUE = env.text("KEYWARD_CELERY_QUEUE", "keyward")
# Publishing must not hang a request when the broker is down: webhook deliveries are kept
# in the database and re-sent by a periodic sweep, so a failed publish loses nothing.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# The worker's lines go through LOGGING (format, request id, no exception text) too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
_webhooks = env.secret("KEYWARD_WEBHOOKS")
try:
    WEBHOOKS: list[dict[str, Any]] = json.loads(_webhooks) if _webhooks else []
except ValueError:
    raise ImproperlyConfigured("KEYWARD_WEBHOOKS: not valid JSON") from None
if not isinstance(WEBHOOKS, list) or not all(
    isinstance(h, dict) and isinstance(h.get("url"), str) and len(str(h.get("secret", ""))) >= 16
    for h in WEBHOOKS
):
    raise ImproperlyConfigured(
        'KEYWARD_WEBHOOKS: expected [{"url": "https://...", "secret": "<16+ chars>", '
        '"events": [...]}]'
    )
WEBHOOK_SWEEP_AFTER_SECONDS = env.number("KEYWARD_WEBHOOK_SWEEP_AFTER_SECONDS", 60)
WEBHOOK_MAX_ATTEMPTS = env.number("KEYWARD_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
WEBHOOK_TIMEOUT_SECONDS = env.number("KEYWARD_WEBHOOK_TIMEOUT_SECONDS", 5, minimum=1, maximum=60)
# The egress policy of webhook posts, on its own allowlist: receivers are often internal.
WEBHOOK_URL_POLICY = env.choice(
    "KEYWARD_WEBHOOK_URL_POLICY", ("strict", "open"), "strict" if PRODUCTION else "open"
)
WEBHOOK_URL_ALLOWLIST = env.csv("KEYWARD_WEBHOOK_URL_ALLOWLIST")
JOB_RETRY_BASE_SECONDS = env.number("KEYWARD_JOB_RETRY_BASE_SECONDS", 30, minimum=1)
KEY_CHECKS_PER_PROVIDER_PER_MINUTE = env.number(
    "KEYWARD_KEY_CHECKS_PER_PROVIDER_PER_MINUTE", 60, minimum=1
)
# 0: insufficient_permissions never changes a key's status; N: N in a row mark it invalid.
INVALID_AFTER_PERMISSION_FAILURES = env.number("KEYWARD_INVALID_AFTER_PERMISSION_FAILURES", 0)
KEY_CHECK_INTERVAL = env.number("KEYWARD_KEY_CHECK_INTERVAL", 6 * 3600, minimum=1)
_SCHEDULE = {
    # task name: (environment variable, default seconds); 0 turns an entry off
    "keyward.kms.schedule_key_checks": ("KEYWARD_SCHEDULE_KEY_CHECKS", 60),
    "keyward.kms.retire_versions": ("KEYWARD_SCHEDULE_RETIRE_VERSIONS", 300),
    "keyward.kms.resume_rotations": ("KEYWARD_SCHEDULE_RESUME_ROTATIONS", 60),
    "keyward.kms.resume_moves": ("KEYWARD_SCHEDULE_RESUME_MOVES", 60),
    "keyward.kms.flag_rotation_due": ("KEYWARD_SCHEDULE_ROTATION_DUE", 3600),
    "keyward.kms.purge_expired_tokens": ("KEYWARD_SCHEDULE_PURGE_TOKENS", 3600),
    "keyward.kms.rewrap_local_store": ("KEYWARD_SCHEDULE_REWRAP", 24 * 3600),
    "keyward.audit.verify_chains": ("KEYWARD_SCHEDULE_VERIFY_AUDIT", 3600),
    "keyward.audit.sign_checkpoints": ("KEYWARD_SCHEDULE_SIGN_CHECKPOINTS", 60),
    "keyward.kms.deliver_pending_webhooks": ("KEYWARD_SCHEDULE_WEBHOOK_SWEEP", 120),
    "keyward.kms.summarise_auth_failures": ("KEYWARD_SCHEDULE_AUTH_FAILURES", 60),
}
CELERY_BEAT_SCHEDULE = {
    task: {"task": task, "schedule": float(seconds)}
    for task, (variable, default) in _SCHEDULE.items()
    if (seconds := env.number(variable, default, minimum=0))
}
# The dispatch tick of periodic key checks: due checks are spread over one tick, which
# stays below the broker's visibility timeout.
_dispatch = env.number("KEYWARD_SCHEDULE_KEY_CHECKS", 60, minimum=0)
KEY_CHECK_TICK = min(_dispatch or 60, JOB_MAX_COUNTDOWN)

PROVIDER_TIMEOUT_MS = env.number("KEYWARD_PROVIDER_TIMEOUT_MS", 5000, minimum=100, maximum=60000)
_base_urls = env.text("KEYWARD_PROVIDER_BASE_URLS")
try:
    PROVIDER_BASE_URLS: dict[str, str] = json.loads(_base_urls) if _base_urls else {}
except ValueError:
    raise ImproperlyConfigured("KEYWARD_PROVIDER_BASE_URLS: not valid JSON") from None
if not isinstance(PROVIDER_BASE_URLS, dict) or not all(
    isinstance(v, str) for v in PROVIDER_BASE_URLS.values()
):
    raise ImproperlyConfigured('KEYWARD_PROVIDER_BASE_URLS: expected {"openai": "https://..."}')


def _json_urls(name: str) -> dict[str, str]:
    """A JSON object of provider name to URL, or an ImproperlyConfigured naming `name`."""
    raw = env.text(name)
    try:
        urls = json.loads(raw) if raw else {}
    except ValueError:
        raise ImproperlyConfigured(f"{name}: not valid JSON") from None
    if not isinstance(urls, dict) or not all(isinstance(v, str) for v in urls.values()):
        raise ImproperlyConfigured(f'{name}: expected {{"openai": "https://..."}}')
    return urls


# Where each provider's admin API lives (rotations that create keys upstream), when not
# at its public address: a gateway, or a test's stub.
PROVIDER_ADMIN_BASE_URLS = _json_urls("KEYWARD_PROVIDER_ADMIN_BASE_URLS")
# strict: https only, and no loopback, private, link-local or metadata address unless allowed.
PROVIDER_URL_POLICY = env.choice(
    "KEYWARD_PROVIDER_URL_POLICY", ("strict", "open"), "strict" if PRODUCTION else "open"
)
PROVIDER_URL_ALLOWLIST = env.csv("KEYWARD_PROVIDER_URL_ALLOWLIST")

# The proxy: timeouts of the upstream call (the read timeout is per chunk, so a stream may
# last longer) and the largest request body it forwards.
PROXY_CONNECT_TIMEOUT_SECONDS = env.number(
    "KEYWARD_PROXY_CONNECT_TIMEOUT_SECONDS", 5, minimum=1, maximum=120
)
PROXY_READ_TIMEOUT_SECONDS = env.number(
    "KEYWARD_PROXY_READ_TIMEOUT_SECONDS", 120, minimum=1, maximum=3600
)
PROXY_MAX_BODY_BYTES = env.number("KEYWARD_PROXY_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
# Connections of each proxy worker's own asyncio pool (PostgreSQL), beside Django's. 0 runs
# the proxy's checks in a thread instead, as on SQLite.
PROXY_DB_POOL_SIZE = env.number("KEYWARD_PROXY_DB_POOL_SIZE", 10, minimum=0, maximum=1000)

TOKEN_MAX_TTL = env.number("KEYWARD_TOKEN_MAX_TTL", 3600, minimum=10, maximum=86400)
TOKEN_DEFAULT_TTL = env.number("KEYWARD_TOKEN_DEFAULT_TTL", 300, minimum=10, maximum=TOKEN_MAX_TTL)
REDIS_URL = env.secret("KEYWARD_REDIS_URL") or ""
_RATE_WINDOWS = {"second": 1, "minute": 60, "hour": 3600}


def _rate(name: str, default: str, minimum: int = 0) -> tuple[int, int]:
    """`N/second`, `N/minute` or `N/hour` as (N, window in seconds)."""
    raw = env.text(name, default)
    try:
        count, _, window = raw.partition("/")
        rate = (int(count), _RATE_WINDOWS[window or "minute"])
        if rate[0] < minimum:
            raise ValueError
    except (ValueError, KeyError):
        off = " (0 turns it off)" if minimum == 0 else f" with N at least {minimum}"
        raise ImproperlyConfigured(
            f"{name}: expected N/second, N/minute or N/hour{off}, got {raw!r}"
        ) from None
    return rate


RATE_LIMIT = _rate("KEYWARD_RATE_LIMIT", "600/minute")
# Console sign-in attempts per source address and, apart, per username; never off.
LOGIN_RATE_LIMIT = _rate("KEYWARD_LOGIN_RATE_LIMIT", "10/minute", minimum=1)

# Failed authentications per source address and minute; past it the answer is 429.
AUTH_FAILURE_LIMIT = env.number("KEYWARD_AUTH_FAILURE_LIMIT", 60, minimum=1)
RATE_LIMIT_FALLBACK = env.choice("KEYWARD_RATE_LIMIT_FALLBACK", ("database", "refuse"), "database")

LOG_LEVEL = env.choice("KEYWARD_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO")
LOG_FORMAT = env.choice("KEYWARD_LOG_FORMAT", ("text", "json"), "text")
ACCESS_LOG = env.flag("KEYWARD_ACCESS_LOG", True)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request": {"()": "core.logging.RequestContextLogFilter"},
        "no_exception_text": {"()": "core.logging.ExceptionTextFilter"},
    },
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(actor)s] %(message)s",
        },
        "json": {"()": "core.logging.JsonFormatter"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request", "no_exception_text"],
        },
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        # Django's request logger would print tracebacks with request bodies in DEBUG;
        # errors are logged once, without locals, by the exception handler.
        "django.request": {"level": "ERROR", "propagate": True},
        "django.security.DisallowedHost": {"level": "ERROR", "propagate": True},
        "keyward.access": {"level": LOG_LEVEL if ACCESS_LOG else "CRITICAL", "propagate": True},
        "httpx": {"level": "WARNING", "propagate": True},
        "httpcore": {"level": "WARNING", "propagate": True},
    },
}

EMBEDDED = bool(_embedded_parts)
_CHECKPOINTS = Path(AUDIT_CHECKPOINT_DIR or DATA_DIR / "audit-checkpoints").resolve()
if (
    (AUDIT_CHECKPOINT_DIR or (SECRET_STORE == "local" and not AUDIT_CHECKPOINT_S3))
    and _CHECKPOINTS.is_relative_to(DATA_DIR)
    and not AUDIT_WITNESSES
    and not EMBEDDED  # whose own warning says as much
):
    warn(
        f"the audit log's signed checkpoints are kept in {_CHECKPOINTS}, inside the data "
        "directory: restoring an old copy of it rolls the log and its checkpoints back "
        "together, unseen. Keep them elsewhere (KEYWARD_AUDIT_CHECKPOINT_DIR) or configure "
        "KEYWARD_AUDIT_WITNESSES."
    )
if EMBEDDED and not env.flag("KEYWARD_QUIET_EMBEDDED", False):
    warn(
        f"embedded default in {DATA_DIR} ({', '.join(sorted(set(_embedded_parts)))} not set): "
        "secrets generated on this disk, SQLite, no broker server. Not for production."
    )
