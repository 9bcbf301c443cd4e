"""The one exception that turns into a TFTP ERROR packet and an error event."""

from __future__ import annotations

from ctftp.packets import ErrorCode

__all__ = ["RequestRefused", "eventMessageFor"]

#: The ``message`` of an error event (SPEC section 8) for each TFTP error code.
_EVENT_MESSAGES = {
    ErrorCode.NOT_DEFINED: "aborted",
    ErrorCode.FILE_NOT_FOUND: "file_not_found",
    ErrorCode.ACCESS_VIOLATION: "access_denied",
    ErrorCode.DISK_FULL: "disk_full",
    ErrorCode.ILLEGAL_OPERATION: "illegal_operation",
    ErrorCode.UNKNOWN_TID: "illegal_operation",
    ErrorCode.FILE_EXISTS: "file_exists",
    ErrorCode.NO_SUCH_USER: "access_denied",
    ErrorCode.OPTION_REFUSED: "option_refused",
}


def eventMessageFor(code: int) -> str:
    """The event ``message`` for a TFTP error code we send."""
    return _EVENT_MESSAGES.get(code, "aborted")  # type: ignore[call-overload]


class RequestRefused(Exception):
    """A request (or a transfer) ends with ERROR ``code`` and ``message``.

    ``reason`` is the event ``message`` (``file_not_found``...); by default it
    follows from the code.
    """

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.reason = reason or eventMessageFor(code)
