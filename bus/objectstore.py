"""Business documents beside the events: an S3-compatible object store.

A box puts a document (an order's PDF, a delivery note's scan) under a key and sends the key,
or a presigned GET URL, in an event; whoever reads the event fetches the bytes from the store.
Any S3 endpoint works; the local stack runs S3Proxy (``boxbus dev up``)::

    async with ObjectStore.from_settings(settings) as store:
        await store.put("orders/o-17/order.pdf", pdf, "application/pdf")
        url = await store.presign_get("orders/o-17/order.pdf", expires_s=3600)
    data = await fetch_url(url, max_bytes=10 * 2**20)  # no credentials needed

The client is aiobotocore (the extra ``boxbus[documents]``), imported when a store is opened,
so this module imports without it. It signs with SigV4, addresses buckets by path (S3Proxy and
most self-hosted stores serve no virtual hosts) and sends checksums only where S3 requires
them: S3Proxy refuses the flexible-checksum headers current botocore sends by default.

Errors are :class:`ObjectStoreError`\\ s: :class:`ObjectMissing` (no such key),
:class:`ObjectStoreDenied` (the keys, the signature or the link refused),
:class:`ObjectTooLarge` (more than the reader takes) and :class:`ObjectStoreUnavailable`
(the store does not answer; retriable). A presigned URL carries a credential for its object:
it is never logged, only its address without the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from bus.errors import BoxbusError, ConfigError
from bus.log import get_logger

if TYPE_CHECKING:
    from bus.settings import Settings

log = get_logger(__name__)

# SigV4 presigned URLs live at most seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
_KEYS_HINT = ("check BOXBUS_OBJECT_STORE_ACCESS_KEY and BOXBUS_OBJECT_STORE_SECRET_KEY (the "
              "local stack's are in the file `boxbus dev status --json` names as "
              "object_store_credentials)")


class ObjectStoreError(BoxbusError):
    """The object store refused or failed an operation."""

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code  # S3's error code (NoSuchKey, AccessDenied, ...), when it sent one
        self.status = status  # the HTTP status, when there was an answer


class ObjectMissing(ObjectStoreError):
    """No object under that key (or behind that URL)."""


class ObjectStoreDenied(ObjectStoreError):
    """The store refused who asked: wrong keys, a signature that does not match (an altered
    URL), or an expired link. Trying again changes nothing."""


class ObjectTooLarge(ObjectStoreError):
    """The object is larger than the reader said it takes."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The store does not answer, or answered with a server error: try again later."""

    retriable = True


def _check_key(key: str) -> None:
    """Keys are paths of plain segments: the filesystem behind a self-hosted store maps them
    to folders, and S3 allows at most 1024 bytes."""
    if not key or len(key.encode()) > 1024 or key.startswith("/") or any(
            part in ("", ".", "..") for part in key.split("/")):
        raise ObjectStoreError(
            f"{key!r} is not an object key",
            hint="use 1 to 1024 bytes of '/'-separated names, none empty, '.' or '..', "
            "e.g. orders/o-17/order.pdf")


