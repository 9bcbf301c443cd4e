"""ctftp inside another Twisted application, on the real reactor and loopback.

Covers the embedding API (``makeService``, ``ServerConfig``, an application's
own ``IReadSource``), the shipped read client of ``ctftp.testing``, and that a
wildcard listener answers from the address each request was sent to.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

import ctftp
from ctftp.testing import TFTPClientError, fetch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "phone_configs.py"


def freePort(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loadExample():
    spec = importlib.util.spec_from_file_location("phone_configs", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest_twisted.inlineCallbacks
def test_generated_phone_configs(tmp_path):
    (tmp_path / "firmware.bin").write_bytes(b"\x7fELF" + bytes(3000))
    port = freePort()
    config = ctftp.ServerConfig(
        root_dir=str(tmp_path), listeners=f"127.0.0.1:{port}", file_log=False
    )
    service = loadExample().phoneService(config, reactor)
    service.startService()
    try:
        result = yield fetch(reactor, ("127.0.0.1", port), "SEP00AABBCCDDEE.cnf.xml")
        assert b"<deviceName>SEP00AABBCCDDEE</deviceName>" in result.data
        result = yield fetch(
            reactor, ("127.0.0.1", port), "/firmware.bin", options=(("blksize", "1024"),)
        )
        assert result.data == b"\x7fELF" + bytes(3000)
        assert result.options == {"blksize": "1024"}
        with pytest.raises(TFTPClientError) as caught:
            yield fetch(reactor, ("127.0.0.1", port), "missing.bin")
        assert caught.value.code == 1
    finally:
        yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_wildcard_listener_answers_from_the_address_asked(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"wildcard\n" * 100)
    port = freePort(host="0.0.0.0")
    service = ctftp.makeService(
        ctftp.ServerConfig(root_dir=str(tmp_path), listeners=f"0.0.0.0:{port}", file_log=False),
        reactor=reactor,
    )
    service.startService()
    try:
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            result = yield fetch(reactor, (address, port), "f.txt", interface="127.0.0.1")
            assert result.peer[0] == address
            assert result.data == b"wildcard\n" * 100
    finally:
        yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_ipv6_wildcard_serves_v4_mapped_and_v6_clients(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    (tmp_path / "f.txt").write_bytes(b"six\n" * 300)
    port = freePort(socket.AF_INET6, "::")
    service = ctftp.makeService(
        ctftp.ServerConfig(root_dir=str(tmp_path), listeners=f"[::]:{port}", file_log=False),
        reactor=reactor,
    )
    service.startService()
    try:
        result = yield fetch(reactor, ("::1", port), "f.txt", interface="::1")
        assert (result.peer[0], result.data) == ("::1", b"six\n" * 300)
        result = yield fetch(reactor, ("127.0.0.2", port), "f.txt", interface="127.0.0.1")
        assert (result.peer[0], result.data) == ("127.0.0.2", b"six\n" * 300)
    finally:
        yield service.stopService()
