"""ctftp.httpcache: freshness rules, shared bodies, the LRU bound, the cache folder at restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from twisted.python.failure import Failure

from ctftp.errors import RequestRefused
from ctftp.httpcache import (
    Body,
    CacheIndex,
    CachePolicy,
    FileStorage,
    MemoryStorage,
    cachePolicy,
)
from ctftp.relay import RelayFile, relayFailed

NOW = 1_000_000.0
DATE = "Mon, 01 Dec 2025 10:00:00 GMT"
LATER = "Mon, 01 Dec 2025 10:01:40 GMT"  # DATE + 100 s


@pytest.mark.parametrize(
    "headers, storable, noCache, lifetime",
    [
        ({"cache-control": "max-age=60"}, True, False, 60),
        ({"cache-control": "max-age=60, s-maxage=5"}, True, False, 5),
        ({"cache-control": 'public, max-age="30"'}, True, False, 30),
        ({"cache-control": "max-age=60", "age": "20"}, True, False, 40),
        ({"cache-control": "max-age=60", "age": "90"}, False, False, 0),  # stale, no validator
        ({"expires": LATER, "date": DATE}, True, False, 100),
        ({"expires": "0", "etag": '"e"'}, True, False, 0),
        ({"expires": LATER, "cache-control": "max-age=7"}, True, False, 7),
        ({"cache-control": "no-cache", "etag": '"e"'}, True, True, 0),
        ({"cache-control": "no-cache, max-age=60"}, False, True, 60),
        ({"cache-control": "no-store, max-age=60"}, False, False, 60),
        ({"cache-control": "private, max-age=60"}, False, False, 60),
        ({"cache-control": "max-age=60", "vary": "*"}, False, False, 60),
        ({"last-modified": DATE}, True, False, 0),
        ({}, False, False, 0),
    ],
)
def test_cache_policy(
    headers: dict[str, str], storable: bool, noCache: bool, lifetime: int
) -> None:
    policy = cachePolicy(headers, NOW)
    assert (policy.storable, policy.noCache) == (storable, noCache)
    assert policy.freshUntil == NOW + lifetime


def test_expires_without_date_uses_the_clock() -> None:
    # LATER is 2025-12-01T10:01:40Z as epoch seconds.
    policy = cachePolicy({"expires": LATER}, 1764583300.0 - 40)
    assert policy.freshUntil == 1764583300.0


# -- bodies ---------------------------------------------------------------------


def test_body_readers_each_at_their_own_pace() -> None:
    body = Body(MemoryStorage(), 10)
    woken: list[str] = []
    body.wait(4, lambda: woken.append("a"))
    body.wait(8, lambda: woken.append("b"))
    assert body.readAt(0, 4) is None
    body.append(b"0123")
    assert woken == ["a"] and body.readAt(0, 4) == b"0123"
    assert body.readAt(2, 4) is None  # 2..6 not there yet
    body.append(b"4567")
    assert woken == ["a", "b"]
    body.append(b"89")
    assert body.readAt(8, 4) is None  # the end is not known yet
    body.finish()
    assert body.readAt(8, 4) == b"89" and body.readAt(10, 4) == b""


def test_body_failure_reaches_waiters_and_later_readers() -> None:
    body = Body(MemoryStorage(), 10)
    woken: list[int] = []
    body.wait(5, lambda: woken.append(1))
    done = body.whenComplete()
    errors: list[Failure] = []
    done.addErrback(errors.append)
    body.append(b"abc")
    body.fail(relayFailed("cut"))
    assert woken == [1] and errors[0].value.message == "cut"
    with pytest.raises(RequestRefused):
        body.readAt(0, 1)


def test_relay_file_reads_sync_when_it_can_and_async_when_it_must() -> None:
    body = Body(MemoryStorage(), 6)
    body.append(b"abcd")
    reader = RelayFile(body)
    assert reader.size == 6
    assert reader.read(2) == b"ab"
    d = reader.read(3)
    assert not isinstance(d, bytes)
    got: list[bytes] = []
    d.addCallback(got.append)
    body.append(b"e")
    assert got == [b"cde"]
    last = reader.read(3)
    body.append(b"f")
    assert not isinstance(last, bytes) and not last.called  # not known complete yet
    body.finish()
    assert last.result == b"f"
    assert reader.read(3) == b""
    reader.close()


def test_closing_a_waiting_reader_forgets_it() -> None:
    body = Body(MemoryStorage(), 6)
    reader = RelayFile(body)
    d = reader.read(3)
    d.addErrback(lambda f: None)
    d.cancel()
    reader.close()
    body.append(b"abcdef")
    body.finish()


# -- the index ------------------------------------------------------------------


FRESH = CachePolicy(storable=True, noCache=False, freshUntil=NOW + 60)


def complete(data: bytes, storage: object | None = None) -> Body:
    body = Body(storage or MemoryStorage(), len(data))
    body.append(data)
    body.finish()
    return body


def test_memory_index_is_lru_bounded() -> None:
    index = CacheIndex(25)
    for name in "abc":
        assert index.store(name, complete(b"x" * 10), {}, FRESH)
    assert len(index) == 2 and "a" not in index and index.bytes == 20
    index.get("b")  # b is now the most recent: c goes next
    assert index.store("d", complete(b"y" * 10), {}, FRESH)
    assert sorted(index._entries) == ["b", "d"]
    assert not index.store("big", complete(b"z" * 26), {}, FRESH)
    assert not index.store("e", complete(b"1"), {}, CachePolicy(False, False, 0))
    assert "big" not in index and "e" not in index


def test_zero_bound_keeps_nothing() -> None:
    index = CacheIndex(0)
    assert not index.store("a", complete(b"x"), {}, FRESH) and len(index) == 0


def download(index: CacheIndex, url: str, data: bytes) -> Body:
    """What the relay does with a body: a .part file, then stored."""
    storage = index.newStorage(url)
    body = Body(storage, len(data))
    storage.acquire()
    body.append(data)
    index.store(url, body, {"etag": '"e"', "cache-control": "max-age=60"}, FRESH)
    body.finish()
    storage.release()
    return body


def test_folder_cache_is_reused_after_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    index = CacheIndex(1000, str(folder))
    index.load()
    download(index, "http://h/a", b"A" * 100)
    download(index, "http://h/b", b"B" * 200)
    names = sorted(os.listdir(folder))
    assert len(names) == 4 and all(n.endswith((".body", ".json")) for n in names)
    # Leftovers of a crashed process, an orphan, a corrupt entry, a stranger's file.
    (folder / ("0" * 64 + ".999999999.1.part")).write_bytes(b"half")
    (folder / ("1" * 64 + ".body")).write_bytes(b"orphan")
    (folder / ("2" * 64 + ".json")).write_text("{not json")
    (folder / "README").write_text("mine")
    again = CacheIndex(1000, str(folder))
    again.load()
    assert sorted(again._entries) == ["http://h/a", "http://h/b"] and again.bytes == 300
    entry = again.get("http://h/b")
    assert entry is not None and entry.headers["etag"] == '"e"'
    assert entry.policy == FRESH and entry.validators() == {"If-None-Match": '"e"'}
    reader = RelayFile(entry.body)
    assert reader.read(1000) == b"B" * 200
    reader.close()
    assert sorted(os.listdir(folder)) == sorted([*names, "README"])


def test_folder_entry_with_a_wrong_size_is_dropped(tmp_path: Path) -> None:
    index = CacheIndex(1000, str(tmp_path))
    download(index, "http://h/a", b"A" * 100)
    (body,) = tmp_path.glob("*.body")
    body.write_bytes(b"A" * 99)
    again = CacheIndex(1000, str(tmp_path))
    again.load()
    assert len(again) == 0 and list(tmp_path.iterdir()) == []


def test_folder_restart_over_a_smaller_bound_evicts(tmp_path: Path) -> None:
    index = CacheIndex(1000, str(tmp_path))
    download(index, "http://h/a", b"A" * 100)
    download(index, "http://h/b", b"B" * 100)
    meta = next(p for p in tmp_path.glob("*.json") if "http://h/a" in p.read_text())
    os.utime(meta, (1, 1))  # a is the least recently stored
    again = CacheIndex(150, str(tmp_path))
    again.load()
    assert list(again._entries) == ["http://h/b"]
    assert len(list(tmp_path.iterdir())) == 2


def test_evicted_file_stays_readable_by_its_reader(tmp_path: Path) -> None:
    index = CacheIndex(150, str(tmp_path))
    body = download(index, "http://h/a", b"A" * 100)
    reader = RelayFile(body)
    download(index, "http://h/b", b"B" * 100)  # evicts a
    assert "http://h/a" not in index
    assert reader.read(200) == b"A" * 100
    reader.close()
    assert len(list(tmp_path.iterdir())) == 2  # only b's files


def test_replaced_body_does_not_remove_the_new_file(tmp_path: Path) -> None:
    index = CacheIndex(1000, str(tmp_path))
    old = download(index, "http://h/a", b"old")
    reader = RelayFile(old)
    download(index, "http://h/a", b"new!")
    assert reader.read(10) == b"old"
    reader.close()
    entry = index.get("http://h/a")
    assert entry is not None
    fresh = RelayFile(entry.body)
    assert fresh.read(10) == b"new!"
    fresh.close()


def test_unstored_download_leaves_no_file(tmp_path: Path) -> None:
    index = CacheIndex(1000, str(tmp_path))
    storage = index.newStorage("http://h/x")
    assert isinstance(storage, FileStorage)
    body = Body(storage, 3)
    storage.acquire()
    reader = RelayFile(body)
    body.append(b"abc")
    index.store("http://h/x", body, {}, CachePolicy(False, False, 0))
    body.finish()
    storage.release()
    assert reader.read(5) == b"abc"
    assert len(list(tmp_path.iterdir())) == 1  # the .part, still read
    reader.close()
    assert list(tmp_path.iterdir()) == []


def test_refresh_rewrites_the_metadata(tmp_path: Path) -> None:
    index = CacheIndex(1000, str(tmp_path))
    download(index, "http://h/a", b"A")
    entry = index.get("http://h/a")
    assert entry is not None
    later = CachePolicy(True, False, NOW + 600)
    index.refresh(entry, {"etag": '"f"'}, later)
    (meta,) = tmp_path.glob("*.json")
    saved = json.loads(meta.read_text())
    assert saved["fresh_until"] == NOW + 600 and saved["headers"]["etag"] == '"f"'


def test_a_removed_cache_file_is_fetched_again(tmp_path: Path) -> None:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock
    from twisted.web.iweb import IAgent
    from zope.interface import implementer

    from ctftp.relay import HTTPRelay
    from ctftp.resolver import RemoteTarget

    @implementer(IAgent)
    class Agent:
        def __init__(self) -> None:
            self.asked = 0

        def request(self, *args: object, **kw: object) -> Deferred[object]:
            self.asked += 1
            return Deferred()

    agent = Agent()
    relay = HTTPRelay(Clock(), agent=agent, cacheDir=str(tmp_path))  # type: ignore[arg-type]
    download(relay.cache, "http://h/a", b"A" * 10)
    assert relay.open(RemoteTarget("http://h/a")).called and agent.asked == 0
    for path in tmp_path.iterdir():
        path.unlink()
    relay.open(RemoteTarget("http://h/a"))
    assert agent.asked == 1 and "http://h/a" not in relay.cache
