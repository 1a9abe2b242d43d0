"""The container image: every process its entrypoint starts exists in the project, and the
Dockerfile's last stage runs as a numeric non-root user with no build tools.

Nothing here builds an image; the Dockerfile and docker/entrypoint.sh are read as text.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
PROCESSES = {"web", "proxy", "worker", "beat", "sequencer", "migrate"}
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|libc6-dev|[a-z0-9.+-]+-dev|rustc|cargo|git)\b"
)


def entrypoint_commands() -> dict[str, list[str]]:
    """Each `case` branch of the entrypoint: its word and the argv it execs ("$@" left out)."""
    text = ENTRYPOINT.read_text().replace("\\\n", " ")
    branches = re.findall(r"^\s+([\w*]+)\)\s*\n\s+exec (.+)$", text, flags=re.MULTILINE)
    return {word: [a for a in shlex.split(line) if a != "$@"] for word, line in branches}


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_entrypoint_offers_every_process_and_manage_py() -> None:
    commands = entrypoint_commands()
    assert PROCESSES | {"manage", "*"} == set(commands)
    assert commands["manage"][:2] == ["python", "manage.py"]
    assert commands["*"][:3] == ["python", "manage.py", "$command"]


@pytest.mark.parametrize(("word", "interface"), [("web", "wsgi"), ("proxy", "asgi")])
def test_granian_serves_an_application_the_project_defines(word: str, interface: str) -> None:
    argv = entrypoint_commands()[word]
    assert argv[:3] == ["python", "-m", "granian"]
    assert _after(argv, "--interface") == interface
    module_name, _, attribute = argv[-1].partition(":")
    assert module_name == f"settings.{interface}"
    assert callable(getattr(importlib.import_module(module_name), attribute))


@pytest.mark.parametrize("word", ["worker", "beat"])
def test_celery_runs_the_project_app(word: str) -> None:
    argv = entrypoint_commands()[word]
    assert argv[:3] == ["python", "-m", "celery"]
    module = importlib.import_module(_after(argv, "-A"))
    assert isinstance(module.app, Celery)
    assert argv[argv.index("-A") + 2] == word


@pytest.mark.parametrize(
    ("word", "command"), [("sequencer", "audit_sequencer"), ("migrate", "migrate")]
)
def test_management_commands_exist(word: str, command: str) -> None:
    argv = entrypoint_commands()[word]
    assert argv[:3] == ["python", "manage.py", command]
    assert command in get_commands()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sequencer", "--help"], "manage.py audit_sequencer"),
        (["migrate", "--help"], "manage.py migrate"),
        (["manage", "audit_verify", "--help"], "manage.py audit_verify"),
        (["create_admin", "--help"], "manage.py create_admin"),
    ],
)
def test_the_entrypoint_dispatches_to_manage_py(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KEYWARD_DATA_DIR": str(tmp_path / "data"),
        "KEYWARD_QUIET_EMBEDDED": "1",
    }
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    assert (tmp_path / "data").is_dir()  # beat's schedule file has somewhere to go


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [value for word, value in self.instructions if word == keyword]


def dockerfile_stages() -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages and "=" in value:
            name, _, default = value.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = value.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else ""
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].instructions.append((keyword, value))
    return stages


def final_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in stage.all("ENV"):
        for pair in shlex.split(value):
            name, _, setting = pair.partition("=")
            env[name] = setting
    return env


def test_the_image_is_multi_stage_on_a_pinned_python_slim_base() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        assert image == "python"
        assert re.fullmatch(r"3\.\d+\.\d+-slim-\w+", tag), stage.base


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = dockerfile_stages()[-1].all("USER")
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert not gid or (gid.isdigit() and int(gid) > 0)


def test_the_final_stage_installs_no_build_tools_and_copies_the_venv() -> None:
    final = dockerfile_stages()[-1]
    for command in final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|apk|pip|pip3)\b", command), command
        assert not BUILD_TOOLS.search(command.replace("groupadd", "").replace("useradd", ""))
    builder = dockerfile_stages()[0].name
    assert any(f"--from={builder}" in copy and "/opt/venv" in copy for copy in final.all("COPY"))


def test_the_final_stage_writes_only_under_tmp() -> None:
    final = dockerfile_stages()[-1]
    env = final_env(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    for name in ("HOME", "TMPDIR", "KEYWARD_DATA_DIR"):
        assert env[name] == "/tmp" or env[name].startswith("/tmp/"), name
    # Static files are collected at build time into the directory the settings serve from.
    collected = [run for stage in dockerfile_stages() for run in stage.all("RUN")]
    assert any(
        "collectstatic" in run and f"KEYWARD_STATIC_ROOT={env['KEYWARD_STATIC_ROOT']}" in run
        for run in collected
    )
    assert final.all("ENTRYPOINT") == ['["/usr/local/bin/keyward-entrypoint"]']


def test_the_image_carries_oci_labels() -> None:
    labels = " ".join(dockerfile_stages()[-1].all("LABEL"))
    for name in ("title", "description", "licenses", "version", "revision", "created"):
        assert f"org.opencontainers.image.{name}=" in labels


def test_the_build_context_holds_every_package_of_the_project() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"  # everything else (.venv, var, tests, .git) stays out
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} | {"manage.py", "pyproject.toml", "docker"} <= allowed
