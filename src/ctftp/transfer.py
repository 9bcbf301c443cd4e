"""The per-transfer protocols, each on its own UDP port (its TID).

:class:`UDPTransfer` holds what every transfer shares, whichever way the data
flows: the client address it answers, the one retransmit timer
(``IReactorTime.callLater``, so tests drive it with ``task.Clock``), the
``1 + max_retries`` budget, ERROR 5 to a stranger, a client's ERROR ending the
transfer quietly, and ending exactly once with no timer left behind.
:class:`ReadTransfer` (here) sends a file; ``ctftp.upload.WriteTransfer``
receives one.

The rules a read keeps (SPEC section 3, RFC 1350, RFC 1123, RFC 7440):

* block numbers are absolute inside the transfer and go on the wire modulo
  65536, so they roll over from 65535 to 0 and files of any size transfer;
* an ACK that moves the window forward sends the next window; an ACK for a
  block inside the window that was sent (a gap seen by the client) starts the
  next window right after it, resending what was lost;
* a repeated ACK never sends anything in lock-step mode (Sorcerer's
  Apprentice): only the timer resends; with a window it is how the client
  reports a gap, and the window is sent again from the block after it;
* a packet goes out at most ``1 + max_retries`` times, then the transfer
  ends with status ``timeout``;
* a packet from any other address gets ERROR 5 and changes nothing;
* an ERROR from the client ends the transfer at once, quietly.

Reads may be asynchronous (the HTTP relay streams a body while it downloads):
``read(n)`` returns bytes when they are there, or a Deferred firing with them
later. Bytes at hand go out at once, with no Deferred per block, so the local
file path is as fast as a purely synchronous one. While a read is pending:

* sending stops at the missing block; blocks already sent stay in the window
  and the timer resends them as usual, counting against ``max_retries``
  (a client that stops answering is still given up on);
* once every sent block is acknowledged nothing is in flight and the timer is
  off: waiting for the origin never spends the client's retries. The source
  bounds that wait itself (the relay fails a body that stalls longer than
  ``http_timeout_sec``), and its failure ends the transfer with its ERROR;
* a short read, which makes the final DATA, only comes once the source knows
  the end, so a body cut short never goes out as a complete file.
"""

from __future__ import annotations

import struct
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from ctftp.errors import RequestRefused
from ctftp.logs import logger
from ctftp.packets import OP_ACK, OP_ERROR, ErrorCode, encodeError, encodeOptionAck
from ctftp.sources import IReadFile
from ctftp.window import DataWindow, ReadInto

__all__ = ["ReadTransfer", "UDPTransfer", "Outcome", "answerStranger"]

_log = logger("ctftp.transfer")
_HEADER = struct.Struct("!HH")
_OP_ERROR_BYTES = OP_ERROR.to_bytes(2, "big")
_UNKNOWN_TID = encodeError(ErrorCode.UNKNOWN_TID, "Unknown transfer ID")


def answerStranger(send: Callable[[bytes, Any], None], datagram: bytes, addr: Any) -> None:
    """ERROR 5 to a packet from outside a transfer, with ``send(packet,
    addr)``, but never in answer to an ERROR (RFC 1350): one forged ERROR
    between two transfer ports would set them answering each other as
    fast as they can."""
    if datagram[:2] != _OP_ERROR_BYTES:
        send(_UNKNOWN_TID, addr)


#: (status, event message, TFTP error code or None)
Outcome = tuple[str, str, int | None]


