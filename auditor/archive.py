"""Where the latest signed checkpoint of each chain is kept outside the database, so that a
truncated, rolled-back or rewritten database contradicts it: in a directory
(`KEYWARD_AUDIT_CHECKPOINT_DIR`), in an S3-compatible bucket
(`KEYWARD_AUDIT_CHECKPOINT_S3_URL`), in Vault's KV store (the default store when it is
Vault), or in a directory under the embedded default's data directory. Every replacement
is a compare-and-set on what the signer read, so two signers can never fork the record.

This is the only module that imports boto3."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from audit import note
from core.errors import Conflict, ServiceUnavailable
from stores.base import SecretStore
from stores.exceptions import SecretMissing, StoreConflict
from stores.registry import DEFAULT_STORE, get_store

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client
    from types_boto3_s3.type_defs import PutObjectRequestTypeDef

logger = logging.getLogger("keyward.audit")
PREFIX = "_keyward/audit-checkpoints"
SUFFIX = ".checkpoint"
ERROR_CODE = re.compile(r"[A-Za-z0-9.]{1,64}")


class ArchiveConflict(Conflict):
    code = "checkpoint_conflict"
    message = "Another signer replaced the checkpoint meanwhile; nothing was changed."


class ArchiveDamaged(ServiceUnavailable, note.NoteError):
    """The archive cannot show a chain's latest checkpoint: it was removed from under it.
    A checkpoint that does not verify to the signer and the verifier; 503 to a caller."""

    code = "checkpoint_archive_damaged"
    message = "The checkpoint archive has lost a checkpoint; run audit_verify."


class ArchiveUnavailable(ServiceUnavailable):
    """The archive did not answer (unreachable, slow, refusing our credentials): fail closed."""

    code = "checkpoint_archive_unavailable"
    message = "The checkpoint archive is unavailable; nothing was changed. Try again shortly."


@dataclass(frozen=True)
class Held:
    """A chain's latest checkpoint as held, and the version a replacement must name."""

    note: str
    version: str


class Archive(Protocol):
    def latest(self, chain: str) -> Held | None: ...

    def replace(self, chain: str, note: str, previous: Held | None) -> None: ...

    def chains(self) -> list[str]: ...

    def describe(self) -> str: ...


def _name(chain: str) -> str:
    """A chain's file or object name: the directory and the bucket name them alike, so
    checkpoints can be copied from one to the other as they are."""
    return quote(chain, safe="") + SUFFIX


def _chain(name: str) -> str:
    return unquote(name.removesuffix(SUFFIX))


