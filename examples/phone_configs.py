"""Embedding ctftp: serve one generated config per phone MAC, no files on disk.

Run it with twistd (``twistd -ny examples/phone_configs.tac``) or import
``phoneService`` into your own application's service tree. Any name other
than ``SEP<MAC>.cnf.xml`` falls through to the files under ``root_dir``.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

import ctftp
from ctftp.sources import LocalFileSource

_PHONE = re.compile(r"SEP([0-9A-Fa-f]{12})\.cnf\.xml")

TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<device>
  <deviceName>SEP{mac}</deviceName>
  <loadInformation>SIP78xx.14-2-1-0001-14</loadInformation>
  <sipProfile><phoneLabel>Phone {mac}</phoneLabel></sipProfile>
</device>
"""


@implementer(ctftp.IReadSource)
class PhoneConfigSource:
    """Generated ``SEP<MAC>.cnf.xml``; everything else from ``fallback``.

    ``lookup`` stands for whatever the application asks (a database, an
    inventory API); it may return a Deferred, and so may ``openRead``.
    """

    def __init__(self, fallback: ctftp.IReadSource) -> None:
        self.fallback = fallback

    def lookup(self, mac: str) -> defer.Deferred[str]:
        return defer.succeed(TEMPLATE.format(mac=mac.upper()))

    def openRead(self, request: ctftp.ReadRequest) -> Any:
        match = _PHONE.fullmatch(request.filename.lstrip("/"))
        if match is None:
            return self.fallback.openRead(request)
        d = self.lookup(match.group(1))
        return d.addCallback(lambda text: ctftp.BytesFile(text.encode()))


def phoneService(config: ctftp.ServerConfig, reactor: Any = None) -> Any:
    """ctftp's service tree serving generated phone configs."""
    files = LocalFileSource(config.root_dir, requireWorldReadable=config.require_world_readable)
    return ctftp.makeService(config, reactor=reactor, source=PhoneConfigSource(files))
