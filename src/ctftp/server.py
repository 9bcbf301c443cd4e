"""The listener protocol and the bookkeeping of transfers.

:class:`ListenerProtocol` only decodes: a datagram on a listener port becomes a
request for :class:`TFTPServer`, which decides. The server is shared by all
listeners so that ``max_connections`` and the duplicate-request table hold
across them.

The path of a request: decode -> duplicate / busy check -> ``start`` event ->
(write: options and size limit) -> open the file through the source or sink
-> (read: options, which need the file's size) -> a transfer on a fresh port.

Errors that end a request before its transfer starts (file not found, option
refused, ...) are sent from the listener's own port: clients take the first
reply's port as the server's TID, and an ERROR is a complete answer.
"""

from __future__ import annotations

import os.path
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from ctftp.acl import ClientACL, ClientFilter
from ctftp.config import ServerConfig
from ctftp.errors import RequestRefused
from ctftp.events import ITransferObserver, TransferRecord, formatAddress, quoteName
from ctftp.logs import logger
from ctftp.mtftp import BLKSIZE, MtftpEntry, MtftpFiles, MtftpTransfer, tooBig
from ctftp.multicast import Member, Sessions
from ctftp.netascii import NetasciiReader
from ctftp.options import REFUSAL_MESSAGE, Negotiated, OptionPolicy, OptionRefused, negotiate
from ctftp.packets import (
    MODES,
    OP_ERROR,
    ErrorCode,
    MalformedPacket,
    Request,
    UnsupportedMode,
    decodeRequest,
    encodeError,
    unsupportedModeMessage,
)
from ctftp.ports import FreshPorts, TransferPorts, transferPorts
from ctftp.remap import PcreRules, RemapDenied, RemapFailed, RuleSet
from ctftp.resolver import cleanName, resolveExisting
from ctftp.sources import IReadFile, IReadSource, LocalFileSource, ReadRequest
from ctftp.transfer import Outcome, ReadTransfer, UDPTransfer
from ctftp.udp import WILDCARDS, ListenUDP, transferListener
from ctftp.upload import WriteTransfer
from ctftp.writes import (
    IWriteFile,
    IWriteSink,
    UploadInProgress,
    WriteRequest,
    checkUploadSize,
)

__all__ = ["ListenerProtocol", "TFTPServer"]

_log = logger("ctftp.server")
_SERVED_MODES = frozenset(MODES.values())


class ListenerProtocol(DatagramProtocol):
    """One per configured listener; hands every datagram to the server.

    ``mtftp`` marks a listener on ``mtftp_port``, whose reads are PXE MTFTP
    transfers (:mod:`ctftp.mtftp`).
    """

    noisy = False

    def __init__(self, server: TFTPServer, host: str, port: int, mtftp: bool = False) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.mtftp = mtftp
        self.name = formatAddress(host, port)

    def datagramReceived(self, datagram: bytes, addr: Any, localHost: str | None = None) -> None:
        """``localHost`` is the address the datagram was sent to, when the
        listener is on a wildcard address (see :class:`ctftp.udp.ListenerPort`)."""
        self.server.datagramReceived(self, datagram, addr, localHost)

    def reply(self, packet: bytes, addr: Any) -> None:
        """Answer from the listener's port; a send that fails is logged, never
        raised into the reactor (which would log a traceback), since the
        request it answers is over either way."""
        assert self.transport is not None
        try:
            self.transport.write(packet, addr)
        except (OSError, MessageLengthError) as e:
            _log.warn("cannot answer {client}: {error}", client=formatAddress(*addr), error=e)


class Running(Protocol):
    """What the server holds for a client port while it is served: a
    :class:`UDPTransfer`, or a client's part of a multicast session."""

    @property
    def transport(self) -> Any: ...

    @property
    def ended(self) -> bool: ...

    def stop(self, outcome: Outcome) -> None: ...

    def requestRepeated(self) -> None: ...


@dataclass(slots=True)
class _Pending:
    """A request on its way to a transfer: where it came from and its record."""

    listener: ListenerProtocol
    addr: Any
    localHost: str | None
    request: Request
    record: TransferRecord
    datagram: bytes

    @property
    def key(self) -> tuple[ListenerProtocol, Any]:
        return (self.listener, self.addr)


