"""The least a Python server can spend on a lock-step block, for comparison.

Two deliberately minimal read-only TFTP servers, octet only, no checks of a
real server (no TID, no duplicates, no timer, no logs, one transfer at a
time for ``bare``): they answer what ``tftpload`` asks in scenarios c1/c2 so
that docs/performance.md ("Where a lock-step block goes") can put ctftp's
time per block beside what Python and Twisted cost on their own:

* ``bare``: a blocking loop, one ``epoll.poll`` per block, then
  ``recv``, ``os.read`` and ``send``; no reactor at all;
* ``twisted``: the smallest Twisted server, a ``DatagramProtocol`` per
  transfer on ``reactor.listenUDP`` doing the same in ``datagramReceived``.

Run one, then point the load generator at it::

    .venv/bin/python benchmarks/floor.py twisted --port 6992 --root DIR &
    ../shared/bench/tftpload --host 127.0.0.1 --port 6992 --file big.bin --blksize 8192

It serves until it is killed. Not a server to use: it reads any path it is
asked for.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
from typing import Any

_HEADER = struct.Struct("!HH")
_OP_DATA, _OP_OACK = 3, 6


def parseRequest(datagram: bytes) -> tuple[str, int, dict[bytes, bytes]]:
    """The file name, blksize and options of an RRQ."""
    parts = datagram[2:].split(b"\0")
    options = dict(zip(parts[2::2], parts[3::2], strict=False))
    return parts[0].decode(), int(options.get(b"blksize", 512)), options


def optionAck(options: dict[bytes, bytes], blksize: int, size: int) -> bytes | None:
    """The OACK for blksize and tsize when asked for, else None."""
    agreed = {b"blksize": str(blksize).encode(), b"tsize": str(size).encode()}
    named = [key + b"\0" + agreed[key] + b"\0" for key in agreed if key in options]
    return b"\0\6" + b"".join(named) if named else None


def serveBare(port: int, root: str) -> None:
    """One transfer at a time, blocking, one ``epoll.poll`` per block."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", port))
    while True:
        request, client = listener.recvfrom(2048)
        name, blksize, options = parseRequest(request)
        fd = os.open(os.path.join(root, name), os.O_RDONLY)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.connect(client)
            poller = select.epoll()
            poller.register(s.fileno(), select.EPOLLIN)
            oack = optionAck(options, blksize, os.fstat(fd).st_size)
            block, last = 0, blksize
            if oack is None:
                block, data = 1, os.read(fd, blksize)
                last = len(data)
                s.send(_HEADER.pack(_OP_DATA, 1) + data)
            else:
                s.send(oack)
            while True:
                poller.poll(5.0)
                ack = s.recv(2048)
                if _HEADER.unpack_from(ack)[1] != block & 0xFFFF:
                    continue
                if block and last < blksize:
                    break
                block += 1
                data = os.read(fd, blksize)
                last = len(data)
                s.send(_HEADER.pack(_OP_DATA, block & 0xFFFF) + data)
            poller.close()
        os.close(fd)


def serveTwisted(port: int, root: str) -> None:
    """A ``DatagramProtocol`` per transfer, on the default reactor."""
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    class Transfer(DatagramProtocol):
        def __init__(self, fd: int, blksize: int, client: Any, oack: bytes | None) -> None:
            self.fd, self.blksize, self.client, self.oack = fd, blksize, client, oack
            self.block, self.last = 0, blksize

        def startProtocol(self) -> None:
            if self.oack is None:
                self.sendNext()
            else:
                self.transport.write(self.oack, self.client)

        def sendNext(self) -> None:
            self.block += 1
            data = os.read(self.fd, self.blksize)
            self.last = len(data)
            self.transport.write(_HEADER.pack(_OP_DATA, self.block & 0xFFFF) + data, self.client)

        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            if _HEADER.unpack_from(datagram)[1] != self.block & 0xFFFF:
                return
            if self.block and self.last < self.blksize:
                os.close(self.fd)
                self.transport.stopListening()
                return
            self.sendNext()

    class Listener(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            name, blksize, options = parseRequest(datagram)
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            oack = optionAck(options, blksize, os.fstat(fd).st_size)
            reactor.listenUDP(0, Transfer(fd, blksize, addr, oack), interface="127.0.0.1")

    reactor.listenUDP(port, Listener(), interface="127.0.0.1")
    reactor.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["bare", "twisted"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True, help="folder of the files served")
    args = parser.parse_args(argv)
    (serveBare if args.server == "bare" else serveTwisted)(args.port, args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
