"""The HTTP relay's bodies and cache: shared growing bodies, freshness, a bounded LRU.

A :class:`Body` is one response body. It grows while it downloads, and any
number of readers (one per TFTP transfer) read it at their own offsets, each
at its client's pace: a phone on a slow link never holds back the others, and
500 phones asking for one URL read one download. A reader asking for bytes
that have not arrived yet registers a waiter and is woken when they have, or
when the body ends or fails.

Bytes live in memory (:class:`MemoryStorage`) or in a file of ``cache_dir``
(:class:`FileStorage`, read with ``pread`` so readers share one descriptor
without sharing a file position).

:class:`CacheIndex` keeps complete bodies that HTTP allows to be stored, with
their validators (ETag, Last-Modified) and freshness, under a byte bound,
least recently used first out. With ``cache_dir`` each entry is two files,
``<sha256 of the URL>.body`` and ``.json``, so a restarted server reuses
them. Time is the reactor's (``IReactorTime.seconds``), so tests drive
expiry with ``task.Clock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.web.http import stringToDatetime

from ctftp.errors import RequestRefused
from ctftp.logs import logger

__all__ = [
    "Body",
    "CacheIndex",
    "CachePolicy",
    "Entry",
    "FileStorage",
    "MemoryStorage",
    "cachePolicy",
    "CACHED_HEADERS",
]

_log = logger("ctftp.httpcache")

#: Response headers an entry keeps: what freshness and revalidation need. A
#: 304 replaces those it carries (RFC 9111 section 4.3.4).
CACHED_HEADERS = ("cache-control", "expires", "date", "age", "etag", "last-modified", "vary")


# -- storage -------------------------------------------------------------------


class Storage(Protocol):
    """Where the bytes of a body are kept."""

    def append(self, data: bytes) -> None: ...

    def readAt(self, offset: int, size: int) -> bytes: ...

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def present(self) -> bool: ...


class MemoryStorage:
    """A body in memory; freed with the last reference to it."""

    def __init__(self, data: bytes = b"") -> None:
        self._data = bytearray(data)

    def append(self, data: bytes) -> None:
        self._data += data

    def readAt(self, offset: int, size: int) -> bytes:
        return bytes(self._data[offset : offset + size])

    def acquire(self) -> None:
        """Memory needs no descriptor."""

    def present(self) -> bool:
        """Memory is always there."""
        return True

    def release(self) -> None:
        """Memory needs no descriptor."""


class FileStorage:
    """A body in a file of ``cache_dir``.

    While it downloads it is ``.part`` file of its own; :meth:`commit`
    renames it into the cache. The descriptor stays open while anyone uses
    the body (the download, each reader) and is closed after the last; a
    reader of a cached body opens it again. A body never committed has its
    file removed when the last user is done. An evicted body's file is
    removed by the index; readers holding the descriptor read on (POSIX keeps
    an unlinked file while it is open).
    """

    def __init__(self, path: str, *, create: bool) -> None:
        self.path = path
        self.committed = not create
        self._users = 0
        self._fd = -1
        if create:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(path, flags, 0o600)

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def readAt(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def acquire(self) -> None:
        """One more user; opens the file again if nobody had it open."""
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self.committed:
            _unlink(self.path)

    def present(self) -> bool:
        """Whether a new reader can open it: some user has it open, or its
        file is still there (another worker sharing the folder, or an
        operator, may have removed it)."""
        return self._fd >= 0 or os.path.exists(self.path)

    def commit(self, path: str) -> None:
        """Move the finished download into the cache under ``path`` (replacing
        an older body there, whose readers keep their descriptor)."""
        os.replace(self.path, path)
        self.path = path
        self.committed = True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        _log.warn("cannot remove {path}: {error}", path=path, error=e)


# -- bodies --------------------------------------------------------------------


@dataclass(slots=True)
class _Waiter:
    need: int
    wake: Callable[[], None]


class Body:
    """One response body, shared by every reader of it.

    ``expected`` is the Content-Length of an identity-encoded response (the
    size a streaming reader announces as tsize), else ``None``. The body is
    ``complete`` only once the origin ended it with every byte it promised;
    until then no reader sees its end, so a truncated body is never served
    as a whole file.
    """

    def __init__(self, storage: Any, expected: int | None = None) -> None:
        self.storage = storage
        self.expected = expected
        self.length = 0
        self.complete = False
        self.error: RequestRefused | None = None
        self._waiters: list[_Waiter] = []
        self._completion: list[Deferred[Body]] = []

    @classmethod
    def stored(cls, storage: Any, length: int) -> Body:
        """A body already complete (a cache entry loaded from disk)."""
        body = cls(storage, length)
        body.length = length
        body.complete = True
        return body

    # -- the download side --

    def append(self, data: bytes) -> None:
        self.storage.append(data)
        self.length += len(data)
        if self._waiters:
            length = self.length
            ready = [w for w in self._waiters if w.need <= length]
            if ready:
                self._waiters = [w for w in self._waiters if w.need > length]
                for waiter in ready:
                    waiter.wake()

    def finish(self) -> None:
        """Every byte is there: wake everyone (short reads now mean the end)."""
        self.complete = True
        self._wakeAll()

    def fail(self, error: RequestRefused) -> None:
        """The download failed: every reader, now and later, gets ``error``."""
        if self.complete or self.error is not None:
            return
        self.error = error
        self._wakeAll()

    def _wakeAll(self) -> None:
        waiters, self._waiters = self._waiters, []
        completion, self._completion = self._completion, []
        for waiter in waiters:
            waiter.wake()
        for d in completion:
            if self.error is not None:
                d.errback(self.error)
            else:
                d.callback(self)

    # -- the reading side --

    @property
    def usable(self) -> bool:
        """Not failed: a new reader may still join it."""
        return self.error is None

    def readAt(self, offset: int, size: int) -> bytes | None:
        """``size`` bytes at ``offset``, fewer only at the end of a complete
        body; ``None`` while they have not arrived. Raises the body's error."""
        if self.error is not None:
            raise self.error
        if offset + size <= self.length or self.complete:
            if offset >= self.length:
                return b""
            return self.storage.readAt(offset, min(size, self.length - offset))
        return None

    def wait(self, need: int, wake: Callable[[], None]) -> _Waiter:
        """Call ``wake`` once ``need`` bytes are there, or at the end or failure."""
        waiter = _Waiter(need, wake)
        self._waiters.append(waiter)
        return waiter

    def forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def whenComplete(self) -> Deferred[Body]:
        """Fires with the body once complete; fails with its error."""
        if self.complete:
            return succeed(self)
        d: Deferred[Body] = Deferred()
        if self.error is not None:
            d.errback(self.error)
        else:
            self._completion.append(d)
        return d

    def chunks(self, size: int = 1 << 20) -> Iterable[bytes]:
        """The bytes of a complete body, in pieces (netascii sizing)."""
        offset = 0
        while offset < self.length:
            chunk = self.storage.readAt(offset, min(size, self.length - offset))
            if not chunk:
                return
            yield chunk
            offset += len(chunk)