class StoreArchive:
    """Checkpoints as versioned entries of a secret store (Vault KV v2: check-and-set on
    the version read), with an index of the chains it holds."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    def describe(self) -> str:
        return f"secret store {self.store.name!r} at {PREFIX}/"

    def _read(self, path: str) -> tuple[str, int] | None:
        """The newest version, never an older one: falling back to the version before a
        destroyed one would be a rollback that nobody sees."""
        versions = self.store.versions(path)
        if not versions:
            return None
        newest = max(versions, key=lambda v: v.version)
        try:
            if newest.destroyed:
                raise SecretMissing()
            return self.store.get(path, newest.version), newest.version
        except SecretMissing:
            raise ArchiveDamaged(
                f"version {newest.version} of {path} in {self.describe()} is deleted or destroyed"
            ) from None

    def latest(self, chain: str) -> Held | None:
        found = self._read(f"{PREFIX}/chain/{chain}")
        if found is None and chain in self.chains():
            raise ArchiveDamaged(
                f"the index of {self.describe()} names {chain} but no checkpoint of it is "
                "there (deleted?)"
            )
        return Held(found[0], str(found[1])) if found else None

    def replace(self, chain: str, note: str, previous: Held | None) -> None:
        try:
            self.store.put(
                f"{PREFIX}/chain/{chain}",
                note,
                expected_version=int(previous.version) if previous else 0,
            )
        except StoreConflict:
            raise ArchiveConflict() from None
        if previous is None:
            self._index(chain)

    def chains(self) -> list[str]:
        found = self._read(f"{PREFIX}/index")
        return sorted(json.loads(found[0])) if found else []

    def _index(self, chain: str) -> None:
        """Name the chain in the index once its first checkpoint is written: a chain the
        index names has a checkpoint, so one that is missing was removed. (A chain held
        but not yet listed is still found: verification asks for every chain in the
        database.)"""
        for _ in range(5):
            found = self._read(f"{PREFIX}/index")
            names = set(json.loads(found[0])) if found else set()
            if chain in names:
                return
            with contextlib.suppress(StoreConflict):
                self.store.put(
                    f"{PREFIX}/index",
                    json.dumps(sorted(names | {chain})),
                    expected_version=found[1] if found else 0,
                )
                return
        raise ArchiveConflict()


class DirectoryArchive:
    """One file per chain, replaced atomically (written beside, fsynced, renamed) under an
    exclusive lock, after checking that it still holds what the signer read."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"directory {self.root}"

    def _path(self, chain: str) -> Path:
        return self.root / _name(chain)

    def latest(self, chain: str) -> Held | None:
        try:
            note = self._path(chain).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return Held(note, hashlib.sha256(note.encode()).hexdigest())

    def replace(self, chain: str, note: str, previous: Held | None) -> None:
        with self._locked():
            current = self.latest(chain)
            if (current and current.version) != (previous and previous.version):
                raise ArchiveConflict()
            path = self._path(chain)
            scratch = path.with_suffix(".tmp")
            with open(scratch, "w", encoding="utf-8") as out:
                out.write(note)
                out.flush()
                os.fsync(out.fileno())
            os.replace(scratch, path)
            directory = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def chains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(_chain(p.name) for p in self.root.glob("*" + SUFFIX))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class S3Location:
    """The bucket and key prefix that keep the checkpoints, and how to reach them
    (`settings.AUDIT_CHECKPOINT_S3`)."""

    bucket: str
    prefix: str = ""  # empty, or ending in "/"
    endpoint: str = ""  # empty: AWS's own endpoints
    region: str = ""  # empty: botocore's default (AWS_REGION, its config file)
    access_key_id: str = ""  # empty: botocore's credential chain (web identity, instance role)
    secret_access_key: str = field(default="", repr=False)
    timeout: float = 5.0
    ca_cert: str = ""

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> S3Location | None:
        if not values:
            return None
        return cls(**{f: values[f] for f in cls.__dataclass_fields__ if f in values})


def _s3_client(where: S3Location) -> S3Client:
    # Imported here: boto3 takes longer to import than the rest of Keyward's start-up, and
    # only deployments that keep their checkpoints in a bucket need it.
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=where.timeout,
        read_timeout=where.timeout,
        retries={"mode": "standard", "max_attempts": 3},
        # S3-compatible services answer path-style requests without wildcard DNS names.
        s3={"addressing_style": "path"} if where.endpoint else None,
        # Some S3-compatible services refuse the checksums botocore adds by default; a
        # checkpoint is a signed note, so its integrity does not rest on them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(
        aws_access_key_id=where.access_key_id or None,
        aws_secret_access_key=where.secret_access_key or None,
        region_name=where.region or None,
    )
    return session.client(
        "s3", endpoint_url=where.endpoint or None, verify=where.ca_cert or None, config=config
    )


