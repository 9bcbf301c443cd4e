"""The receiving side of a write transfer (WRQ), on its own UDP port (its TID).

One :class:`WriteTransfer` per accepted WRQ. It shares the timer, the ERROR 5
answer to strangers and the single ending with reads
(:class:`ctftp.transfer.UDPTransfer`); what differs is the direction. The
rules it keeps (SPEC sections 3 and 4, RFC 1350, RFC 2347, RFC 7440):

* it opens with the OACK when options were agreed, else with ACK 0; a DATA 1
  acknowledges the OACK as well as an ACK 0 would;
* DATA is taken in order only. Block numbers are absolute inside the
  transfer and compared modulo 65536 on the wire, so uploads roll over past
  65535 blocks;
* with a ``windowsize`` (RFC 7440, which applies to WRQ too) it ACKs the end
  of each window of in-order blocks and the final block; a block from beyond
  a gap makes it ACK the last in-order block at once, once per gap, so the
  sender restarts from there; other out-of-order blocks are dropped;
* a repeat of the block it last acknowledged means that ACK was lost, so it
  is sent again (one ACK per DATA received: no amplification); other
  duplicates are ignored and never written twice;
* the timer ACKs the last in-order block again (the OACK or ACK 0 before any
  data). These resends, and those on the client's cue above, count against
  ``max_retries`` until a new block arrives: an ACK goes out at most
  ``1 + max_retries`` times, and when the timer finds the budget spent the
  upload ends with ``timeout`` and is aborted;
* the final (short) block commits the file, and only then is the final ACK
  sent and the outcome reported: a client that saw its last ACK knows the
  file is stored. The port then dallies for ``timeout`` seconds and ACKs a
  repeated final DATA again (its final ACK was lost), at most
  ``1 + max_retries`` final ACKs in all, then closes;
* anything that does not complete (timeout, ERROR from the client, write
  error, ``maxBytes`` exceeded, server stop) aborts the file, so the old
  content stays and nothing partial is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ctftp.errors import RequestRefused
from ctftp.logs import logger
from ctftp.netascii import NetasciiDecoder
from ctftp.packets import OP_DATA, ErrorCode, encodeAck, encodeOptionAck
from ctftp.transfer import Outcome, UDPTransfer
from ctftp.writes import IWriteFile, diskFull

__all__ = ["WriteTransfer"]

_log = logger("ctftp.upload")

_COMPLETE: Outcome = ("ok", "transfer_complete", None)


class WriteTransfer(UDPTransfer):
    """Receive one file from one client into an :class:`IWriteFile`.

    ``onDone(transfer, outcome)`` is called once: when the file is committed
    (``ok``) or when the upload fails. ``onClosed(transfer)`` is called once,
    after ``onDone``, when the transfer needs its port no more: at once after
    a failure, after dallying after a success. The owner closes the port
    there, not in ``onDone``, so that a repeated final DATA is still answered.

    ``maxBytes`` (``max_upload_bytes``, 0 for no limit) bounds the DATA
    payload bytes, counted as they come off the wire (before netascii
    decoding, which only shrinks them). ``bytesReceived`` counts the payload
    of the blocks taken in order; ``retransmits`` the ACKs and OACKs sent
    again (timer, lost ACK, gap).
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        client: tuple[str, int],
        file: IWriteFile,
        netascii: bool,
        blksize: int,
        windowsize: int,
        timeout: float,
        maxRetries: int,
        oack: tuple[tuple[str, str], ...],
        onDone: Callable[[WriteTransfer, Outcome], None],
        onClosed: Callable[[WriteTransfer], None],
        maxBytes: int = 0,
    ) -> None:
        super().__init__(
            clock=clock, client=client, timeout=timeout, maxRetries=maxRetries, onDone=onDone
        )
        self.file = file
        self.blksize = blksize
        self.windowsize = windowsize
        self.maxBytes = maxBytes
        self._onClosed = onClosed
        self._opening = encodeOptionAck(oack) if oack else encodeAck(0)
        self._decoder = NetasciiDecoder() if netascii else None
        # Absolute block numbers: _expected is the next block wanted, _acked
        # the last block acknowledged, _inWindow the in-order blocks taken
        # since that ACK, _gapAt the _expected value whose gap was answered.
        self._expected = 1
        self._acked = 0
        self._inWindow = 0
        self._gapAt = 0
        self._final: int | None = None  # set once the final block is taken
        self._committing: Deferred[Any] | None = None
        self._committed = False
        self._finalAcks = 0
        self.bytesReceived = 0

    # -- life cycle ---------------------------------------------------------

    def startProtocol(self) -> None:
        self._send(self._opening)
        self._arm()

    def _release(self, outcome: Outcome) -> None:
        if self._committing is not None:
            pending, self._committing = self._committing, None
            pending.cancel()
        if self._committed:
            return
        try:
            self.file.abort()
        except Exception:
            _log.failure("aborting upload {path} failed", path=self.file.path)

    def _afterClose(self) -> None:
        self._onClosed(self)

    def _timedOut(self) -> None:
        if self._committed:  # the dally is over
            self._finish(_COMPLETE)
            return
        super()._timedOut()

    # -- sending -------------------------------------------------------------

    def _ack(self, block: int) -> None:
        self._acked = block
        self._inWindow = 0
        self._send(encodeAck(block))

    def _resend(self) -> None:
        self.retransmits += 1
        if self._expected == 1:
            self._send(self._opening)
        else:
            self._ack(self._expected - 1)
        self._arm()

    # -- receiving -----------------------------------------------------------

    def _packetReceived(self, opcode: int, number: int, datagram: bytes) -> None:
        if opcode != OP_DATA:
            return  # a stray packet must not end an upload that goes well
        if self._final is not None:
            self._afterFinal(number)
            return
        if number == self._expected & 0xFFFF:
            self._accept(datagram[4:])
        elif (number - self._expected) & 0xFFFF < 0x8000:
            # A block from beyond a gap: the ones before it were lost. Tell
            # the sender where to restart, once for this gap.
            if self._gapAt != self._expected and self._mayResend():
                self._gapAt = self._expected
                self._ack(self._expected - 1)
        elif (
            self._acked
            and self._acked == self._expected - 1
            and number == self._acked & 0xFFFF
            and self._mayResend()
        ):
            # The block we acknowledged, again: our ACK was lost.
            self._ack(self._acked)

    def _mayResend(self) -> bool:
        """Count an ACK sent again on the client's cue like a timer resend,
        so that no ACK goes out more than ``1 + max_retries`` times."""
        if self._retries >= self.maxRetries:
            return False
        self._retries += 1
        self.retransmits += 1
        return True

    def _afterFinal(self, number: int) -> None:
        """While dallying, a repeated final DATA gets the final ACK again."""
        assert self._final is not None
        if not self._committed or number != self._final & 0xFFFF:
            return
        if self._finalAcks > self.maxRetries:
            return
        self._finalAcks += 1
        self._send(encodeAck(self._final))
        self._arm()

    def _accept(self, payload: bytes) -> None:
        size = len(payload)
        if size > self.blksize:
            self._fail(
                ErrorCode.ILLEGAL_OPERATION, "DATA larger than the block size", "illegal_operation"
            )
            return
        if self.maxBytes and self.bytesReceived + size > self.maxBytes:
            refusal = diskFull()
            self._fail(refusal.code, refusal.message, refusal.reason)
            return
        final = size < self.blksize
        data = payload
        if self._decoder is not None:
            data = self._decoder.decode(payload)
            if final:
                data += self._decoder.flush()
        try:
            if data:
                self.file.write(data)
        except RequestRefused as e:
            self._fail(e.code, e.message, e.reason)
            return
        except Exception:
            _log.failure("writing upload {path} failed", path=self.file.path)
            self._fail(ErrorCode.NOT_DEFINED, "Write error", "aborted")
            return
        self.bytesReceived += size
        self._expected += 1
        self._retries = 0
        if final:
            self._complete()
            return
        self._inWindow += 1
        if self._inWindow >= self.windowsize:
            self._ack(self._expected - 1)
        self._arm()

    # -- completion ------------------------------------------------------------

    def _complete(self) -> None:
        """Commit; the final ACK waits for the file to be stored."""
        self._final = self._expected - 1
        self._disarm()
        try:
            result = self.file.commit()
        except Exception:
            self._storeFailed(Failure())
            return
        if isinstance(result, Deferred):
            self._committing = result
            result.addCallbacks(self._stored, self._storeFailed)
            return
        self._stored(None)

    def _stored(self, result: object) -> None:
        if self._closed:
            return
        self._committing = None
        self._committed = True
        assert self._final is not None
        self._finalAcks = 1
        self._send(encodeAck(self._final))
        self._report(_COMPLETE)
        if not self._closed:
            self._arm()  # dally

    def _storeFailed(self, failure: Failure) -> None:
        if self._closed:
            return  # cancelled because the transfer was stopped
        self._committing = None
        if failure.check(RequestRefused):
            refusal = failure.value
            assert isinstance(refusal, RequestRefused)
            self._fail(refusal.code, refusal.message, refusal.reason)
            return
        _log.failure("storing upload {path} failed", failure, path=self.file.path)
        self._fail(ErrorCode.NOT_DEFINED, "Write error", "aborted")
