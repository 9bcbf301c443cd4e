"""Python's cost per small transfer, request to last ACK, without sockets.

A storm of small files (``run.py``'s scenario ``a``) spends most of ctftp's
time on what every request costs once: parsing it, finding and opening the
file, negotiating options, the transfer's objects, the log lines and the
sidecar line. Over loopback that is hidden in the VM's noise; here the
whole server (``ctftp.makeService`` on ``ctftp.testing.MemoryUDPReactor``,
ports in memory, the central log and sidecars written to real files as
``run.py`` starts ctftp) serves a storm in one process, a client in the same
loop answering every DATA at once. What is left is ctftp's own work per
transfer, minus the socket calls. Compare two versions with:

    PYTHONPATH=/path/to/old/src .venv/bin/python benchmarks/perrequest.py
    .venv/bin/python benchmarks/perrequest.py

It prints microseconds per transfer, the best of ``--repeat`` storms.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time

from ctftp import ServerConfig, makeService
from ctftp.packets import OP_RRQ, encodeRequest
from ctftp.testing import MemoryUDPReactor

LISTENER = ("127.0.0.1", 6969)
NAME = "SEP{:012d}.cnf.xml"
_ACK = struct.Struct("!HH")


def storm(reactor: MemoryUDPReactor, requests: list[bytes], blksize: int, first: int) -> float:
    """Serve each of ``requests`` (encoded RRQs) in turn, from client ports
    ``first ..``, to its final DATA; return the seconds it took."""
    listener = reactor.portAt(*LISTENER)
    started = time.perf_counter()
    for index, request in enumerate(requests):
        client = ("127.0.0.1", first + index)
        listener.deliver(request, client)
        port = reactor.newestPort()
        last = b""
        for _ in range(1_000):  # bounded: a 4 KiB file at blksize 512 is 9 DATA
            if not port.listening:
                break
            sent, port.written = port.written, []
            if not sent:
                raise SystemExit(f"transfer {index} stalled")
            last = sent[-1][0]
            block = int.from_bytes(last[2:4], "big") if last[1] == 3 else 0
            port.protocol.datagramReceived(_ACK.pack(4, block), client)
        if last[1:2] != b"\x03" or len(last) - 4 >= blksize:
            raise SystemExit(f"transfer {index} did not end with its final DATA: {last[:40]!r}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=2000, help="files, one request each")
    parser.add_argument("--size", type=int, default=4096, help="bytes per file (default 4096)")
    parser.add_argument("--blksize", type=int, default=512, help="blksize asked for")
    parser.add_argument("--repeat", type=int, default=5, help="storms (default 5)")
    parser.add_argument("--no-log-dir", action="store_true", help="no central log file")
    parser.add_argument("--no-file-log", action="store_true", help="no sidecar lines")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root = os.path.join(folder, "root")
        os.mkdir(root)
        payload = os.urandom(args.size)
        for index in range(args.names):
            with open(os.path.join(root, NAME.format(index)), "wb") as f:
                f.write(payload)
        config = ServerConfig(
            root_dir=(root,),
            listeners=("{}:{}".format(*LISTENER),),
            log_dir="" if args.no_log_dir else os.path.join(folder, "logs"),
            file_log=not args.no_file_log,
        )
        reactor = MemoryUDPReactor()
        service = makeService(config, reactor=reactor)
        service.startService()
        options = (("blksize", str(args.blksize)),)
        requests = [
            encodeRequest(OP_RRQ, NAME.format(i), "octet", options) for i in range(args.names)
        ]
        try:
            times = [storm(reactor, requests, args.blksize, 1024) for _ in range(args.repeat)]
        finally:
            service.stopService()
        print(f"# ctftp from {os.path.dirname(sys.modules['ctftp'].__file__ or '')}")
        print(
            f"# {args.names} files of {args.size} bytes, blksize {args.blksize}, "
            f"log_dir {'off' if args.no_log_dir else 'on'}, "
            f"file_log {'off' if args.no_file_log else 'on'}, best of {args.repeat}"
        )
        print(f"us per transfer: {min(times) / args.names * 1e6:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
