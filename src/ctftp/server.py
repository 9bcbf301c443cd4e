"""The listener protocol and the bookkeeping of transfers.

:class:`ListenerProtocol` only decodes: a datagram on a listener port becomes a
request for :class:`TFTPServer`, which decides. The server is shared by all
listeners so that ``max_connections`` and the duplicate-request table hold
across them.

Errors that end a request before its transfer starts (file not found, option
refused, ...) are sent from the listener's own port: clients take the first
reply's port as the server's TID, and an ERROR is a complete answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from ctftp.config import ServerConfig
from ctftp.errors import RequestRefused
from ctftp.events import ITransferObserver, TransferRecord, formatAddress, quoteName
from ctftp.logs import logger
from ctftp.netascii import NetasciiReader
from ctftp.options import OptionPolicy, OptionRefused, negotiate
from ctftp.packets import (
    OP_ERROR,
    OP_RRQ,
    ErrorCode,
    MalformedPacket,
    Request,
    decodeRequest,
    encodeError,
)
from ctftp.resolver import cleanName
from ctftp.sources import IReadFile, IReadSource, ReadRequest
from ctftp.transfer import Outcome, ReadTransfer
from ctftp.udp import MAX_DATAGRAM, WILDCARDS, ListenUDP, transferListener

__all__ = ["ListenerProtocol", "TFTPServer"]

_log = logger("ctftp.server")


class ListenerProtocol(DatagramProtocol):
    """One per configured listener; hands every datagram to the server."""

    noisy = False

    def __init__(self, server: TFTPServer, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.name = formatAddress(host, port)

    def datagramReceived(self, datagram: bytes, addr: Any, localHost: str | None = None) -> None:
        """``localHost`` is the address the datagram was sent to, when the
        listener is on a wildcard address (see :class:`ctftp.udp.ListenerPort`)."""
        self.server.datagramReceived(self, datagram, addr, localHost)

    def reply(self, packet: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.transport.write(packet, addr)


class TFTPServer:
    """Policy and bookkeeping shared by every listener.

    ``active`` maps (listener, client address) to the running transfer, or to
    ``None`` while its file is being opened; a request whose key is there is a
    retransmitted RRQ and gets no second transfer.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        reactor: Any,
        source: IReadSource,
        observers: Iterable[ITransferObserver] = (),
        listenUDP: ListenUDP | None = None,
    ) -> None:
        self.config = config
        self.clock: IReactorTime = reactor
        self.source = source
        self.observers = list(observers)
        self._listenUDP = listenUDP or transferListener(reactor)
        self.policy = OptionPolicy(
            enabled=config.options,
            maxBlksize=config.max_blksize,
            refused=config.refuse_options,
        )
        self.active: dict[tuple[ListenerProtocol, Any], ReadTransfer | None] = {}
        self.busyDropped = 0
        self.malformed = 0
        self._ports = (
            itertools.cycle(range(config.port_range[0], config.port_range[1] + 1))
            if config.port_range
            else None
        )

    # -- requests ------------------------------------------------------------

    def datagramReceived(
        self, listener: ListenerProtocol, datagram: bytes, addr: Any, localHost: str | None = None
    ) -> None:
        if len(datagram) >= 2 and datagram[0] == 0 and datagram[1] == OP_ERROR:
            return  # never answer an ERROR: two servers must not ping-pong
        try:
            request = decodeRequest(datagram)
        except MalformedPacket as e:
            self.malformed += 1
            _log.debug(
                "malformed request from {client}: {error}",
                client=formatAddress(*addr),
                error=str(e),
            )
            listener.reply(encodeError(ErrorCode.ILLEGAL_OPERATION, str(e)), addr)
            return
        key = (listener, addr)
        if key in self.active:
            _log.debug("duplicate request from {client} ignored", client=formatAddress(*addr))
            return
        if len(self.active) >= self.config.max_connections:
            self.busyDropped += 1
            _log.warn(
                "busy: {active} transfers running, request from {client} dropped "
                "({dropped} dropped so far)",
                active=len(self.active),
                client=formatAddress(*addr),
                dropped=self.busyDropped,
            )
            return
        self._start(listener, request, addr, localHost)

    def _start(
        self, listener: ListenerProtocol, request: Request, addr: Any, localHost: str | None
    ) -> None:
        opName = "RRQ" if request.opcode == OP_RRQ else "WRQ"
        _log.info(
            '{op} from {client} file="{file}" mode="{mode}"',
            op=opName,
            client=formatAddress(*addr),
            file=quoteName(request.filename),
            mode=request.rawMode.lower(),
        )
        record = TransferRecord(
            op="read" if request.isRead else "write",
            filename=request.filename,
            mode=request.mode,
            clientHost=addr[0],
            clientPort=addr[1],
            listener=listener.name,
            start=self.clock.seconds(),
        )
        self._notify("transferStarted", record)
        if not request.isRead:
            self._refuse(
                listener,
                addr,
                record,
                RequestRefused(ErrorCode.ILLEGAL_OPERATION, "Writes are not allowed"),
            )
            return
        key = (listener, addr)
        self.active[key] = None
        record.resolved = cleanName(request.filename)
        d = maybeDeferred(
            self.source.openRead, ReadRequest(request.filename, addr[0], addr[1], request.mode)
        )
        d.addCallback(self._opened, listener, request, addr, localHost, record)
        d.addErrback(self._openFailed, listener, addr, record)

    def _openFailed(
        self, failure: Failure, listener: ListenerProtocol, addr: Any, record: TransferRecord
    ) -> None:
        self.active.pop((listener, addr), None)
        if failure.check(RequestRefused):
            self._refuse(listener, addr, record, failure.value)
            return
        _log.failure("opening {file} failed", failure, file=quoteName(record.filename))
        self._refuse(
            listener, addr, record, RequestRefused(ErrorCode.NOT_DEFINED, "Internal error")
        )

    def _refuse(
        self, listener: ListenerProtocol, addr: Any, record: TransferRecord, refusal: Any
    ) -> None:
        listener.reply(encodeError(refusal.code, refusal.message), addr)
        self._end(record, ("error", refusal.reason, refusal.code))

    def _opened(
        self,
        file: IReadFile,
        listener: ListenerProtocol,
        request: Request,
        addr: Any,
        localHost: str | None,
        record: TransferRecord,
    ) -> None:
        key = (listener, addr)
        record.localPath = file.path
        netascii = request.mode == "netascii"
        asksSize = any(name.lower() == "tsize" for name, _ in request.options)
        if netascii:
            size = file.netasciiSize() if asksSize else None
        else:
            size = file.size
        try:
            agreed = negotiate(request.options, self.policy, isRead=True, size=size)
        except OptionRefused as e:
            file.close()
            self.active.pop(key, None)
            self._refuse(listener, addr, record, RequestRefused(ErrorCode.OPTION_REFUSED, str(e)))
            return
        record.blksize = agreed.blksize
        record.windowsize = agreed.windowsize
        record.tsize = agreed.tsize
        transfer = ReadTransfer(
            clock=self.clock,
            client=addr,
            file=file,
            read=NetasciiReader(file.read).read if netascii else file.read,
            blksize=agreed.blksize,
            windowsize=agreed.windowsize,
            timeout=agreed.timeout or self.config.timeout_sec,
            maxRetries=self.config.max_retries,
            oack=agreed.oack,
            onDone=lambda t, outcome: self._transferDone(key, t, outcome, record),
        )
        self.active[key] = transfer
        try:
            self._bindTransfer(listener, localHost, transfer)
        except CannotListenError as e:
            file.close()
            self.active.pop(key, None)
            _log.error(
                "no port for a transfer to {client}: {error}", client=formatAddress(*addr), error=e
            )
            self._refuse(
                listener,
                addr,
                record,
                RequestRefused(ErrorCode.NOT_DEFINED, "Server busy", "server_busy"),
            )
            return

    def _bindTransfer(
        self, listener: ListenerProtocol, localHost: str | None, transfer: ReadTransfer
    ) -> None:
        """Open the transfer's port on the address the request came to, so
        that replies leave from it."""
        host = listener.host
        if host in WILDCARDS:
            host = localHost or ("::" if ":" in transfer.client[0] else "")
        if self._ports is None:
            self._listenUDP(0, transfer, interface=host, maxPacketSize=MAX_DATAGRAM)
            return
        low, high = self.config.port_range  # type: ignore[misc]
        lastError: CannotListenError | None = None
        for _ in range(high - low + 1):
            try:
                self._listenUDP(
                    next(self._ports), transfer, interface=host, maxPacketSize=MAX_DATAGRAM
                )
                return
            except CannotListenError as e:
                lastError = e
        assert lastError is not None
        raise lastError

    # -- endings -------------------------------------------------------------

    def _transferDone(
        self, key: Any, transfer: ReadTransfer, outcome: Outcome, record: TransferRecord
    ) -> None:
        if self.active.get(key) is transfer:
            del self.active[key]
        record.bytes = transfer.bytesAcked
        record.retransmits = transfer.retransmits
        if transfer.transport is not None:
            transfer.transport.stopListening()
        self._end(record, outcome)

    def _end(self, record: TransferRecord, outcome: Outcome) -> None:
        record.status, record.message, record.errorCode = outcome
        record.end = self.clock.seconds()
        self._notify("transferEnded", record)

    def _notify(self, method: str, record: TransferRecord) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(record)
            except Exception:
                _log.failure("transfer observer {observer} failed", observer=observer)

    def stopTransfers(self) -> None:
        """End every running transfer (service stop)."""
        for transfer in list(self.active.values()):
            if transfer is not None:
                transfer.stop(("error", "aborted", None))