class ObjectStore:
    """One bucket of an S3-compatible store; ``async with`` opens and closes its client."""

    def __init__(
        self,
        url: str,
        *,
        bucket: str = "boxbus",
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        attempts: int = 3,
    ) -> None:
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._attempts = attempts
        self._exit: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        if settings.object_store_url is None:
            raise ConfigError(
                "boxbus does not know where the object store is (BOXBUS_OBJECT_STORE_URL is "
                "not set)",
                hint="set BOXBUS_OBJECT_STORE_URL (with _ACCESS_KEY, _SECRET_KEY and _BUCKET), "
                "or run `boxbus dev up` and take the local stack's store: "
                "bus.devstack.with_object_store(settings) fills it in")
        secret = settings.object_store_secret_key
        return cls(settings.object_store_url, bucket=settings.object_store_bucket,
                   region=settings.object_store_region,
                   access_key=settings.object_store_access_key,
                   secret_key=secret.get_secret_value() if secret is not None else None)

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r}, bucket={self.bucket!r})"

    # -- the client -----------------------------------------------------------------------------

    async def __aenter__(self) -> ObjectStore:
        if self._client is not None:
            raise RuntimeError(f"{self!r} is open already")
        try:
            from aiobotocore.session import get_session
            from botocore.config import Config
        except ImportError as exc:
            raise ConfigError(
                "the aiobotocore package (the object store's client) is not installed",
                hint="pip install 'boxbus[documents]'") from exc
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            # Checksums only where S3 requires them: S3Proxy answers NotImplemented to the
            # flexible-checksum headers botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            retries={"total_max_attempts": self._attempts, "mode": "standard"},
        )
        exit_stack = contextlib.AsyncExitStack()
        self._client = await exit_stack.enter_async_context(get_session().create_client(
            "s3", endpoint_url=self.url, region_name=self.region,
            aws_access_key_id=self._access_key, aws_secret_access_key=self._secret_key,
            config=config))
        self._exit = exit_stack
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        exit_stack, self._exit, self._client = self._exit, None, None
        if exit_stack is not None:
            await exit_stack.aclose()

    def _open(self) -> Any:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open: use `async with ObjectStore(...)`")
        return self._client

    def _error(self, exc: Exception, action: str, key: str | None = None) -> BoxbusError:
        """The boxbus error for what botocore raised while doing ``action``."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            HTTPClientError,
            NoCredentialsError,
        )
        from botocore.exceptions import ConnectionError as NoConnection

        what = f"object {key!r} in bucket {self.bucket!r}" if key else f"bucket {self.bucket!r}"
        if isinstance(exc, NoCredentialsError):
            return ConfigError(
                f"no keys to sign requests to the object store at {self.url}",
                hint="set BOXBUS_OBJECT_STORE_ACCESS_KEY and BOXBUS_OBJECT_STORE_SECRET_KEY "
                "(or AWS's usual variables)")
        if isinstance(exc, NoConnection | HTTPClientError):
            return ObjectStoreUnavailable(
                f"the object store at {self.url} does not answer ({action} {what}): {exc}",
                hint="start it (`boxbus dev up`), or check BOXBUS_OBJECT_STORE_URL")
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = str(error.get("Message", "") or code)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            said = f"{status} {code}: {message}" if code != str(status) else str(status)
            if code in ("NoSuchKey", "404") and key is not None:
                return ObjectMissing(
                    f"there is no {what} at {self.url}", code="NoSuchKey", status=status,
                    hint="check the key; the object was deleted, or never stored")
            if code == "NoSuchBucket" or (code == "404" and key is None):
                return ObjectStoreError(
                    f"the object store at {self.url} has no bucket {self.bucket!r} "
                    f"({action} {what})", code=code, status=status,
                    hint="create it with ObjectStore.ensure_bucket() (`boxbus dev up` does in "
                    "the local stack), or set BOXBUS_OBJECT_STORE_BUCKET")
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId",
                                         "SignatureDoesNotMatch"):
                return ObjectStoreDenied(
                    f"the object store at {self.url} refused to {action} {what} ({said})",
                    code=code, status=status, hint=_KEYS_HINT)
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
                return ObjectStoreUnavailable(
                    f"the object store at {self.url} failed to {action} {what} ({said})",
                    code=code, status=status, hint="try again later; its log says more")
            return ObjectStoreError(
                f"the object store at {self.url} refused to {action} {what} ({said})",
                code=code, status=status,
                hint="read the store's answer above; NotImplemented means the store lacks "
                "what the request asked for")
        if isinstance(exc, BotoCoreError):
            return ObjectStoreError(f"could not {action} {what} at {self.url}: {exc}")
        raise exc

    # -- operations -----------------------------------------------------------------------------

    async def list_buckets(self) -> list[str]:
        """The names of the buckets these keys see (the stack's readiness probe)."""
        client = self._open()
        try:
            found = await client.list_buckets()
        except Exception as exc:
            raise self._error(exc, "list the buckets") from exc
        return [str(b["Name"]) for b in found.get("Buckets", [])]

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (and is ours)."""
        client = self._open()
        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            error = self._error(exc, "look up")
            if not (isinstance(error, ObjectStoreError) and error.code in ("404", "NoSuchBucket")):
                raise error from exc
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # S3 wants the region named everywhere else
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await client.create_bucket(**params)
        except Exception as exc:
            error = self._error(exc, "create")
            if isinstance(error, ObjectStoreError) and error.code == "BucketAlreadyOwnedByYou":
                return  # made meanwhile by another client with the same keys
            if isinstance(error, ObjectStoreError) and error.code == "BucketAlreadyExists":
                error.hint = ("bucket names are global on S3; choose another "
                              "BOXBUS_OBJECT_STORE_BUCKET")
            raise error from exc
        log.info("bucket created", bucket=self.bucket, store=self.url)

    async def put(self, key: str, data: bytes,
                  media_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key`` (replacing what was there), with its media type."""
        _check_key(key)
        client = self._open()
        try:
            await client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                    ContentType=media_type)
        except Exception as exc:
            raise self._error(exc, "store", key) from exc
        log.debug("object stored", key=key, bytes=len(data), bucket=self.bucket)

    async def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; :class:`ObjectMissing` if there are none."""
        _check_key(key)
        client = self._open()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=key)
            async with answer["Body"] as body:
                data = await body.read()
        except Exception as exc:
            raise self._error(exc, "read", key) from exc
        log.debug("object read", key=key, bytes=len(data), bucket=self.bucket)
        return bytes(data)

    async def exists(self, key: str) -> bool:
        _check_key(key)
        client = self._open()
        try:
            await client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            error = self._error(exc, "look up", key)
            if isinstance(error, ObjectMissing):
                return False
            raise error from exc
        return True

    async def delete(self, key: str) -> None:
        """Remove the object; removing one that is not there is no error (as on S3)."""
        _check_key(key)
        client = self._open()
        try:
            await client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._error(exc, "delete", key) from exc
        log.debug("object deleted", key=key, bucket=self.bucket)

    async def presign_get(self, key: str, expires_s: int) -> str:
        """A URL anyone may GET the object with, for ``expires_s`` seconds, without keys. It
        is signed here, offline: it says nothing about whether the object exists."""
        _check_key(key)
        if not 1 <= expires_s <= MAX_PRESIGN_SECONDS:
            raise ObjectStoreError(
                f"a presigned URL lives 1 to {MAX_PRESIGN_SECONDS} s (seven days), not "
                f"{expires_s} s", hint="pass expires_s within that range")
        client = self._open()
        try:
            url = await client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s)
        except Exception as exc:
            raise self._error(exc, "presign", key) from exc
        return str(url)


# -- reading a presigned URL --------------------------------------------------------------------

_ERROR_BODY_BYTES = 64 * 1024


def _xml_field(body: str, name: str) -> str | None:
    found = re.search(rf"<{name}>([^<]{{0,500}})</{name}>", body)
    return found.group(1).strip() if found else None


async def fetch_url(url: str, *, max_bytes: int, timeout: float = 30) -> bytes:
    """GET a presigned URL (no credentials: the URL is the credential) and return the object's
    bytes as stored, reading no more than ``max_bytes``; ``timeout`` bounds the whole fetch.

    Raises :class:`ObjectStoreDenied` (403: an expired link, an altered one, S3's error code
    in the message), :class:`ObjectMissing` (404), :class:`ObjectTooLarge`,
    :class:`ObjectStoreUnavailable` (no answer in time, or a server error)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ObjectStoreError("a presigned URL must be an http:// or https:// URL",
                               hint="pass the URL presign_get returned, unchanged")
    where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the query: it signs
    try:
        # identity: the object's bytes as stored, whatever Content-Encoding it carries.
        async with (asyncio.timeout(timeout), httpx.AsyncClient(timeout=timeout) as client,
                    client.stream("GET", url, headers={"Accept-Encoding": "identity"})
                    as response):
            if response.status_code != 200:
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) >= _ERROR_BODY_BYTES:
                        break
                raise _refusal(where, response.status_code, body.decode(errors="replace"))
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(where, max_bytes, f"it declares {declared} bytes")
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.aiter_raw():
                total += len(chunk)
                if total > max_bytes:
                    raise _too_large(where, max_bytes, "it sent more")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise ObjectStoreUnavailable(
            f"{where} did not send the object within {timeout:g} s",
            hint="try again later, or allow a longer timeout") from exc
    except httpx.HTTPError as exc:
        raise ObjectStoreUnavailable(
            f"cannot fetch {where}: {exc.__class__.__name__}: {exc}",
            hint="check that the store's address in the URL is reachable from here") from exc
    log.debug("presigned URL fetched", url=where, bytes=total)
    return b"".join(chunks)


