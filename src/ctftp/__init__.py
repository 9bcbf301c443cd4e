"""ctftp: a TFTP provisioning server on Twisted.

The embedding API: build a :class:`ServerConfig` (``ServerConfig.fromFile`` or
keywords), pass it to :func:`makeService`, and add the returned service to an
application's service tree. :class:`IReadSource` is the seam for serving
generated content.
"""

# First: it keeps systemd's LISTEN_FDS before Twisted's endpoints module
# (imported below, by the HTTP code) takes them from the environment.
import ctftp.systemd  # noqa: F401  # isort: skip
from ctftp.config import ConfigError, ServerConfig
from ctftp.errors import RequestRefused
from ctftp.events import ITransferObserver, TransferRecord
from ctftp.service import makeService
from ctftp.sources import BytesFile, IReadFile, IReadSource, ReadRequest

__all__ = [
    "BytesFile",
    "ConfigError",
    "IReadFile",
    "IReadSource",
    "ITransferObserver",
    "ReadRequest",
    "RequestRefused",
    "ServerConfig",
    "TransferRecord",
    "makeService",
]
