"""Large payloads: values over a size threshold live in the JetStream Object Store.

History events, dispatches and the instances KV then carry a small reference in place of the
value (the "claim check" pattern), so a 10 MB activity result never meets the server's message
size limit and histories stay quick to read::

    {"$jetloom_payload": {"bucket": "jetloom_payloads", "name": "<scope>/<sha256>",
                          "size": 10485760, "sha256": "<hex>"}}

``scope`` is the instance that produced the value; the name is derived from the content, so
storing the same value twice (a retried task, a redelivered activity) writes one object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
from collections import OrderedDict
from collections.abc import Iterable

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

log = structlog.get_logger("jetloom.payloads")

REF_KEY = "$jetloom_payload"
DEFAULT_THRESHOLD = 256 * 1024
"""Payloads larger than this many bytes (encoded JSON) are offloaded by default."""
MIN_THRESHOLD = 1024
_MAX_REF_SIZE = 1024  # a reference is ~200 bytes; anything bigger is an ordinary value
_RESOLVED_CACHE_BYTES = 64 * 1024 * 1024
_STORED_NAMES_KEPT = 10_000
_DIGESTS_KEPT = 256


class PayloadRef(msgspec.Struct, frozen=True):
    """Where an offloaded payload lives."""

    bucket: str
    name: str
    size: int
    sha256: str


class _Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ref: PayloadRef = msgspec.field(name=REF_KEY)


class PayloadMissingError(LookupError):
    """A history or record refers to an offloaded payload that is not in the Object Store."""


_envelope_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_MARKER = REF_KEY.encode()


def payload_ref(raw: bytes | msgspec.Raw) -> PayloadRef | None:
    """The reference ``raw`` holds, or None when it is an ordinary JSON value."""
    if len(raw) > _MAX_REF_SIZE:
        return None
    data = bytes(raw)
    if _MARKER not in data:
        return None
    try:
        return _envelope_decoder.decode(data).ref
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class PayloadStore:
    """Offloads and fetches large payloads in the Object Store bucket ``bucket``.

    ``threshold`` is the largest payload (encoded JSON bytes) kept inline. Fetched values are
    cached (up to 64 MB) and stored names remembered, so replays and retries cost no transfer.
    """

    def __init__(
        self, js: JetStreamContext, bucket: str, *, threshold: int, replicas: int = 1
    ) -> None:
        if threshold < MIN_THRESHOLD:
            raise ValueError(
                f"large_payload_threshold must be at least {MIN_THRESHOLD} bytes, got {threshold}"
            )
        self.js = js
        self.bucket = bucket
        self.threshold = threshold
        self.replicas = replicas
        self._store: ObjectStore | None = None
        self._store_lock = asyncio.Lock()
        self._stored: OrderedDict[str, None] = OrderedDict()
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._digests: OrderedDict[int, tuple[bytes | msgspec.Raw, str]] = OrderedDict()

    async def store(self, *, create: bool = True) -> ObjectStore:
        """The bucket, created on first use when ``create``."""
        async with self._store_lock:
            if self._store is None:
                try:
                    self._store = await self.js.object_store(self.bucket)
                except BucketNotFoundError:
                    if not create:
                        raise
                    self._store = await self.js.create_object_store(
                        self.bucket,
                        ObjectStoreConfig(
                            description="jetloom payloads over the inline size threshold",
                            storage=StorageType.FILE,
                            replicas=self.replicas,
                        ),
                    )
            return self._store

    def name_of(self, scope: str, raw: bytes | msgspec.Raw) -> str:
        """The object name of a payload of instance ``scope``."""
        return f"{scope}/{self._digest(raw)}"

    async def offload(self, scope: str, raw: msgspec.Raw) -> msgspec.Raw:
        """``raw`` itself if small enough, else the reference to its stored copy."""
        if len(raw) <= self.threshold:
            return raw
        digest = self._digest(raw)
        name = f"{scope}/{digest}"
        if name not in self._stored:
            data = bytes(raw)
            store = await self.store()
            try:
                info = await store.get_info(name)
                exists = info.size == len(data)
            except ObjectNotFoundError:
                exists = False
            if not exists:
                await store.put(name, data)
                log.debug("payload.offloaded", name=name, size=len(data))
            self._remember_stored(name)
            self._cache_value(name, data)
        ref = PayloadRef(bucket=self.bucket, name=name, size=len(raw), sha256=digest)
        return msgspec.Raw(_envelope_encoder.encode(_Envelope(ref)))

    def _digest(self, raw: bytes | msgspec.Raw) -> str:
        """The sha256 of ``raw``, remembered for the objects most recently seen (by identity:
        the same payload object is written again with every status update of its instance)."""
        key = id(raw)
        seen = self._digests.get(key)
        if seen is not None and seen[0] is raw:
            return seen[1]
        digest = hashlib.sha256(raw).hexdigest()
        self._digests[key] = (raw, digest)
        while len(self._digests) > _DIGESTS_KEPT:
            self._digests.popitem(last=False)
        return digest

    async def resolve(self, raw: bytes) -> bytes:
        """The value ``raw`` refers to (``raw`` itself when it is no reference).

        Raises:
            PayloadMissingError: the referenced object is gone (purged, or never stored).
        """
        ref = payload_ref(raw)
        if ref is None:
            return raw
        cached = self._cache.get(ref.name)
        if cached is not None:
            self._cache.move_to_end(ref.name)
            return cached
        store = await self.store(create=False) if ref.bucket == self.bucket else (
            await self.js.object_store(ref.bucket)
        )
        buffer = io.BytesIO()
        try:
            await store.get(ref.name, writeinto=buffer)
        except ObjectNotFoundError:
            raise PayloadMissingError(
                f"payload {ref.name!r} ({ref.size} bytes) is missing from object store "
                f"{ref.bucket!r}; it was purged or never stored"
            ) from None
        value = buffer.getvalue()
        if hashlib.sha256(value).hexdigest() != ref.sha256:
            raise PayloadMissingError(
                f"payload {ref.name!r} in object store {ref.bucket!r} does not match its "
                "reference's sha256"
            )
        self._cache_value(ref.name, value)
        return value

    async def delete(self, names: Iterable[str]) -> int:
        """Delete the named objects of this bucket; returns how many were deleted.

        Nothing of them is left: an Object Store delete keeps a marker (the object's
        metadata, flagged deleted) for watchers, and jetloom has none, so it is purged too.
        """
        deleted = 0
        names = sorted(set(names))
        if not names:
            return 0
        store = await self.store(create=False)
        for name in names:
            with contextlib.suppress(ObjectNotFoundError):
                await store.delete(name)
                deleted += 1
                encoded = base64.urlsafe_b64encode(name.encode()).decode()
                await self.js.purge_stream(
                    f"OBJ_{self.bucket}", subject=f"$O.{self.bucket}.M.{encoded}"
                )
            self._stored.pop(name, None)
            dropped = self._cache.pop(name, None)
            if dropped is not None:
                self._cached_bytes -= len(dropped)
        return deleted

    def _remember_stored(self, name: str) -> None:
        self._stored[name] = None
        while len(self._stored) > _STORED_NAMES_KEPT:
            self._stored.popitem(last=False)

    def _cache_value(self, name: str, value: bytes) -> None:
        if name in self._cache or len(value) > _RESOLVED_CACHE_BYTES // 4:
            return
        self._cache[name] = value
        self._cached_bytes += len(value)
        while self._cached_bytes > _RESOLVED_CACHE_BYTES:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)
