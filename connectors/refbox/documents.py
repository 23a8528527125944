"""Documents attached to an order (invoice, waybill, contract, photos) travel with it.

Up to 256 KiB the bytes ride inside the ``DocumentAttached`` event. A larger document goes by
*claim check*: the sender puts the bytes into the network's object store under a
content-addressed key (``documents/<sender box>/<sha256>``: the same file sent twice is stored
once) and the event carries a presigned GET link to exactly that object, valid for a short
time (``link_seconds``, an hour by default), with the size and the SHA-256. Only the box the
event is addressed to gets the link (the router delivers it to no one else), and the link
opens that one object only: the signature covers its key and expiry.

The receiving box fetches the bytes while it applies the event, refuses more bytes than the
event announced, and checks the SHA-256 before it accepts the document: a mismatch (the
object was changed after it was sent) or a refused link (expired, forged) is a rejection with
its reason, which the sender sees in its receipts and can answer by sending the document again
(``resend_document``: a fresh link to the same object). A store that cannot be reached is a
retry, not a rejection.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bus.errors import BoxbusError
from bus.events.models import DocumentAttached, DocumentType
from bus.objectstore import (
    ObjectMissing,
    ObjectStore,
    ObjectStoreDenied,
    ObjectStoreUnavailable,
    ObjectTooLarge,
    fetch_url,
)
from bus.settings import Settings
from connectors.box import Applied, Rejected, Retry
from connectors.refbox.core import BoxCore, BusinessError, _id

INLINE_MAX = 256 * 1024  # the contract's limit for bytes inside the event
LINK_SECONDS = 3600
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # what a box takes (held in memory, kept in its database)


def object_key(box: str, sha256: str) -> str:
    return f"documents/{box}/{sha256}"


class DocumentActions(BoxCore):
    """``settings``: where the network's object store is (documents over 256 KiB need it)."""

    link_seconds: int = LINK_SECONDS

    def _store(self) -> ObjectStore:
        if self.settings is None or not self.settings.object_store_url:
            raise BusinessError(f"box {self.box_id} has no object store configured: documents "
                                f"over {INLINE_MAX // 1024} KiB need one (BOXBUS_OBJECT_STORE_URL)")
        return ObjectStore.from_settings(self.settings)

    async def attach_document(self, order_id: str, content: bytes, file_name: str,
                              media_type: str = "application/pdf",
                              document_type: DocumentType = DocumentType.OTHER) -> str:
        """Attach a document to an order: it reaches the other party's box with it."""
        order = await self._order(order_id)
        digest = hashlib.sha256(content).hexdigest()
        document_id = _id(f"{self.box_id}-doc")
        key = None
        if len(content) > INLINE_MAX:
            key = object_key(self.box_id, digest)
            async with self._store() as store:
                if not await store.exists(key):
                    await store.put(key, content, media_type)
        return await self._send_document(document_id, order_id, order["counterparty"],
                                         content, key, digest, file_name, media_type,
                                         document_type)

    async def resend_document(self, document_id: str) -> str:
        """Send a document again with a fresh link (its recipient refused an expired one);
        the id of the new sending."""
        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow("SELECT * FROM documents WHERE document_id = $1 AND "
                                      "direction = 'outgoing'", document_id)
        finally:
            await conn.close()
        if row is None:
            raise BusinessError(f"box {self.box_id} sent no document {document_id}")
        return await self._send_document(
            _id(f"{self.box_id}-doc"), row["order_id"], row["counterparty"], row["content"],
            row["object_key"], row["sha256"], row["file_name"], row["media_type"],
            DocumentType(row["document_type"]), size=row["size_bytes"])

    async def _send_document(self, document_id: str, order_id: str, recipient: str,
                             content: bytes | None, key: str | None, digest: str,
                             file_name: str, media_type: str, document_type: DocumentType,
                             size: int | None = None) -> str:
        link = None
        if key is not None:
            async with self._store() as store:
                link = await store.presign_get(key, self.link_seconds)
        size = size if size is not None else len(content or b"")
        event = DocumentAttached(
            meta=self._meta(order_id, target=recipient), subject_id=order_id,
            document_id=document_id, document_type=document_type, file_name=file_name,
            media_type=media_type, sha256=digest, size_bytes=size,
            content=None if key is not None else content, content_ref=link)

        async def change(conn: asyncpg.Connection) -> None:
            await save_document(conn, event, "outgoing", recipient,
                                None if key is not None else content, key)

        await self._commit(change, event)
        return document_id