class UDPTransfer(DatagramProtocol, metaclass=ABCMeta):
    """What reads and writes share: one peer, one timer, one ending.

    A subclass implements :meth:`_packetReceived` (any packet from the client
    but an ERROR) and :meth:`_resend` (what the timer sends again), and may
    override :meth:`_release` (free the file) and :meth:`_afterClose`.
    :meth:`_finish` ends the transfer; the outcome goes to ``onDone`` once,
    even when a transfer reports it early (a write, at commit) and closes
    later.
    """

    noisy = False

    def __init__(
        self,
        *,
        clock: IReactorTime,
        client: tuple[str, int],
        timeout: float,
        maxRetries: int,
        onDone: Callable[[Any, Outcome], None],
    ) -> None:
        self.clock = clock
        self.client = client
        self.timeout = timeout
        self.maxRetries = maxRetries
        self._onDone = onDone
        self._timer: IDelayedCall | None = None
        self._deadline = 0.0  # when the timer is due (clock.seconds()), once armed
        self._retries = 0
        self._reported = False
        self._closed = False
        self.retransmits = 0

    # -- life cycle ---------------------------------------------------------

    @property
    def ended(self) -> bool:
        """The outcome is reported; the port may still dally (an upload
        answers a repeated final DATA for a while)."""
        return self._reported

    def stop(self, outcome: Outcome) -> None:
        """End the transfer now (server shutdown): no further packets."""
        self._finish(outcome)

    def requestRepeated(self) -> None:
        """The client sent its request again while the transfer runs: the
        retransmit timer answers it (the first packet is resent)."""

    def _finish(self, outcome: Outcome) -> None:
        """Close for good: no timer, file released, outcome reported once."""
        if self._closed:
            return
        self._closed = True
        self._disarm()
        self._release(outcome)
        self._report(outcome)
        self._afterClose()

    def stopProtocol(self) -> None:
        """The port closed under the transfer (the reactor gave up on its
        socket after an error): it cannot go on, so it ends now, aborted,
        instead of writing to a closed socket when its timer fires. When
        the transfer closed its port itself, it has ended already."""
        if not self._closed:
            self._finish(("error", "aborted", None))

    def _report(self, outcome: Outcome) -> None:
        if self._reported:
            return
        self._reported = True
        self._onDone(self, outcome)

    def _release(self, outcome: Outcome) -> None:
        """Free what the transfer holds; ``outcome`` says whether it went well."""

    def _afterClose(self) -> None:
        """Called last, once, when the transfer has closed."""

    def _fail(self, code: int, message: str, reason: str) -> None:
        self._send(encodeError(code, message))
        self._finish(("error", reason, code))

    # -- timer ----------------------------------------------------------------

    def _send(self, packet: bytes | memoryview) -> None:
        """Send ``packet`` to the client: bytes, or a view of a DATA packet
        in its window (``IUDPTransport.write`` says bytes; UDP ports send any
        buffer at once, and ``ctftp.testing``'s ports copy it)."""
        assert self.transport is not None
        self.transport.write(packet, self.client)  # type: ignore[arg-type]

    # The timer is lazy: a transfer arms it after every packet it sends, and
    # moving a DelayedCall (``reset``) at every ACK cost 0.2 us of the 3 us
    # of Python of a lock-step block. Arming only moves ``_deadline``; the
    # DelayedCall, once set, stays where it is, and when it fires before
    # the deadline it sets itself again for the rest. The resend still
    # comes ``timeout`` seconds after the last packet, as with ``reset``.

    def _arm(self) -> None:
        self._deadline = self.clock.seconds() + self.timeout
        if self._timer is None:
            self._timer = self.clock.callLater(self.timeout, self._timerFired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timerFired(self) -> None:
        left = self._deadline - self.clock.seconds()
        if left > 0:
            self._timer = self.clock.callLater(left, self._timerFired)
            return
        self._timer = None
        self._timedOut()

    def _timedOut(self) -> None:
        """``timeout`` seconds since the last packet sent, with no answer."""
        if self._retries >= self.maxRetries:
            self._finish(("error", "timeout", None))
            return
        self._retries += 1
        self._resend()

    @abstractmethod
    def _resend(self) -> None:
        """Send the last packet again (the timer fired); re-arm the timer."""

    # -- receiving -----------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self._closed:
            return
        if addr != self.client:
            answerStranger(self.transport.write, datagram, addr)  # type: ignore[union-attr]
            return
        if len(datagram) < 4:
            return
        opcode, number = _HEADER.unpack_from(datagram)
        if opcode == OP_ERROR:
            self._clientError(number)
        else:
            self._packetReceived(opcode, number, datagram)

    def _clientError(self, code: int) -> None:
        self._finish(("error", "client_error", code))

    @abstractmethod
    def _packetReceived(self, opcode: int, number: int, datagram: bytes) -> None:
        """A packet from the client other than an ERROR, at least 4 bytes long."""


class ReadTransfer(UDPTransfer):
    """Send one file to one client; report the outcome once through ``onDone``.

    ``read(n)`` gives the file's next bytes (or a Deferred of them);
    ``readInto``, when the file has it (a local file in octet mode), reads
    a window's blocks straight into their packets (``ctftp.window``).
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        client: tuple[str, int],
        file: IReadFile,
        read: Callable[[int], bytes | Deferred[bytes]],
        readInto: ReadInto | None = None,
        blksize: int,
        windowsize: int,
        timeout: float,
        maxRetries: int,
        oack: tuple[tuple[str, str], ...],
        onDone: Callable[[ReadTransfer, Outcome], None],
    ) -> None:
        super().__init__(
            clock=clock, client=client, timeout=timeout, maxRetries=maxRetries, onDone=onDone
        )
        self.file = file
        self._read = read
        # A window of one block (lock-step) is read with ``read`` and copied
        # into its slot: less Python per block than a ``readv`` of one
        # buffer (benchmarks/perack.py), which pays off from two blocks on.
        self._readInto = readInto if windowsize > 1 else None
        self.blksize = blksize
        self.windowsize = windowsize
        self._oack = encodeOptionAck(oack) if oack else None
        # Window state, in absolute block numbers: blocks 1.._acked are
        # acknowledged, _window holds the packets of _acked+1.._sent.
        self._acked = 0
        self._sent = 0
        self._window = DataWindow(
            blksize, windowsize, size=file.size if self._readInto is not None else None
        )
        self._resentAfter = -1  # _acked value whose gap was already answered
        # An asynchronous read: None, the Deferred still to fire, or the
        # payload it brought, not sent yet. _inAwait: a Deferred is being
        # hooked up, so a result arriving now is taken by _awaitRead.
        self._async: Deferred[bytes] | bytes | None = None
        self._inAwait = False

    @property
    def bytesAcked(self) -> int:
        """Bytes of the file the client has acknowledged."""
        return self._window.payloadBytes(self._acked)

    # -- life cycle ---------------------------------------------------------

    def startProtocol(self) -> None:
        if self._oack is not None:
            self._send(self._oack)
            self._arm()
        else:
            self._sendWindow()

    def _release(self, outcome: Outcome) -> None:
        self._window.release()
        pending, self._async = self._async, None
        if isinstance(pending, Deferred):
            pending.cancel()  # the file forgets the waiting reader; _readFailed ignores it
        self.file.close()

    # -- sending -------------------------------------------------------------

    def _awaitRead(self, result: Any) -> bytes | None:
        """The slow path of a read that did not return bytes: a Deferred
        (or a bytes-like object, taken as it is). None while the bytes are
        awaited (``_async`` holds the Deferred) or when the read failed (the
        transfer is then closed)."""
        if not isinstance(result, Deferred):
            return bytes(result)
        self._async = result
        self._inAwait = True
        try:
            result.addCallbacks(self._readArrived, self._readFailed)
        finally:
            self._inAwait = False
        arrived = self._async
        if arrived is result:
            return None  # really pending
        # It had fired already: _readArrived left the payload in _async, or
        # _readFailed cleared it and closed the transfer.
        self._async = None
        return arrived if isinstance(arrived, bytes) else None

    def _readArrived(self, payload: bytes) -> None:
        if self._closed:
            self._async = None
            return
        self._async = payload if type(payload) is bytes else bytes(payload)
        if not self._inAwait:
            self._sendWindow(self._sent + 1)

    def _readFailed(self, failure: Failure) -> None:
        self._async = None
        if self._closed or failure.check(CancelledError):
            return
        error = failure.value
        if isinstance(error, RequestRefused | OSError):
            self._failRead(error)
        else:
            _log.failure("reading {path} failed", failure, path=self.file.path)
            self._fail(ErrorCode.NOT_DEFINED, "Read error", "aborted")

    def _failRead(self, error: RequestRefused | OSError) -> None:
        """End the transfer on a read that failed: a refusal with its own
        ERROR, a system error with ERROR 0 and a log line."""
        if isinstance(error, RequestRefused):
            self._fail(error.code, error.message, error.reason)
        else:
            _log.error("read error on {path}: {error}", path=self.file.path, error=error)
            self._fail(ErrorCode.NOT_DEFINED, "Read error", "aborted")

    def _sendWindow(self, begin: int = 0) -> None:
        """Send blocks from ``begin`` (default _acked+1) to _acked+windowsize:
        those built before go again (a retransmission), then new ones until
        the window is full, the file ends, or a read is pending.

        A file read with ``readInto`` (a local file in octet mode) fills the
        new blocks of the window with one call; other files are read a block
        at a time (:meth:`_readBlocks`). The window's packets go to the
        transport together at the end (one system call with UDP GSO), or
        before a read that has to be awaited, or before an ERROR, so the
        client sees the same packets in the same order as if each had been
        sent at once.
        """
        window = self._window
        first = self._acked + 1
        stop = first + self.windowsize
        if window.last is not None:
            stop = min(stop, window.last + 1)
        block = begin or first
        out: list[memoryview] = []  # packets of this window not handed to the transport yet
        if block <= self._sent:
            resentStop = min(stop, self._sent + 1)
            out = window.packets(block, resentStop)
            self.retransmits += resentStop - block
            block = resentStop
        waiting = False
        try:
            if self._readInto is not None:
                # More than one fill only when the file outgrew its size.
                while block < stop and window.last is None:
                    built = window.fill(self._readInto, block, stop - block)
                    out += built
                    block += len(built)
            elif block < stop:
                block, waiting = self._readBlocks(block, stop, out)
                if self._closed:
                    return
            self._flush(out)
        except (OSError, RequestRefused) as error:
            self._flush(out)
            self._failRead(error)
            return
        self._sent = max(self._sent, block - 1)
        if waiting and self._sent == self._acked:
            # Nothing in flight: the next block is still being read and the
            # client waits for it; no retries are spent meanwhile.
            self._disarm()
        else:
            self._arm()

    def _readBlocks(self, block: int, stop: int, out: list[memoryview]) -> tuple[int, bool]:
        """Read blocks ``block .. stop - 1`` one ``read`` each, adding their
        packets to ``out``, until the file ends or a read has to be awaited
        (``out`` is sent first). Return the next block to read and whether a
        read is awaited; the transfer may have closed (a failed read).

        The common case, a read returning bytes, costs one attribute test
        and one type test per block beyond what a synchronous loop costs.
        """
        window = self._window
        payload: Any  # bytes by the time a packet is built
        while block < stop:
            pending = self._async
            if pending is None:
                payload = self._read(self.blksize)
                if type(payload) is not bytes:
                    self._flush(out)
                    payload = self._awaitRead(payload)
                    if payload is None:
                        return block, True
            elif type(pending) is bytes:
                self._async = None
                payload = pending
            else:
                return block, True  # a read is in flight
            out.append(window.store(block, payload))
            if len(payload) < self.blksize:
                return block + 1, False
            block += 1
        return block, False

    def _flush(self, packets: list[memoryview]) -> None:
        """Send ``packets`` to the client and empty the list (first, so that
        a send that raises is not repeated): in one call when the transport
        has ``writeDatagrams`` (:class:`ctftp.udp.QuietPort`), else one by one."""
        if len(packets) <= 1:
            if packets:
                self._send(packets.pop())
            return
        batch = packets.copy()
        packets.clear()
        writeDatagrams = getattr(self.transport, "writeDatagrams", None)
        if writeDatagrams is not None:
            writeDatagrams(batch, self.client)
        else:
            for packet in batch:
                self._send(packet)

    def _resend(self) -> None:
        if self._oack is not None:
            self.retransmits += 1
            self._send(self._oack)
            self._arm()
        else:
            self._sendWindow()

    # -- receiving -----------------------------------------------------------

    def _packetReceived(self, opcode: int, number: int, datagram: bytes) -> None:
        if opcode == OP_ACK:
            self._ackReceived(number)
        # Anything else from the client is ignored: a stray packet must not
        # end a transfer that is otherwise going well.

    def _ackReceived(self, number: int) -> None:
        if self._oack is not None:
            if number != 0:
                return
            self._oack = None
            self._retries = 0
            self._sendWindow()
            return
        delta = (number - self._acked) & 0xFFFF
        if delta > self._sent - self._acked:
            return  # not a block in flight: stale or bogus
        if delta == 0:
            # A repeated ACK. In lock-step it must not trigger a send; with a
            # window it reports a gap, so the window goes again, but once per
            # acknowledged block: duplicated ACKs must not multiply the sends.
            if (
                self.windowsize > 1
                and self._sent > self._acked
                and self._resentAfter != self._acked
                and self._retries < self.maxRetries
            ):
                # A resend like the timer's: it counts against max_retries.
                self._resentAfter = self._acked
                self._retries += 1
                self._sendWindow()
            return
        self._acked += delta
        self._retries = 0
        if self._acked == self._window.last:
            self._finish(("ok", "transfer_complete", None))
        elif self.windowsize == 1:
            self._sendNext()
        else:
            self._sendWindow()

    def _sendNext(self) -> None:
        """Lock-step, after an ACK: read the next block and send it.

        What :meth:`_sendWindow` does for a window of one new block, without
        what only a window needs (the list of packets to send together, the
        resends of a gap, reads until the window is full): a third of the
        Python of a lock-step block (``benchmarks/perack.py``). While a
        read is in flight, or its bytes wait to be sent, the general path
        goes on; a read that has to be awaited is hooked up as there.
        """
        if self._async is not None:
            self._sendWindow()
            return
        payload: Any  # bytes by the time the packet is built
        try:
            payload = self._read(self.blksize)
        except (OSError, RequestRefused) as error:
            self._failRead(error)
            return
        if type(payload) is not bytes:
            payload = self._awaitRead(payload)
            if payload is None:
                # Awaited (nothing in flight: the timer is off, as in
                # _sendWindow; _readArrived sends it), or failed and closed.
                self._disarm()
                return
        block = self._sent + 1
        self._send(self._window.store(block, payload))
        self._sent = block
        self._arm()