class S3Archive:
    """One object per chain in an S3-compatible bucket, written by a conditional PutObject
    (If-None-Match for a chain's first checkpoint, If-Match on the ETag read for every
    later one), so the bucket itself refuses a signer that read an older checkpoint."""

    def __init__(self, where: S3Location) -> None:
        self.where = where
        self.client = _s3_client(where)

    def describe(self) -> str:
        at = f" at {self.where.endpoint}" if self.where.endpoint else ""
        return f"bucket s3://{self.where.bucket}/{self.where.prefix}{at}"

    def _key(self, chain: str) -> str:
        return self.where.prefix + _name(chain)

    def latest(self, chain: str) -> Held | None:
        try:
            got = self.client.get_object(Bucket=self.where.bucket, Key=self._key(chain))
            body = got["Body"].read()
        except ClientError as exc:
            if _code(exc) == "NoSuchKey":
                self._check_never_written(chain)
                return None
            raise _unavailable("GetObject", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("GetObject", exc) from None
        # A mangled object must fail as a note that does not verify, not crash the reader.
        return Held(body.decode("utf-8", errors="replace"), got["ETag"])

    def _check_never_written(self, chain: str) -> None:
        """ArchiveDamaged when a versioned bucket shows a checkpoint of the chain deleted
        (a delete marker, or older versions only)."""
        key = self._key(chain)
        try:
            found = self.client.list_object_versions(
                Bucket=self.where.bucket, Prefix=key, MaxKeys=2
            )
        except ClientError as exc:
            raise _unavailable("ListObjectVersions", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("ListObjectVersions", exc) from None
        kept = [*found.get("Versions", []), *found.get("DeleteMarkers", [])]
        if any(item.get("Key") == key for item in kept):
            raise ArchiveDamaged(f"the checkpoint of {chain} was deleted from {self.describe()}")

    def replace(self, chain: str, note: str, previous: Held | None) -> None:
        body = note.encode()
        request: PutObjectRequestTypeDef = {
            "Bucket": self.where.bucket,
            "Key": self._key(chain),
            "Body": body,
            "ContentType": "text/plain; charset=utf-8",
            # A bucket under Object Lock refuses a write without an integrity header, and
            # MD5's is the one every S3-compatible service knows.
            "ContentMD5": base64.b64encode(
                hashlib.md5(body, usedforsecurity=False).digest()
            ).decode(),
        }
        if previous is None:
            request["IfNoneMatch"] = "*"
        else:
            request["IfMatch"] = previous.version
        try:
            self.client.put_object(**request)
        except ClientError as exc:
            if _condition_failed(exc) or (previous is not None and _code(exc) == "NoSuchKey"):
                raise ArchiveConflict() from None
            raise _unavailable("PutObject", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("PutObject", exc) from None

    def chains(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.where.bucket, Prefix=self.where.prefix, Delimiter="/"
        )
        try:
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("ListObjectsV2", exc) from None
        names = (key.removeprefix(self.where.prefix) for key in keys)
        return sorted(_chain(name) for name in names if name.endswith(SUFFIX))


def _code(exc: ClientError) -> str:
    """The S3 error code, when it looks like one (the service chooses what it sends)."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code if ERROR_CODE.fullmatch(code) else "unknown"


def _condition_failed(exc: ClientError) -> bool:
    """412: the object is no longer the one read (or is already there); 409: another
    conditional write to it was under way."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 412 or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")


def _unavailable(operation: str, exc: BotoCoreError | ClientError) -> ArchiveUnavailable:
    """The failure named by its S3 error code or botocore's exception class, never by its
    text, whose contents the transport chooses."""
    reason = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    logger.warning("checkpoint archive: S3 %s failed: %s", operation, reason)
    return ArchiveUnavailable(
        f"The checkpoint archive did not answer (S3 {operation}: {reason}); nothing was changed."
    )


@lru_cache(maxsize=1)
def _archive(directory: str, bucket: S3Location | None, backend: str) -> Archive:
    if directory and bucket:
        raise ImproperlyConfigured(
            "KEYWARD_AUDIT_CHECKPOINT_DIR and KEYWARD_AUDIT_CHECKPOINT_S3_URL: set one, not both"
        )
    if directory:
        return DirectoryArchive(Path(directory))
    if bucket:
        return S3Archive(bucket)
    if backend == "vault":
        return StoreArchive(get_store(DEFAULT_STORE))
    return DirectoryArchive(settings.DATA_DIR / "audit-checkpoints")


def archive() -> Archive:
    """The configured archive of signed checkpoints."""
    return _archive(
        settings.AUDIT_CHECKPOINT_DIR,
        S3Location.of(settings.AUDIT_CHECKPOINT_S3),
        settings.SECRET_STORES["default"]["backend"],
    )


def reset() -> None:
    _archive.cache_clear()


@receiver(setting_changed)
def _reset(setting: str, **kwargs: Any) -> None:
    if setting in ("SECRET_STORES", "AUDIT_CHECKPOINT_DIR", "AUDIT_CHECKPOINT_S3"):
        reset()