class TFTPServer:
    """Policy and bookkeeping shared by every listener.

    ``active`` maps (listener, client address) to the running transfer, or to
    ``None`` while its file is being opened; a request whose key is there is a
    retransmitted request and gets no second transfer. ``sink`` is where
    uploads go; ``None`` refuses every WRQ (``allow_write`` off). ``rules``
    (tftp-hpa) and ``pcre`` (atftpd) rewrite names; the service replaces them
    on reload. ``mtftp`` holds the files of ``mtftp_file`` (PXE MTFTP),
    also replaced on reload.
    """

    rules: RuleSet | None = None
    pcre: PcreRules | None = None
    mtftp: MtftpFiles | None = None

    def __init__(
        self,
        config: ServerConfig,
        *,
        reactor: Any,
        source: IReadSource,
        sink: IWriteSink | None = None,
        observers: Iterable[ITransferObserver] = (),
        listenUDP: ListenUDP | None = None,
    ) -> None:
        self.config = config
        self.clock: IReactorTime = reactor
        self.source = source
        self.sink = sink
        #: The ``E`` flag for an RRQ: would a local file be served? (As in
        #: tftp-hpa, it asks the roots, whatever source serves the reads.)
        self._readable = LocalFileSource(
            config.root_dir,
            requireWorldReadable=config.require_world_readable,
            protectSidecars=config.file_log,
        ).canRead
        self.observers = list(observers)
        #: Where transfers get their ports: fresh ones, or ``port_pool``'s.
        self.ports = transferPorts(config, reactor, listenUDP)
        self.policy = self._policy(config)
        #: Ports of transfers that send to a group: never a pooled port,
        #: since the group options are set on the socket.
        self.freshPorts = FreshPorts(listenUDP or transferListener(reactor), config.port_range)
        #: RFC 2090 sessions (``multicast``), each on a fresh port of its own.
        self.multicast = Sessions(config, reactor, self.freshPorts)
        self.active: dict[tuple[ListenerProtocol, Any], Running | None] = {}
        self._requests: dict[tuple[ListenerProtocol, Any], bytes] = {}  # the datagram of each
        #: Running uploads by target path, for a takeover (:meth:`_openWrite`).
        self._uploads: dict[str, WriteTransfer] = {}
        self.busyDropped = 0
        self.malformed = 0
        #: allow_clients / deny_clients; reload swaps ``clientFilter.acl``.
        self.clientFilter = ClientFilter(
            ClientACL(config.allow_clients, config.deny_clients), reactor
        )

    # -- requests ------------------------------------------------------------

    @staticmethod
    def _policy(config: ServerConfig) -> OptionPolicy:
        return OptionPolicy(
            enabled=config.options,
            maxBlksize=config.max_blksize,
            refused=config.refuse_options,
            multicast=config.multicast,
        )

    def reconfigure(self, config: ServerConfig) -> None:
        """Take a reloaded config: options policy, limits, timers and ACLs
        apply to requests from now on; running transfers keep their own."""
        self.config = config
        self.policy = self._policy(config)
        self.clientFilter.acl = ClientACL(config.allow_clients, config.deny_clients)
        self.multicast.configure(config)

    @property
    def aclDropped(self) -> int:
        """Requests refused by ``allow_clients`` / ``deny_clients`` (metrics)."""
        return self.clientFilter.refused

    def datagramReceived(
        self, listener: ListenerProtocol, datagram: bytes, addr: Any, localHost: str | None = None
    ) -> None:
        if not self.clientFilter.check(addr[0], addr[1]):
            self._refusedClient(listener, datagram, addr)
            return
        if len(datagram) >= 2 and datagram[0] == 0 and datagram[1] == OP_ERROR:
            return  # never answer an ERROR: two servers must not ping-pong
        try:
            request = decodeRequest(datagram)
        except UnsupportedMode as e:
            request = e.request  # it parses: refused in _start, with its events
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
        if key in self.active and not self._takeOver(key, datagram):
            _log.debug("duplicate request from {client} ignored", client=formatAddress(*addr))
            return
        record = self._record(listener, request, addr)
        pending = _Pending(listener, addr, localHost, request, record, datagram)
        self._announce(pending)
        if len(self.active) >= self.config.max_connections:
            self.busyDropped += 1
            _log.warn(
                "busy: {active} transfers running, request from {client} dropped "
                "({dropped} dropped so far)",
                active=len(self.active),
                client=formatAddress(*addr),
                dropped=self.busyDropped,
            )
            # No reply: the client's retry comes back later.
            self._end(pending.record, ("error", "server_busy", None))
            return
        self._start(pending)

    def _refusedClient(self, listener: ListenerProtocol, datagram: bytes, addr: Any) -> None:
        """A client the ACLs refuse: no reply at all (an ERROR would tell a
        scanner a server is here); a request gets one error event."""
        try:
            request = decodeRequest(datagram)
        except UnsupportedMode as e:
            request = e.request
        except MalformedPacket:
            return
        self._end(self._record(listener, request, addr), ("error", "access_denied", None))

    def _takeOver(self, key: tuple[ListenerProtocol, Any], datagram: bytes) -> bool:
        """Whether a request from a client port that holds a transfer starts
        a new one (the old one is then over), or is a retransmission of the
        request that transfer serves.

        A client is done with its transfer when it asks again at once: PXE
        asks with tsize, answers the OACK with ERROR 8 and asks again; a
        client reuses its port right after its final ACK; a device uploads
        the same file twice. What it sent before this request may still wait
        in the transfer's socket, unread (the two sockets are read in no
        set order), so that is read first: a final ACK or an ERROR there
        ends the transfer as it should. Only then is the same request, to a
        transfer still going and not merely dallying after its end, a
        retransmission.
        """
        running = self.active[key]
        if running is None:
            return False  # the first is still being opened
        transport = running.transport
        drain = getattr(transport, "readQueued", None) or getattr(transport, "doRead", None)
        if drain is not None:
            drain()
        if self.active.get(key) is not running:
            return True
        if not running.ended and self._requests.get(key) == datagram:
            running.requestRepeated()
            return False
        running.stop(("error", "aborted", None))
        return True

    def _record(self, listener: ListenerProtocol, request: Request, addr: Any) -> TransferRecord:
        return TransferRecord(
            op="read" if request.isRead else "write",
            filename=request.filename,
            mode=request.mode,
            clientHost=addr[0],
            clientPort=addr[1],
            listener=listener.name,
            start=self.clock.seconds(),
            resolved=cleanName(request.filename),
        )

    def _announce(self, pending: _Pending) -> None:
        """The request line and the start event of a request that parsed."""
        request, record = pending.request, pending.record
        _log.info(
            '{op} from {client} file="{file}" mode="{mode}"',
            op="RRQ" if request.isRead else "WRQ",
            client=formatAddress(*pending.addr),
            file=quoteName(request.filename),
            mode=request.rawMode.lower(),
        )
        record.message = "RRQ received" if request.isRead else "WRQ received"
        self._notify("transferStarted", record)

    def _start(self, pending: _Pending) -> None:
        request, addr = pending.request, pending.addr
        if pending.listener.mtftp:
            self._startMtftp(pending)
            return
        if request.mode not in _SERVED_MODES:  # mail, or a mode nobody knows
            message = unsupportedModeMessage(request.rawMode)
            self._refuse(pending, RequestRefused(ErrorCode.ILLEGAL_OPERATION, message))
            return
        try:
            name = self._remapped(pending)
        except RequestRefused as e:
            self._refuse(pending, e)
            return
        if request.isRead:
            self._hold(pending, None)
            self._open(
                self.source.openRead,
                ReadRequest(name, addr[0], addr[1], request.mode),
                self._openedRead,
                pending,
            )
        else:
            if self.sink is None:
                self._refuse(
                    pending, RequestRefused(ErrorCode.ILLEGAL_OPERATION, "Writes are not allowed")
                )
                return
            # Options and the size limit are settled before anything is
            # created: a refused upload leaves no trace on disk.
            try:
                agreed = negotiate(request.options, self.policy, isRead=False, size=None)
                checkUploadSize(agreed.tsize, self.config.max_upload_bytes)
            except OptionRefused as e:
                self._refuseOptions(pending, e)
                return
            except RequestRefused as e:
                self._refuse(pending, e)
                return
            self._hold(pending, None)
            self._open(
                self._openWrite,
                WriteRequest(name, addr[0], addr[1], request.mode, agreed.tsize),
                self._openedWrite,
                pending,
                agreed,
            )

    def _startMtftp(self, pending: _Pending) -> None:
        """A request on the MTFTP port: a plain octet read of a file that
        ``mtftp_file`` lists, whose transfer is not running already (the
        client then listens to it: no answer). No remapping, no options."""
        request = pending.request
        refusal = None
        entry = self.mtftp.find(request.filename) if self.mtftp is not None else None
        if not request.isRead:
            refusal = RequestRefused(ErrorCode.ILLEGAL_OPERATION, "MTFTP serves reads only")
        elif request.mode != "octet":
            refusal = RequestRefused(ErrorCode.ILLEGAL_OPERATION, "MTFTP serves octet mode only")
        elif entry is None:
            _log.info(
                'MTFTP request from {client} for file="{file}", which mtftp_file does not list',
                client=formatAddress(*pending.addr),
                file=quoteName(request.filename),
            )
            refusal = RequestRefused(ErrorCode.FILE_NOT_FOUND, "File not found")
        if refusal is not None:
            self._refuse(pending, refusal)
            return
        assert self.mtftp is not None and entry is not None
        running = self.mtftp.running.get(entry.name)
        if running is not None:
            _log.info(
                'MTFTP file="{file}" is being sent to {group} for {other}: {client} listens',
                file=quoteName(entry.name),
                group=formatAddress(*entry.group),
                other=formatAddress(*running.client),
                client=formatAddress(*pending.addr),
            )
            self._end(pending.record, ("error", "server_busy", None))
            return
        pending.record.resolved = entry.name
        self._hold(pending, None)
        self._open(
            self.source.openRead,
            ReadRequest(entry.name, pending.addr[0], pending.addr[1], "octet"),
            self._openedMtftp,
            pending,
            entry,
        )

    def _openedMtftp(self, file: IReadFile, pending: _Pending, entry: MtftpEntry) -> None:
        assert self.mtftp is not None
        if tooBig(file.size):
            file.close()
            self._release(pending, None)
            self._refuse(
                pending,
                RequestRefused(ErrorCode.NOT_DEFINED, "File too big for MTFTP (65535 blocks)"),
            )
            return
        if self.mtftp.running.get(entry.name) is not None:  # another opened it first
            file.close()
            self._release(pending, None)
            self._end(pending.record, ("error", "server_busy", None))
            return
        record = pending.record
        record.localPath = file.path
        record.blksize, record.windowsize = BLKSIZE, 1
        files = self.mtftp

        def done(transfer: ReadTransfer, outcome: Outcome) -> None:
            if files.running.get(entry.name) is transfer:
                del files.running[entry.name]
            self._readDone(pending, transfer, outcome)

        transfer = MtftpTransfer(
            clock=self.clock,
            client=pending.addr,
            file=file,
            group=entry.group,
            ttl=self.config.multicast_ttl,
            timeout=self.config.timeout_sec,
            maxRetries=self.config.max_retries,
            onDone=done,
        )
        files.running[entry.name] = transfer
        self._launch(pending, transfer, file.close, self.freshPorts)
        if transfer.transport is None:  # no port: refused as busy
            files.running.pop(entry.name, None)

    def _openWrite(self, request: WriteRequest) -> Any:
        """The sink's ``openWrite``, taking a target over from an upload of
        the same client host that is still running: the device started
        again (a reboot, a retry from a new port) and its old upload would
        otherwise hold the name until it times out."""
        assert self.sink is not None
        try:
            return self.sink.openWrite(request)
        except UploadInProgress as e:
            old = self._uploads.get(e.path)
            if old is None or old.ended or old.client[0] != request.clientHost:
                raise
            _log.info(
                "upload to {path} from {old} taken over by {client}",
                path=quoteName(e.path),
                old=formatAddress(*old.client),
                client=formatAddress(request.clientHost, request.clientPort),
            )
            old.stop(("error", "aborted", None))
        return self.sink.openWrite(request)

    def _open(
        self,
        opener: Callable[[Any], Any],
        request: Any,
        opened: Callable[..., None],
        pending: _Pending,
        *extra: Any,
    ) -> None:
        """``opened(opener(request), pending, *extra)``, once the file is
        there; a failure of either goes to :meth:`_openFailed`.

        A source or sink may return a Deferred (the relay, an application's
        database); a local file is there at once, and is taken without one
        (``maybeDeferred`` and two callbacks cost 3.7 us a request, this
        0.5 us: about 2 % of a small transfer's Python).
        """
        try:
            result = opener(request)
            if not isinstance(result, Deferred):
                opened(result, pending, *extra)
                return
        except Exception:
            self._openFailed(Failure(), pending)
            return
        result.addCallback(opened, pending, *extra).addErrback(self._openFailed, pending)

    def _remapped(self, pending: _Pending) -> str:
        """The name after the remap rules (SPEC section 5); the safety rules
        of section 4 apply to the result, in the source or sink."""
        requested = pending.request.filename
        name = requested
        try:
            if self.rules is not None:
                name = self.rules.apply(
                    name,
                    clientHost=pending.addr[0],
                    op="get" if pending.request.isRead else "put",
                    exists=self._readable if pending.request.isRead else self._writable,
                )
            if self.pcre is not None and not self._servable(name):
                name = self.pcre.apply(name) or name
        except RemapDenied as e:
            raise RequestRefused(ErrorCode.ACCESS_VIOLATION, e.message) from None
        except RemapFailed as e:
            if e.detail:
                _log.warn(
                    'remap of file="{file}" from {client} failed: {detail}',
                    file=quoteName(requested),
                    client=formatAddress(*pending.addr),
                    detail=e.detail,
                )
            raise RequestRefused(ErrorCode.ACCESS_VIOLATION, e.message) from None
        if name != requested:
            _log.info(
                'file="{file}" remapped to "{resolved}"',
                file=quoteName(requested),
                resolved=quoteName(name),
            )
            pending.record.resolved = cleanName(name)
        return name

    def _writable(self, name: str) -> bool:
        """The ``E`` flag for a WRQ: would the sink accept ``name``? (A sink
        of an application's that cannot say: whether the file exists.)"""
        if self.sink is None:
            return False
        canWrite = getattr(self.sink, "canWrite", None)
        return canWrite(name) if canWrite is not None else self._servable(name)

    def _servable(self, name: str) -> bool:
        """Whether ``name`` is a regular file under a root (the "only when
        the name does not exist" rule of pcre files)."""
        try:
            path = resolveExisting(self.config.root_dir, name, protectSidecars=False)
        except RequestRefused:
            return False
        return os.path.isfile(path)

    def _openFailed(self, failure: Failure, pending: _Pending) -> None:
        self._release(pending, None)
        if failure.check(RequestRefused):
            self._refuse(pending, failure.value)
            return
        _log.failure("opening {file} failed", failure, file=quoteName(pending.record.filename))
        self._refuse(pending, RequestRefused(ErrorCode.NOT_DEFINED, "Internal error"))

    def _refuse(self, pending: _Pending, refusal: Any) -> None:
        pending.listener.reply(encodeError(refusal.code, refusal.message), pending.addr)
        self._end(pending.record, ("error", refusal.reason, refusal.code))

    def _refuseOptions(self, pending: _Pending, refusal: OptionRefused) -> None:
        """ERROR 8 with atftpd's message; the value that was wrong is logged."""
        _log.info(
            "options refused for {client}: {reason}",
            client=formatAddress(*pending.addr),
            reason=str(refusal),
        )
        self._refuse(pending, RequestRefused(ErrorCode.OPTION_REFUSED, REFUSAL_MESSAGE))

    def _openedRead(self, file: IReadFile, pending: _Pending) -> None:
        request, record = pending.request, pending.record
        netascii = request.mode == "netascii"
        if netascii:
            asksSize = any(name.lower() == "tsize" for name, _ in request.options)
            size = file.netasciiSize() if asksSize else None
        else:
            size = file.size
        try:
            agreed = negotiate(request.options, self.policy, isRead=True, size=size)
        except OptionRefused as e:
            file.close()
            self._release(pending, None)
            self._refuseOptions(pending, e)  # refused before it started: no sidecar line
            return
        record.localPath = file.path
        self._agreed(record, agreed)
        if agreed.multicast:
            if self._multicastRead(pending, file, agreed, netascii):
                return
            agreed = agreed.withoutOption("multicast")
        transfer = ReadTransfer(
            clock=self.clock,
            client=pending.addr,
            file=file,
            read=NetasciiReader(file.read).read if netascii else file.read,
            readInto=None if netascii else getattr(file, "readInto", None),
            blksize=agreed.blksize,
            windowsize=agreed.windowsize,
            timeout=agreed.timeout or self.config.timeout_sec,
            maxRetries=self.config.max_retries,
            oack=agreed.oack,
            onDone=lambda t, outcome: self._readDone(pending, t, outcome),
        )
        self._launch(pending, transfer, file.close)

    def _multicastRead(
        self, pending: _Pending, file: IReadFile, agreed: Negotiated, netascii: bool
    ) -> bool:
        """Serve the read through an RFC 2090 session; ``False`` when it
        cannot be multicast (:meth:`Sessions.join`): it is then sent by
        unicast."""
        member = Member(
            client=pending.addr,
            options=agreed.withoutOption("windowsize").oack,
            timeout=agreed.timeout or self.config.timeout_sec,
            onDone=lambda m, outcome: self._multicastDone(pending, m, outcome),
        )
        self._hold(pending, member)
        host = self._localHost(pending)
        if not self.multicast.join(member, file, agreed.blksize, host, netascii=netascii):
            self._hold(pending, None)
            return False
        pending.record.windowsize = 1
        return True

    def _openedWrite(self, file: IWriteFile, pending: _Pending, agreed: Negotiated) -> None:
        record = pending.record
        record.localPath = file.path
        self._agreed(record, agreed)
        transfer = WriteTransfer(
            clock=self.clock,
            client=pending.addr,
            file=file,
            netascii=pending.request.mode == "netascii",
            blksize=agreed.blksize,
            windowsize=agreed.windowsize,
            timeout=agreed.timeout or self.config.timeout_sec,
            maxRetries=self.config.max_retries,
            oack=agreed.oack,
            maxBytes=self.config.max_upload_bytes,
            onDone=lambda t, outcome: self._writeDone(pending, t, outcome),
            onClosed=lambda t: self._close(pending, t),
        )
        self._launch(pending, transfer, file.abort)
        if file.path is not None and transfer.transport is not None:  # it has its port
            self._uploads[file.path] = transfer

    @staticmethod
    def _agreed(record: TransferRecord, agreed: Negotiated) -> None:
        record.blksize = agreed.blksize
        record.windowsize = agreed.windowsize
        record.tsize = agreed.tsize

    def _launch(
        self,
        pending: _Pending,
        transfer: UDPTransfer,
        discard: Any,
        ports: TransferPorts | None = None,
    ) -> None:
        """Give ``transfer`` its port, from ``ports`` (default: the
        transfers' own, fresh or pooled) on the address the request came
        to, so that replies leave from it. It starts sending as soon as it
        has one."""
        self._hold(pending, transfer)
        try:
            (ports or self.ports).attach(transfer, pending.addr, self._localHost(pending))
        except CannotListenError as e:
            discard()
            self._release(pending, transfer)
            _log.error(
                "no port for a transfer to {client}: {error}",
                client=formatAddress(*pending.addr),
                error=e,
            )
            self._refuse(
                pending, RequestRefused(ErrorCode.NOT_DEFINED, "Server busy", "server_busy")
            )

    def _hold(self, pending: _Pending, transfer: Running | None) -> None:
        """Mark the client's port busy with ``transfer`` (``None``: opening)."""
        self.active[pending.key] = transfer
        self._requests[pending.key] = pending.datagram

    def _release(self, pending: _Pending, transfer: Running | None) -> None:
        """Free the client's port, if ``transfer`` still holds it."""
        if pending.key in self.active and self.active[pending.key] is transfer:
            del self.active[pending.key]
            del self._requests[pending.key]

    @staticmethod
    def _localHost(pending: _Pending) -> str:
        """The local address the request came to (a wildcard listener's
        best guess when the system did not say)."""
        host = pending.listener.host
        if host in WILDCARDS:
            host = pending.localHost or ("::" if ":" in pending.addr[0] else "")
        return host

    # -- endings -------------------------------------------------------------

    def _readDone(self, pending: _Pending, transfer: ReadTransfer, outcome: Outcome) -> None:
        pending.record.bytes = transfer.bytesAcked
        pending.record.retransmits = transfer.retransmits
        self._close(pending, transfer)
        self._end(pending.record, outcome)

    def _multicastDone(self, pending: _Pending, member: Member, outcome: Outcome) -> None:
        pending.record.bytes = member.bytesAcked
        pending.record.retransmits = member.retransmits
        self._release(pending, member)
        self._end(pending.record, outcome)

    def _writeDone(self, pending: _Pending, transfer: WriteTransfer, outcome: Outcome) -> None:
        """The upload is committed or failed; its port may dally a little
        longer (``_close`` comes through ``onClosed``)."""
        record = pending.record
        if self._uploads.get(transfer.file.path) is transfer:
            del self._uploads[transfer.file.path]
        record.bytes = transfer.bytesReceived
        record.retransmits = transfer.retransmits
        if outcome[0] != "ok" and record.localPath and not os.path.exists(record.localPath):
            record.localPath = None  # nothing was created: no sidecar beside nothing
        self._end(record, outcome)

    def _close(self, pending: _Pending, transfer: UDPTransfer) -> None:
        self._release(pending, transfer)
        if transfer.transport is not None:
            transfer.transport.stopListening()

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
        """End every running transfer and close the pooled ports (service stop)."""
        self.multicast.stop()
        for transfer in list(self.active.values()):
            if transfer is not None:
                transfer.stop(("error", "aborted", None))
        self.ports.close()
