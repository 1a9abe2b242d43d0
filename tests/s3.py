"""A real S3-compatible server for the tests: moto's S3 on loopback in a subprocess. With
KEYWARD_TEST_S3_ENDPOINT and KEYWARD_TEST_S3_BUCKET set (and _ACCESS_KEY_ID,
_SECRET_ACCESS_KEY, _REGION as that service needs), the archive tests use that bucket
instead, each under a prefix of its own.

`python -m tests.s3 PORT` is the server the suite starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from tests.bao import free_port, stop_process

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "keyward-checkpoints"


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key_id: str = ""
    secret_access_key: str = ""
    region: str = "us-east-1"
    proc: subprocess.Popen[bytes] | None = None

    def location(self, **overrides: Any) -> dict[str, Any]:
        """Settings for AUDIT_CHECKPOINT_S3 under a new prefix of their own."""
        return {
            "bucket": self.bucket,
            "prefix": f"keyward-test-{os.urandom(4).hex()}/",
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "timeout": 5.0,
            **overrides,
        }

    def client(self) -> S3Client:
        """A client of the test's own, beside the archive's, to look at the bucket directly."""
        return boto3.session.Session(
            aws_access_key_id=self.access_key_id or None,
            aws_secret_access_key=self.secret_access_key or None,
            region_name=self.region,
        ).client("s3", endpoint_url=self.endpoint or None)

    def stop(self) -> None:
        stop_process(self.proc)


def start_moto_server(workdir: Path) -> S3Server:
    """moto's S3 on a free loopback port, with one empty bucket."""
    port = free_port()
    log = (workdir / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.s3", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    # moto checks no signature, so any pair of credentials will do.
    server = S3Server(f"http://127.0.0.1:{port}", BUCKET, "AKIAKEYWARDTEST", "moto", proc=proc)
    try:
        _wait_listening(port, proc)
        server.client().create_bucket(Bucket=BUCKET)
        server.client().put_bucket_versioning(  # as the README asks of a production bucket
            Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
    except BaseException:
        server.stop()
        raise
    return server


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the S3 server did not start")


def external_server() -> S3Server | None:
    endpoint = os.environ.get("KEYWARD_TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    bucket = os.environ.get("KEYWARD_TEST_S3_BUCKET")
    assert bucket, "KEYWARD_TEST_S3_ENDPOINT needs KEYWARD_TEST_S3_BUCKET (an existing bucket)"
    return S3Server(
        endpoint,
        bucket,
        os.environ.get("KEYWARD_TEST_S3_ACCESS_KEY_ID", ""),
        os.environ.get("KEYWARD_TEST_S3_SECRET_ACCESS_KEY", ""),
        os.environ.get("KEYWARD_TEST_S3_REGION", "us-east-1"),
    )


def _serve(port: int) -> None:
    """moto's S3 app serving one request at a time. moto checks a PutObject's If-Match or
    If-None-Match and then writes, with no lock between the two: a threaded server could let
    two conditional writers through, where S3 lets one. In turn, each is atomic."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler)
    server.serve_forever()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