def check_link(link: str, settings: Settings | None, sender: str, sha256: str) -> None:
    """A claim check is followed only to the network's own object store, and only to the
    object the sender may have put there for this document (its prefix, its hash): never to
    an address a partner chose (an internal service, a metadata endpoint)."""
    if settings is None or not settings.object_store_url:
        raise Rejected("this box has no object store configured to fetch documents from "
                       "(BOXBUS_OBJECT_STORE_URL)")
    store, found = urlsplit(settings.object_store_url), urlsplit(link)
    expected = f"{store.path.rstrip('/')}/{settings.object_store_bucket}/" + object_key(
        sender, sha256)
    if (found.scheme, found.netloc) != (store.scheme, store.netloc) or found.path != expected:
        raise Rejected("the document's link does not point to the network's object store at "
                       f"the sender's own key for this document ({expected}); not followed")


async def received_document(event: DocumentAttached, applied: Applied,
                            settings: Settings | None = None) -> None:
    """The inbox's handler: the bytes fetched (claim check) and checked, then kept."""
    if (event.content is None) == (event.content_ref is None):
        raise Rejected(f"document {event.document_id} carries "
                       f"{'both' if event.content is not None else 'neither'} inline content "
                       "and a link: exactly one is needed")
    if event.size_bytes > MAX_DOCUMENT_BYTES:
        raise Rejected(f"document {event.document_id} is {event.size_bytes:,} bytes: this box "
                       f"takes documents up to {MAX_DOCUMENT_BYTES:,} bytes")
    content = event.content
    if content is None:
        link = event.content_ref or ""
        check_link(link, settings, applied.envelope.source_box, event.sha256)
        try:
            content = await fetch_url(link, max_bytes=event.size_bytes)
        except ObjectStoreUnavailable as exc:
            raise Retry(f"the object store cannot be reached for document "
                        f"{event.document_id}") from exc
        except (ObjectStoreDenied, ObjectMissing, ObjectTooLarge) as exc:
            raise Rejected(f"document {event.document_id} ({event.file_name}) could not be "
                           f"fetched: {_REFUSED[type(exc)]}; the sender can send it again "
                           "with a fresh link") from exc
    if len(content) != event.size_bytes:
        raise Rejected(f"document {event.document_id} ({event.file_name}) is {len(content)} "
                       f"bytes, not the {event.size_bytes} its event gives")
    digest = hashlib.sha256(content).hexdigest()
    if digest != event.sha256:
        raise Rejected(f"document {event.document_id} ({event.file_name}) does not match its "
                       f"SHA-256: the event gives {event.sha256}, the bytes hash to {digest} "
                       "(changed after it was sent); it is not accepted")
    await save_document(applied.conn, event, "incoming", applied.envelope.source_box, content,
                        None)


_REFUSED: dict[type[BoxbusError], str] = {
    ObjectStoreDenied: "the store refused the link (expired, or not valid)",
    ObjectMissing: "the store has no such object",
    ObjectTooLarge: "the object is larger than the event says",
}


async def save_document(conn: asyncpg.Connection, event: DocumentAttached, direction: str,
                        counterparty: str, content: bytes | None, key: str | None) -> None:
    await conn.execute(
        "INSERT INTO documents (document_id, direction, order_id, counterparty, document_type, "
        "file_name, media_type, sha256, size_bytes, carried, object_key, content) VALUES ($1, "
        "$2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        event.document_id, direction, event.subject_id, counterparty,
        event.document_type.value, event.file_name, event.media_type, event.sha256,
        event.size_bytes, "inline" if event.content is not None else "claim-check", key,
        content)


async def documents(conn: asyncpg.Connection, order_id: str | None = None
                    ) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        "SELECT document_id, direction, order_id, counterparty, document_type, file_name, "
        "media_type, sha256, size_bytes, carried, at FROM documents WHERE $1::text IS NULL OR "
        "order_id = $1 ORDER BY at, document_id", order_id)]