def _too_large(where: str, max_bytes: int, seen: str) -> ObjectTooLarge:
    return ObjectTooLarge(
        f"the object at {where} is larger than the {max_bytes} bytes this reader takes "
        f"({seen}); reading stopped there",
        hint="raise max_bytes if objects that large are expected")


def _refusal(where: str, status: int, body: str) -> ObjectStoreError:
    code = _xml_field(body, "Code")
    message = _xml_field(body, "Message")
    said = f"{status} {code or ''}{': ' + message if message else ''}".strip()
    if status == 403:
        if code == "SignatureDoesNotMatch":
            hint = ("the URL was changed after it was signed (or signed with other keys): use "
                    "it exactly as presign_get returned it")
        elif "expire" in (message or "").lower():
            hint = "the link has expired: ask its sender for a new one (presign_get)"
        else:
            hint = "ask the link's sender for a new one; its keys may have been changed"
        return ObjectStoreDenied(f"the store refused the presigned URL for {where} ({said})",
                                 code=code, status=status, hint=hint)
    if status == 404:
        return ObjectMissing(f"there is no object at {where} ({said})", code=code,
                             status=status,
                             hint="the object was deleted, or never stored; ask its sender")
    if status >= 500:
        return ObjectStoreUnavailable(f"the store failed to send {where} ({said})", code=code,
                                      status=status, hint="try again later")
    return ObjectStoreError(f"the store answered {said} for {where}", code=code, status=status,
                            hint="pass the URL presign_get returned, unchanged")
