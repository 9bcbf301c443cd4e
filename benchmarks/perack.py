"""Python's cost per DATA block of a read transfer, without sockets.

``run.py`` measures whole servers over loopback, where this shared VM moves
the figures by 10-20 % from one run to the next, and even by which side of
a comparison a server is on. This one drives ``ctftp.transfer.ReadTransfer``
in one process: a transport that only notes the last block it was handed,
a ``task.Clock`` for the timer, and each window's ACK handed straight to the
transfer as the client would send it. What is left is the read path's own
work per block: parsing the ACK, the timer, reading the file (from the page
cache) and building the packets. Compare two versions of it with:

    PYTHONPATH=/path/to/old/src .venv/bin/python benchmarks/perack.py
    .venv/bin/python benchmarks/perack.py

It prints microseconds per block, the best of ``--repeat`` transfers, for
each ``BLKSIZExWINDOWSIZE`` case.
"""

from __future__ import annotations

import argparse
import inspect
import os
import struct
import sys
import tempfile
import time
from typing import Any

from twisted.internet.task import Clock

from ctftp.sources import LocalFileSource
from ctftp.transfer import Outcome, ReadTransfer

CLIENT = ("127.0.0.1", 40000)
_ACK = struct.Struct("!HH")


class LastBlock:
    """A transport that sends nothing and remembers the last DATA's block."""

    block = 0

    def write(self, datagram: Any, addr: Any = None) -> None:
        self.block = int.from_bytes(datagram[2:4], "big")

    def writeDatagrams(self, datagrams: Any, addr: Any) -> None:
        self.write(datagrams[-1], addr)


def perBlock(path: str, blksize: int, windowsize: int) -> float:
    """Microseconds per block of one transfer of ``path``."""
    file = LocalFileSource([os.path.dirname(path)]).openPath(path)
    ended: list[Outcome] = []
    arguments: dict[str, Any] = {}
    if "readInto" in inspect.signature(ReadTransfer).parameters:  # since ctftp.window
        arguments["readInto"] = file.readInto
    transfer = ReadTransfer(
        clock=Clock(),
        client=CLIENT,
        file=file,
        read=file.read,
        blksize=blksize,
        windowsize=windowsize,
        timeout=5.0,
        maxRetries=5,
        oack=(),
        onDone=lambda _, outcome: ended.append(outcome),
        **arguments,
    )
    transport = LastBlock()
    transfer.makeConnection(transport)  # sends the first window
    blocks = os.path.getsize(path) // blksize + 1
    started = time.perf_counter()
    for _ in range(blocks + 1):
        if ended:
            break
        transfer.datagramReceived(_ACK.pack(4, transport.block), CLIENT)
    elapsed = time.perf_counter() - started
    if ended != [("ok", "transfer_complete", None)]:
        raise SystemExit(f"the transfer did not complete: {ended}")
    return elapsed / blocks * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=16, help="file size (default 16)")
    parser.add_argument("--repeat", type=int, default=5, help="transfers per case (default 5)")
    parser.add_argument(
        "cases",
        nargs="*",
        default=["512x1", "1428x1", "8192x1", "1428x16", "1428x64"],
        help="BLKSIZExWINDOWSIZE (default 512x1 1428x1 8192x1 1428x16 1428x64)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bulk.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(args.size_mib << 20))
        print(f"# ctftp from {os.path.dirname(sys.modules['ctftp'].__file__ or '')}")
        print(f"# {args.size_mib} MiB from the page cache, best of {args.repeat}")
        print("| blksize | windowsize | us per block |")
        print("|---:|---:|---:|")
        for case in args.cases:
            blksize, windowsize = (int(n) for n in case.split("x"))
            best = min(perBlock(path, blksize, windowsize) for _ in range(args.repeat))
            print(f"| {blksize} | {windowsize} | {best:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