# -- freshness -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What the headers of a response allow (RFC 9111, for a shared cache).

    ``storable``: may be kept at all. ``noCache``: must be revalidated before
    each use. ``freshUntil``: reactor time until which it may be served
    without asking the origin.
    """

    storable: bool
    noCache: bool
    freshUntil: float


def _directives(value: str) -> dict[str, str]:
    """Cache-Control directives, names lower-cased, quotes dropped from values."""
    found: dict[str, str] = {}
    for item in value.split(","):
        name, _, argument = item.strip().partition("=")
        name = name.strip().lower()
        if name:
            found.setdefault(name, argument.strip().strip('"'))
    return found


def _seconds(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def _httpDate(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(stringToDatetime(value.encode("latin-1")))
    except (ValueError, UnicodeEncodeError, IndexError, KeyError):
        return None


def cachePolicy(headers: Mapping[str, str], now: float) -> CachePolicy:
    """The :class:`CachePolicy` of a response with ``headers`` (lower-case
    names) received at reactor time ``now``.

    Freshness: ``s-maxage`` (this is a shared cache) wins over ``max-age``,
    which wins over ``Expires`` (taken relative to the response's ``Date``
    when there is one, so clock skew with the origin does not matter; an
    invalid ``Expires`` means already stale); ``Age`` is subtracted. With
    none of them a response is stale at once: ctftp makes up no heuristic
    lifetime, it revalidates. ``no-store``, ``private`` and ``Vary: *``
    forbid storing; ``no-cache`` stores but revalidates every use. A
    response that would need revalidating but has no validator is not worth
    storing.
    """
    directives = _directives(headers.get("cache-control", ""))
    storable = not ({"no-store", "private"} & directives.keys())
    if headers.get("vary", "").strip() == "*":
        storable = False
    noCache = "no-cache" in directives
    lifetime: float | None = _seconds(directives.get("s-maxage"))
    if lifetime is None:
        lifetime = _seconds(directives.get("max-age"))
    if lifetime is None and "expires" in headers:
        expires = _httpDate(headers["expires"])
        if expires is None:
            lifetime = 0.0
        else:
            date = _httpDate(headers.get("date"))
            lifetime = expires - (date if date is not None else now)
    age = _seconds(headers.get("age")) or 0
    fresh = max(0.0, (lifetime or 0.0) - age)
    hasValidator = "etag" in headers or "last-modified" in headers
    if not hasValidator and (noCache or fresh <= 0):
        storable = False
    return CachePolicy(storable, noCache, now + fresh)


# -- the index -------------------------------------------------------------------


@dataclass(slots=True)
class Entry:
    """A stored response: its complete body and the headers that govern it."""

    url: str
    body: Body
    headers: dict[str, str]
    policy: CachePolicy
    size: int = field(default=0)

    def fresh(self, now: float) -> bool:
        return not self.policy.noCache and now < self.policy.freshUntil

    def validators(self) -> dict[str, str]:
        """Headers of a conditional GET for this entry."""
        found = {}
        if "etag" in self.headers:
            found["If-None-Match"] = self.headers["etag"]
        if "last-modified" in self.headers:
            found["If-Modified-Since"] = self.headers["last-modified"]
        return found


def _key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()


class CacheIndex:
    """Complete, storable bodies by URL, at most ``maxBytes`` of them, LRU.

    With ``folder`` the bodies are files there and survive a restart: at
    start-up :meth:`load` takes back every ``<key>.body`` whose ``.json``
    names a URL hashing to the key and the body's size, and removes ctftp's
    own leftovers (``.part`` files of processes that are gone, orphaned
    halves). Other files in the folder are left alone.
    """

    def __init__(self, maxBytes: int, folder: str = "") -> None:
        self.maxBytes = maxBytes
        self.folder = folder
        self.bytes = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._parts = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, url: str) -> bool:
        return url in self._entries

    def get(self, url: str) -> Entry | None:
        """The entry of ``url``, now the most recently used."""
        entry = self._entries.get(url)
        if entry is not None:
            self._entries.move_to_end(url)
        return entry

    # -- storage for new downloads --

    def newStorage(self, url: str) -> Any:
        """Where a new download of ``url`` goes: a ``.part`` file of this
        process in the folder, or memory."""
        if not self.folder:
            return MemoryStorage()
        self._parts += 1
        name = f"{_key(url)}.{os.getpid()}.{self._parts}.part"
        return FileStorage(os.path.join(self.folder, name), create=True)

    # -- adding and dropping --

    def store(self, url: str, body: Body, headers: dict[str, str], policy: CachePolicy) -> bool:
        """Keep a complete body; False (and nothing kept) when it may not or
        does not fit."""
        if not policy.storable or body.length > self.maxBytes or self.maxBytes <= 0:
            self.drop(url)
            return False
        if isinstance(body.storage, FileStorage):
            key = _key(url)
            try:
                body.storage.commit(os.path.join(self.folder, key + ".body"))
                self._writeMeta(key, url, body.length, headers, policy)
            except OSError as e:
                _log.warn("cache: cannot store {url}: {error}", url=url, error=e)
                self._forget(url)
                return False
        self._forget(url)
        entry = Entry(url, body, headers, policy, body.length)
        self._entries[url] = entry
        self.bytes += entry.size
        self._evict()
        return True

    def refresh(self, entry: Entry, headers: Mapping[str, str], policy: CachePolicy) -> None:
        """A 304 answered a revalidation: take its headers and freshness."""
        entry.headers.update(headers)
        entry.policy = policy
        if not policy.storable:
            self.drop(entry.url)
            return
        if self.folder and entry.url in self._entries:
            try:
                self._writeMeta(_key(entry.url), entry.url, entry.size, entry.headers, policy)
            except OSError as e:
                _log.warn("cache: cannot update {url}: {error}", url=entry.url, error=e)

    def drop(self, url: str) -> None:
        """Forget ``url`` and remove its files (readers keep what they opened)."""
        entry = self._forget(url)
        if entry is not None and self.folder:
            self._removeFiles(_key(url), entry.body)

    def _forget(self, url: str) -> Entry | None:
        entry = self._entries.pop(url, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry

    def _evict(self) -> None:
        while self.bytes > self.maxBytes and self._entries:
            url = next(iter(self._entries))
            _log.debug("cache: evicting {url}", url=url)
            self.drop(url)

    def _removeFiles(self, key: str, body: Body) -> None:
        """Remove an entry's files. Its storage stays ``committed``, so that a
        reader finishing later never removes a newer body stored at the same
        path."""
        storage = body.storage
        bodyPath = os.path.join(self.folder, key + ".body")
        if isinstance(storage, FileStorage) and storage.path == bodyPath:
            _unlink(bodyPath)
        _unlink(os.path.join(self.folder, key + ".json"))

    def clear(self) -> None:
        """Forget everything in memory (service stop); files stay for reuse."""
        self._entries.clear()
        self.bytes = 0

    # -- the folder --

    def _writeMeta(
        self, key: str, url: str, size: int, headers: Mapping[str, str], policy: CachePolicy
    ) -> None:
        meta = {
            "url": url,
            "size": size,
            "headers": dict(headers),
            "storable": policy.storable,
            "no_cache": policy.noCache,
            "fresh_until": policy.freshUntil,
        }
        path = os.path.join(self.folder, key + ".json")
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(meta, handle)
        os.replace(temporary, path)

    def load(self) -> None:
        """Take back the entries a previous run left in the folder."""
        if not self.folder:
            return
        os.makedirs(self.folder, exist_ok=True)
        names = set(os.listdir(self.folder))
        found: list[tuple[float, Entry]] = []
        for name in sorted(names):
            path = os.path.join(self.folder, name)
            if name.endswith((".part", ".tmp")):
                if not _ownerAlive(name):
                    _unlink(path)
                continue
            if not name.endswith(".json") or len(name) != 69:
                if name.endswith(".body") and len(name) == 69 and name[:64] + ".json" not in names:
                    _unlink(path)
                continue
            key = name[:64]
            entry = self._loadEntry(key, path)
            if entry is None:
                _unlink(path)
                _unlink(os.path.join(self.folder, key + ".body"))
                continue
            try:
                used = os.stat(path).st_mtime
            except OSError:
                used = 0.0
            found.append((used, entry))
        for _, entry in sorted(found, key=lambda pair: pair[0]):
            self._entries[entry.url] = entry
            self.bytes += entry.size
        self._evict()
        if self._entries:
            _log.info(
                "cache: {count} entries ({bytes} bytes) reused from {folder}",
                count=len(self._entries),
                bytes=self.bytes,
                folder=self.folder,
            )

    def _loadEntry(self, key: str, metaPath: str) -> Entry | None:
        try:
            with open(metaPath, encoding="utf-8") as handle:
                meta = json.load(handle)
            url, size = meta["url"], meta["size"]
            headers = {str(k): str(v) for k, v in meta["headers"].items()}
            policy = CachePolicy(
                bool(meta["storable"]), bool(meta["no_cache"]), float(meta["fresh_until"])
            )
            bodyPath = os.path.join(self.folder, key + ".body")
            if not isinstance(url, str) or _key(url) != key or os.stat(bodyPath).st_size != size:
                return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        body = Body.stored(FileStorage(bodyPath, create=False), size)
        return Entry(url, body, headers, policy, size)


def _ownerAlive(name: str) -> bool:
    """Whether the process that named a ``.part``/``.tmp`` file still runs
    (workers share a cache folder; one must not remove another's download)."""
    for part in name.split(".")[1:]:
        if part.isdigit():
            pid = int(part)
            if pid == os.getpid():
                return False
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
    return False
