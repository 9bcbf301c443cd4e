"""
Per-file sidecar logs (SPEC 7): one line per transfer appended to
``<file>.log`` beside the file served.

The line is ``START;END;CLIENT_IP;CLIENT_PORT;BYTES;STATUS;MSG`` in local time
to the second.  Writing a sidecar is a courtesy to whoever provisions the
file: it must never fail or slow down the transfer, so every error is
swallowed and reported at most once a minute.
"""

from __future__ import annotations

import errno
import os
import stat

from twisted.internet.interfaces import IReactorTime

from ctftp.logs import RateLimitedLog, localSecond, logger

__all__ = ["SidecarWriter", "sidecarLine"]

SIDECAR_SUFFIX = ".log"
WARNING_INTERVAL = 60.0

# O_NONBLOCK: a FIFO named X.log must not hang the server in open (with no
# reader the open fails at once); O_NOFOLLOW: a symlink named X.log must not
# lead the line out of the root. Anything but a regular file is then refused.
_FLAGS = (
    os.O_WRONLY
    | os.O_APPEND
    | os.O_CREAT
    | os.O_NONBLOCK
    | os.O_NOCTTY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_log = logger("ctftp.sidecar")


def sidecarLine(
    start: float,
    end: float,
    clientIP: str,
    clientPort: int,
    nbytes: int,
    status: str,
    message: str,
) -> str:
    """
    Format one sidecar line, newline included; ``start`` and ``end`` are
    POSIX timestamps.

    ``;`` and line breaks in the message would break the one-line,
    fixed-field format that scripts split on, so they become ``,`` and
    spaces; the messages ctftp itself writes never contain them.
    """
    if ";" in message or "\n" in message or "\r" in message:
        message = message.replace(";", ",").replace("\r", " ").replace("\n", " ")
    return (
        f"{localSecond(start)};{localSecond(end)};{clientIP};{clientPort};"
        f"{nbytes};{status};{message}\n"
    )


class SidecarWriter:
    """
    Appends lines to ``<file>.log``.

    Each append opens, writes once and closes: a transfer ends long after it
    started and thousands of files may be served, so holding descriptors open
    would cost more than it saves, and a single ``os.write`` on an
    ``O_APPEND`` descriptor keeps lines whole when several transfers of the
    same file end at once, in this process or another.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._warning = RateLimitedLog(_log, clock, WARNING_INTERVAL)

    def append(self, filePath: str, line: str) -> None:
        """
        Append ``line`` to ``filePath + ".log"`` (created 0o644 before umask);
        a ``.log`` that is not a regular file (a FIFO, a device, a symlink)
        counts as a failure and is left alone.

        Never raises: a failure is logged as a warning at most once per
        ``WARNING_INTERVAL`` seconds of clock time, with the number of
        failures suppressed since the previous warning.
        """
        path = filePath + SIDECAR_SUFFIX
        try:
            fd = os.open(path, _FLAGS, 0o644)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "not a regular file")
                data = line.encode("utf-8", "backslashreplace")
                written = os.write(fd, data)
                while written < len(data):  # only after a signal or a full disk
                    data = data[written:]
                    written = os.write(fd, data)
            finally:
                os.close(fd)
        except Exception as error:  # OSError mostly; ValueError for a NUL in the path
            self._failed(path, error)

    def _failed(self, path: str, error: Exception) -> None:
        self._warning("cannot write sidecar {path}: {error}", path=path, error=str(error))
