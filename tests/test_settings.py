"""Configuration: malformed values stop start-up naming the variable; production refuses
embedded conveniences; the embedded default generates its secrets privately."""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import note

ROOT = Path(__file__).resolve().parent.parent
PROBE = "import django; django.setup(); from django.conf import settings; print(settings.DATA_DIR)"


def _key(kind: bytes) -> str:
    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return str(note.Verifier.of("w.example/1", public, kind))


ORIGIN = {"KEYWARD_AUDIT_ORIGIN": "keyward.example/audit"}
GOOD_PRODUCTION = {
    "KEYWARD_PRODUCTION": "true",
    "KEYWARD_SECRET_KEY": "s" * 60,
    "KEYWARD_PEPPERS": "1:" + "p" * 40,
    "KEYWARD_AUDIT_HMAC_KEY": "h" * 40,
    "KEYWARD_MASTER_KEYS": "1:" + "A" * 43 + "=",
    "KEYWARD_DATABASE_URL": "postgres://keyward_app@127.0.0.1:5432/keyward",
    "KEYWARD_BROKER_URL": "redis://127.0.0.1:6379/0",
    "KEYWARD_ALLOWED_HOSTS": "keyward.internal",
}


def run_configured(
    tmp_path: Path, probe: str = PROBE, **variables: str
) -> subprocess.CompletedProcess[str]:
    """`probe` run by a fresh interpreter with only `variables` of Keyward's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env.update(
        {"KEYWARD_DATA_DIR": str(tmp_path / "data"), "DJANGO_SETTINGS_MODULE": "settings.settings"}
    )
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"KEYWARD_DEBUG": "maybe"}, "KEYWARD_DEBUG"),
        ({"KEYWARD_MAX_BODY_BYTES": "lots"}, "KEYWARD_MAX_BODY_BYTES"),
        ({"KEYWARD_MAX_BODY_BYTES": "10"}, "KEYWARD_MAX_BODY_BYTES"),
        ({"KEYWARD_PEPPERS": "short"}, "KEYWARD_PEPPERS"),
        ({"KEYWARD_PEPPERS": "1:tooshort"}, "KEYWARD_PEPPERS"),
        ({"KEYWARD_PEPPERS": "1:" + "a" * 40 + ",1:" + "b" * 40}, "KEYWARD_PEPPERS"),
        ({"KEYWARD_MASTER_KEYS": "1:not-base64!"}, "KEYWARD_MASTER_KEYS"),
        ({"KEYWARD_MASTER_KEYS": "1:QUJD"}, "KEYWARD_MASTER_KEYS"),
        ({"KEYWARD_SECRET_STORE": "s3"}, "KEYWARD_SECRET_STORE"),
        ({"KEYWARD_LOG_LEVEL": "loud"}, "KEYWARD_LOG_LEVEL"),
        ({"KEYWARD_LOG_FORMAT": "xml"}, "KEYWARD_LOG_FORMAT"),
        ({"KEYWARD_ACCESS_LOG": "sometimes"}, "KEYWARD_ACCESS_LOG"),
        ({"KEYWARD_DATABASE_URL": "nosuchdb://x"}, "KEYWARD_DATABASE_URL"),
        (
            {"KEYWARD_PEPPERS": "1:" + "a" * 40, "KEYWARD_PEPPERS_FILE": "/etc/hostname"},
            "KEYWARD_PEPPERS",
        ),
        ({"KEYWARD_SECRET_KEY_FILE": "/nonexistent/secret"}, "KEYWARD_SECRET_KEY_FILE"),
        ({"KEYWARD_AUDIT_WITNESSES": "not-a-key http://w"}, "KEYWARD_AUDIT_WITNESSES"),
        ({"KEYWARD_AUDIT_WITNESSES": "only-one-part"}, "KEYWARD_AUDIT_WITNESSES"),
        ({"KEYWARD_AUDIT_WITNESSES": "WITNESS ftp://w"}, "KEYWARD_AUDIT_WITNESSES"),
        ({"KEYWARD_AUDIT_WITNESSES": "WITNESS http://a,WITNESS http://b"}, "twice"),
        ({"KEYWARD_AUDIT_WITNESSES": "LOGKEY http://a"}, "no cosigner key"),
        ({"KEYWARD_AUDIT_WITNESSES": "WITNESS http://a"}, "KEYWARD_AUDIT_ORIGIN"),
        (
            {"KEYWARD_AUDIT_WITNESSES": "WITNESS http://a", "KEYWARD_AUDIT_ORIGIN": "w.example/1"},
            "named as the log",
        ),
        (
            {"KEYWARD_AUDIT_WITNESSES": "TWIN1 http://a,TWIN2 http://b", **ORIGIN},
            "two share a key",
        ),
        ({"KEYWARD_AUDIT_WITNESSES": ",".join(["WITNESS http://a"] * 33), **ORIGIN}, "at most 32"),
    ],
)
def test_a_malformed_value_stops_start_up_naming_the_variable(tmp_path, variables, named):
    twin = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    keys = {
        "WITNESS": _key(note.COSIGNATURE_V1),
        "LOGKEY": _key(note.ED25519),
        "TWIN1": str(note.Verifier.of("w.example/a", twin, note.COSIGNATURE_V1)),
        "TWIN2": str(note.Verifier.of("w.example/b", twin, note.COSIGNATURE_V1)),
    }
    for placeholder, key in keys.items():
        variables = {k: v.replace(placeholder, key) for k, v in variables.items()}
    result = run_configured(tmp_path, **variables)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"KEYWARD_DEBUG": "true"}, "KEYWARD_DEBUG"),
        ({"KEYWARD_SECRET_KEY": "short"}, "KEYWARD_SECRET_KEY"),
        ({"KEYWARD_SECRET_KEY": "django-insecure-" + "x" * 50}, "KEYWARD_SECRET_KEY"),
        ({"KEYWARD_PEPPERS": None}, "KEYWARD_PEPPERS"),
        ({"KEYWARD_MASTER_KEYS": None}, "KEYWARD_MASTER_KEYS"),
        ({"KEYWARD_AUDIT_HMAC_KEY": None}, "KEYWARD_AUDIT_HMAC_KEY"),
        ({"KEYWARD_DATABASE_URL": None}, "KEYWARD_DATABASE_URL"),
        ({"KEYWARD_BROKER_URL": None}, "KEYWARD_BROKER_URL"),
        ({"KEYWARD_ALLOWED_HOSTS": None}, "KEYWARD_ALLOWED_HOSTS"),
    ],
)
def test_production_refuses_to_start_without_its_secrets_or_with_debug(tmp_path, change, named):
    variables = {**GOOD_PRODUCTION, **change}
    result = run_configured(tmp_path, **{k: v for k, v in variables.items() if v is not None})
    assert result.returncode != 0
    assert named in result.stderr
    assert not (tmp_path / "data" / "peppers").exists(), "production must not generate secrets"


def test_production_starts_with_complete_configuration(tmp_path):
    result = run_configured(tmp_path, **GOOD_PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "embedded default" not in result.stderr


def test_checkpoints_kept_in_the_data_directory_without_witnesses_are_warned_of(tmp_path):
    inside = run_configured(tmp_path, **GOOD_PRODUCTION)
    assert "signed checkpoints are kept in" in inside.stderr
    elsewhere = run_configured(
        tmp_path, **GOOD_PRODUCTION, KEYWARD_AUDIT_CHECKPOINT_DIR=str(tmp_path / "elsewhere")
    )
    assert elsewhere.returncode == 0 and "signed checkpoints" not in elsewhere.stderr


def test_the_deployment_hashes_passwords_with_djangos_default_hasher(tmp_path):
    probe = PROBE.replace(
        "settings.DATA_DIR",
        "__import__('django.contrib.auth.hashers').contrib.auth.hashers.get_hasher().algorithm",
    )
    result = run_configured(tmp_path, probe, **GOOD_PRODUCTION, **ORIGIN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pbkdf2_sha256"


def test_secrets_can_come_from_files(tmp_path):
    secret_file = tmp_path / "peppers"
    secret_file.write_text("7:" + "f" * 40 + "\n")
    variables = {**GOOD_PRODUCTION, "KEYWARD_PEPPERS_FILE": str(secret_file)}
    del variables["KEYWARD_PEPPERS"]
    probe = PROBE.replace("settings.DATA_DIR", "sorted(settings.PEPPERS)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env.update(
        variables, DJANGO_SETTINGS_MODULE="settings.settings", KEYWARD_DATA_DIR=str(tmp_path)
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[7]"


def test_the_embedded_default_generates_private_secrets_and_warns(tmp_path):
    result = run_configured(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Not for production" in result.stderr
    data = tmp_path / "data"
    for name in ("django-secret-key", "peppers", "master-keys", "audit-hmac-key"):
        mode = stat.S_IMODE((data / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    first = (data / "peppers").read_text()
    assert run_configured(tmp_path).returncode == 0
    assert (data / "peppers").read_text() == first, "generated secrets are kept across restarts"


def _check_deploy(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env.update(GOOD_PRODUCTION, KEYWARD_DATA_DIR=str(tmp_path / "data"))
    env.update(KEYWARD_SECRET_KEY=secrets.token_urlsafe(50), **variables)
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    done = _check_deploy(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


@pytest.mark.parametrize(
    ("variables", "warning"),
    [
        ({"KEYWARD_HSTS_SECONDS": "0"}, "security.W004"),
        ({"KEYWARD_HSTS_INCLUDE_SUBDOMAINS": "false"}, "security.W005"),
    ],
)
def test_check_deploy_still_warns_of_what_is_not_silenced(tmp_path, variables, warning):
    done = _check_deploy(tmp_path, **variables)
    assert done.returncode != 0
    assert warning in done.stdout + done.stderr


def test_only_the_reasoned_deploy_warnings_are_silenced(tmp_path):
    """Cookies (W003), HSTS preload (W021) and the HTTPS redirect (W008) only; the last
    comes back when the deployment serves TLS itself and turns the redirect on."""
    probe = PROBE.replace("settings.DATA_DIR", "sorted(settings.SILENCED_SYSTEM_CHECKS)")
    for redirect, silenced in (
        ("false", "['security.W003', 'security.W008', 'security.W021']"),
        ("true", "['security.W003', 'security.W021']"),
    ):
        done = run_configured(tmp_path, probe, **GOOD_PRODUCTION, KEYWARD_SSL_REDIRECT=redirect)
        assert done.stdout.strip() == silenced, done.stderr


def test_every_variable_the_settings_read_is_in_the_readme():
    sources = [path.read_text() for path in (ROOT / "settings").glob("*.py")]
    read = {
        name
        for text in sources
        for name in re.findall(r'"(KEYWARD_[A-Z0-9_]+)"', text)
        if not name.endswith("_")  # a prefix, not a variable
    }
    documented = (ROOT / "README.md").read_text()
    assert read, "no variable found: the pattern no longer matches how settings are read"
    # The schedule's row names its family once: `KEYWARD_SCHEDULE_KEY_CHECKS`, `_REWRAP`, ...
    spelled = {v: (f"`{v}`", f"`_{v.removeprefix('KEYWARD_SCHEDULE_')}`") for v in read}
    missing = [v for v, forms in spelled.items() if not any(f in documented for f in forms)]
    assert sorted(missing) == []
