"""The protocol from a hand-driven Python socket: TIDs, duplicate requests, options."""

from __future__ import annotations

import pytest

from ._support import (
    OP_DATA,
    OP_ERROR,
    OP_OACK,
    SERVER_KIND,
    RawClient,
    Server,
    TftpError,
    ack,
    error,
    fetch,
    rrq,
)
from .conftest import TEXT, ServerFactory

pytestmark = pytest.mark.integration


def to_netascii(text: bytes) -> bytes:
    return text.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def test_wrong_tid_gets_error_5_and_the_transfer_goes_on(
    shared_server: Server, payloads: dict[str, bytes]
) -> None:
    expected = payloads["mib1.bin"]
    with (
        RawClient(shared_server.host, shared_server.port) as client,
        RawClient(shared_server.host, shared_server.port) as intruder,
    ):
        client.send(rrq("mib1.bin"))
        packet, tid = client.recv()
        assert (packet.opcode, packet.block) == (OP_DATA, 1), packet
        assert tid[1] != shared_server.port, "the transfer must run on a fresh port (its TID)"
        received = bytearray(packet.payload)
        block = 1
        intrusions = {1, 100, 1000}
        for _ in range(10_000):
            if block in intrusions:
                intruder.send(ack(block), tid)
                if SERVER_KIND == "ctftp":
                    answer, source = intruder.recv(5.0)
                    assert answer.opcode == OP_ERROR and answer.block == 5, answer
                    assert source == tid
                # (tftpd-hpa connects its socket: the kernel drops the intruder silently.)
                # The intruder's ACK moved nothing: the next packet the client sees
                # (if any before it acknowledges) is block `block` again, never block+1.
                for late, _ in client.drain(0.2):
                    assert late.opcode == OP_DATA and late.block == block & 0xFFFF, late
            if len(packet.payload) < 512:
                client.send(ack(block), tid)
                break
            client.send(ack(block), tid)
            for _ in range(10):
                packet, source = client.recv()
                if source == tid and packet.block == (block + 1) & 0xFFFF:
                    break
            else:
                pytest.fail(f"no DATA {block + 1}")
            assert packet.opcode == OP_DATA, packet
            received += packet.payload
            block += 1
        assert bytes(received) == expected


def test_duplicate_rrq_from_the_same_port_is_one_transfer(
    shared_server: Server, payloads: dict[str, bytes], ctftp_only: None
) -> None:
    # (tftpd-hpa fails this one: it forks a second transfer for the duplicate.)
    with RawClient(shared_server.host, shared_server.port) as client:
        client.send(rrq("b513.bin"))
        client.send(rrq("b513.bin"))
        first = client.drain(0.5)
        assert first, "no answer to the RRQ"
        tids = {source for _, source in first}
        assert len(tids) == 1, f"two transfers answered one client port: {first}"
        (tid,) = tids
        assert all(p.opcode == OP_DATA and p.block == 1 for p, _ in first), first
        client.send(ack(1), tid)
        packet, source = client.recv()
        assert (source, packet.opcode, packet.block) == (tid, OP_DATA, 2)
        assert first[0][0].payload + packet.payload == payloads["b513.bin"]
        client.send(ack(2), tid)
        # Nothing else must come: a second transfer would resend its DATA 1 after timeout_sec.
        later = client.drain(float(shared_server.config["timeout_sec"]) + 0.5)
        assert not [p for p, s in later if s != tid], later


@pytest.mark.parametrize("ending", ["error 8 after the oack", "final ack"])
def test_the_same_request_right_after_the_client_ended_is_answered_at_once(
    server_factory: ServerFactory, ending: str
) -> None:
    """Found by a black-box review (5 of 15 answered): the client's ERROR 8 or
    final ACK can still wait, unread, in the transfer's socket when its
    identical next request reaches the listener; it is read first, so the
    request starts a new transfer at once instead of after a client retry."""
    server = server_factory(log_dir="")  # no log file: the race showed most without
    request = rrq("b512.bin", options={"tsize": "0"})
    for _ in range(15):
        with RawClient(server.host, server.port) as client:
            client.send(request)
            oack, tid = client.recv()
            assert oack.opcode == OP_OACK, oack
            if ending == "final ack":
                client.send(ack(0), tid)
                for block in (1, 2):  # 512 bytes: one full block and an empty one
                    packet, _ = client.recv()
                    assert (packet.opcode, packet.block) == (OP_DATA, block), packet
                    client.send(ack(block), tid)
            else:
                client.send(error(8, "tsize probe"), tid)
            client.send(request)  # at once, from the same port
            again, second = client.recv(2.0)  # the client's own retry would come later
            assert again.opcode == OP_OACK and second != tid, (again, second)
            client.send(error(8, "done"), second)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"blksize": "1428", "tsize": "0"},
        {"blksize": "8192"},
        {"blksize": "1428", "windowsize": "16"},
        {"blksize": "65464", "windowsize": "4", "tsize": "0"},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "none",
)
@pytest.mark.parametrize("name", ["empty.bin", "b512.bin", "mib1.bin"])
def test_raw_fetch_with_options(
    shared_server: Server, payloads: dict[str, bytes], options: dict[str, str], name: str
) -> None:
    got = fetch(shared_server.host, shared_server.port, name, options=options)
    assert got == payloads[name]


def test_oack_reports_tsize(shared_server: Server, payloads: dict[str, bytes]) -> None:
    with RawClient(shared_server.host, shared_server.port) as client:
        client.send(rrq("b513.bin", options={"tsize": "0", "blksize": "1024"}))
        packet, tid = client.recv()
        assert packet.opcode == OP_OACK, packet
        assert packet.options == {"tsize": "513", "blksize": "1024"}
        client.send(ack(0), tid)
        data, _ = client.recv()
        assert data.opcode == OP_DATA and data.payload == payloads["b513.bin"]
        client.send(ack(1), tid)


def test_netascii_on_the_wire(shared_server: Server) -> None:
    got = fetch(shared_server.host, shared_server.port, "text.txt", mode="netascii")
    assert got == to_netascii(TEXT.encode())


def test_missing_file_is_error_1(shared_server: Server) -> None:
    with pytest.raises(TftpError) as caught:
        fetch(shared_server.host, shared_server.port, "no-such-file.bin")
    assert caught.value.code == 1


@pytest.mark.parametrize("name", ["../secret.txt", "a/../../secret.txt", "..\\secret.txt"])
def test_traversal_is_error_2(shared_server: Server, name: str) -> None:
    with pytest.raises(TftpError) as caught:
        fetch(shared_server.host, shared_server.port, name)
    if SERVER_KIND == "ctftp":
        assert caught.value.code == 2, caught.value


def test_netascii_tsize_is_the_converted_size(shared_server: Server, ctftp_only: None) -> None:
    with RawClient(shared_server.host, shared_server.port) as client:
        client.send(rrq("text.txt", mode="netascii", options={"tsize": "0"}))
        packet, tid = client.recv()
        client.send(error(0, "enough"), tid)
    assert packet.opcode == OP_OACK, packet
    assert packet.options["tsize"] == str(len(to_netascii(TEXT.encode())))
