"""ctftp's configuration: the key table, the ``key=value`` file parser and ``ServerConfig``.

Everything a user can configure is described once, in :data:`KEYS`. The twistd
options (``ctftp.tap``), the reference in ``docs/configuration.md`` and
``ctftp.conf.example`` all follow that table, so a key cannot be known to one
of them and missing from another.

A user mistake must stop start-up with exactly one line that says where the
mistake is (file and line, or the command-line option), which key, and what was
expected; :class:`ConfigError` carries that line and nothing else, so callers
print it instead of a traceback.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from ctftp import acl

__all__ = [
    "KEYS",
    "ConfigError",
    "Key",
    "ServerConfig",
    "checkKey",
]


class ConfigError(Exception):
    """One-line, user-facing message, e.g. ``ctftp.conf:12: timeout_sec: expected ...``.

    The message is complete on its own (it names the file and line or the
    command-line option), so the command-line front end prints ``str(error)``
    and exits instead of showing a traceback for what is a user mistake.
    """


def settingWhere(config: ServerConfig, key: str) -> str:
    """Where ``key``'s value came from, for a :class:`ConfigError` found after
    parsing (a folder that cannot be used): ``FILE:LINE: key`` when the config
    file's line gave it, else the command-line option."""
    option = f"command line: --{key.replace('_', '-')}"
    if not config.source:
        return option
    try:
        with open(config.source, encoding="utf-8-sig") as handle:
            text = handle.read()
    except (OSError, ValueError):
        return f"{config.source}: {key}"
    for number, _, name, raw in _settingLines(text):
        if name != key:
            continue
        try:
            fromFile = _canonical(key, KEYS[key].convert(raw, os.path.dirname(config.source)))
        except ValueError:
            return option  # the file's value never parsed: it was overridden
        return f"{config.source}:{number}: {key}" if fromFile == getattr(config, key) else option
    return option


def _canonical(name: str, value: Any) -> Any:
    """A key's value as ``ServerConfig`` keeps it, from a raw string or a
    typed value; raises ValueError like the key's parser."""
    if isinstance(value, str):
        return KEYS[name].parse(value)
    return _TYPED[name](value)


def _settingLines(text: str) -> Iterator[tuple[int, str, str, str]]:
    """``(line number, line, key, raw value)`` of each line that is not blank
    or a comment, split at its first ``=`` (key and value stripped; a key is
    empty when the line has no ``=``). Lines end at ``\n`` only (strip()
    drops a ``\r``), so the numbers match editors'."""
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        name, sep, raw = stripped.partition("=")
        yield number, stripped, name.strip() if sep else "", raw.strip()


def unusableFolder(config: ServerConfig, key: str, folder: str, error: OSError) -> ConfigError:
    """The one-line error for a folder setting (``log_dir``, ``cache_dir``)
    that cannot be made or used."""
    reason = error.strerror or error
    return ConfigError(f"{settingWhere(config, key)}: cannot use {folder}: {reason}")


class BadValueError(ValueError):
    """A ``ValueError`` that names the offending part of a list value.

    For ``root_dir=a,b,missing`` the message should quote ``missing``, not the
    whole list; ``got`` carries that part.
    """

    def __init__(self, expected: str, got: object) -> None:
        super().__init__(expected)
        self.got = got


# ---------------------------------------------------------------------------
# Parse functions: str -> value, raising ValueError("expected ...").
# ---------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_BOOL_EXPECTED = "expected true/false, yes/no, on/off or 1/0"

_LOG_LEVELS = {
    "error": "error",
    "warn": "warn",
    "warning": "warn",
    "info": "info",
    "debug": "debug",
}
_LOG_FORMATS = ("text", "json")

MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464


def parseBool(raw: str) -> bool:
    """Parse a boolean in any of the spellings the classic servers' configs use."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(_BOOL_EXPECTED)


_MULTICAST_ADDR_EXPECTED = (
    "expected comma-separated IPv4 multicast addresses (224.0.0.0/4), the last number"
    " of each may be a range: 239.239.239.0-255"
)
_MULTICAST_PORT_EXPECTED = "expected a port 1..65535 or a range LOW-HIGH"
_MULTICAST_TTL_EXPECTED = "expected a whole number 1..255"
_MTFTP_PORT_EXPECTED = "expected a port 1..65535"


def parseMulticastAddr(raw: str) -> tuple[str, ...]:
    """Parse ``multicast_addr``, the groups RFC 2090 transfers are sent to,
    in atftpd's ``--mcast-addr`` form: addresses, each of whose last number
    may be a range (``239.239.239.0-255``), separated by commas."""
    groups: list[str] = []
    for part in raw.split(","):
        text = part.strip()
        if not text:
            continue
        head, _, last = text.rpartition(".")
        low, dash, high = last.partition("-")
        try:
            numbers = range(int(low, 10), int(high if dash else low, 10) + 1)
            first = ipaddress.IPv4Address(f"{head}.{numbers.start}")
            if not numbers or numbers.stop > 256 or not first.is_multicast:
                raise ValueError(text)
        except ValueError:
            raise BadValueError(_MULTICAST_ADDR_EXPECTED, text) from None
        groups.extend(f"{head}.{n}" for n in numbers)
    if not groups:
        raise ValueError(_MULTICAST_ADDR_EXPECTED)
    return tuple(dict.fromkeys(groups))


def parseMulticastPort(raw: str) -> tuple[int, int]:
    """Parse ``multicast_port``: the UDP port of the groups, or a range of
    them (atftpd's ``--mcast-port``)."""
    low, dash, high = raw.strip().partition("-")
    first = _port(low, _MULTICAST_PORT_EXPECTED, 1)
    last = _port(high, _MULTICAST_PORT_EXPECTED, 1) if dash else first
    if first > last:
        raise ValueError(_MULTICAST_PORT_EXPECTED)
    return (first, last)


def parseMulticastTTL(raw: str) -> int:
    """Parse ``multicast_ttl``: hops a group's packets may take (atftpd's
    ``--mcast-ttl``); 1 keeps them on the local network."""
    return _intIn(raw, 1, 255, _MULTICAST_TTL_EXPECTED)


def parseMtftpPort(raw: str) -> int:
    """Parse ``mtftp_port``: where PXE MTFTP requests come (atftpd's
    ``--mtftp-port``)."""
    return _port(raw, _MTFTP_PORT_EXPECTED, 1)


def _intIn(raw: str, low: int, high: int | None, expected: str) -> int:
    text = raw.strip()
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(expected) from None
    if value < low or (high is not None and value > high):
        raise ValueError(expected)
    return value


def parseTimeout(raw: str) -> float:
    """Parse ``timeout_sec``: seconds, fractions allowed, strictly positive and finite."""
    expected = "expected a number of seconds greater than 0"
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(expected) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(expected)
    return value


def parseMaxRetries(raw: str) -> int:
    """Parse ``max_retries``: a count of resends, so zero is allowed."""
    return _intIn(raw, 0, None, "expected a whole number 0 or greater")


def parseMaxBlksize(raw: str) -> int:
    """Parse ``max_blksize``: the RFC 2348 range, since a cap outside it means nothing."""
    return _intIn(
        raw,
        MIN_BLKSIZE,
        MAX_BLKSIZE,
        f"expected a whole number from {MIN_BLKSIZE} to {MAX_BLKSIZE}",
    )


def parseMaxConnections(raw: str) -> int:
    """Parse ``max_connections``: at least one, or the server could serve nobody."""
    return _intIn(raw, 1, None, "expected a whole number 1 or greater")


def parsePortPool(raw: str) -> int:
    """Parse ``port_pool``: 0 (a fresh port per transfer) up to 1024 ports."""
    return _intIn(raw, 0, 1024, "expected a whole number 0..1024 (0: a fresh port per transfer)")


def parseLogLevel(raw: str) -> str:
    """Parse ``log_level``, accepting ``warning`` for ``warn`` as Python users write it."""
    value = raw.strip().lower()
    try:
        return _LOG_LEVELS[value]
    except KeyError:
        raise ValueError("expected one of error, warn, info, debug") from None


def parseLogFormat(raw: str) -> str:
    """Parse ``log_format``."""
    value = raw.strip().lower()
    if value not in _LOG_FORMATS:
        raise ValueError("expected text or json")
    return value


def _port(text: str, expected: str, low: int = 0) -> int:
    text = text.strip()
    if not text.isdigit():
        raise ValueError(expected)
    value = int(text)
    if not low <= value <= 65535:
        raise ValueError(expected)
    return value


def _host(text: str, expected: str) -> str:
    """Normalise an IP literal (brackets allowed around IPv6) or raise ValueError."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(expected) from None


_LISTENER_EXPECTED = "expected HOST:PORT with an IP address and a port 0..65535 ([::1]:69 for IPv6)"


def parseListener(raw: str) -> tuple[str, int]:
    """Parse one ``HOST:PORT``; IPv6 must be bracketed so the port is not ambiguous."""
    text = raw.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise BadValueError(_LISTENER_EXPECTED, text)
        host, port = text[: close + 1], text[close + 2 :]
        try:
            address = ipaddress.ip_address(host[1:-1])
        except ValueError:
            raise BadValueError(_LISTENER_EXPECTED, text) from None
        if address.version != 6:
            raise BadValueError(_LISTENER_EXPECTED, text)
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise BadValueError(_LISTENER_EXPECTED, text)
    try:
        return (_host(host, _LISTENER_EXPECTED), _port(port, _LISTENER_EXPECTED))
    except ValueError:
        raise BadValueError(_LISTENER_EXPECTED, text) from None


def _checkDistinct(listeners: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    seen: set[tuple[str, int]] = set()
    result = []
    for host, port in listeners:
        if port != 0 and (host, port) in seen:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise BadValueError("expected each HOST:PORT only once", shown)
        seen.add((host, port))
        result.append((host, port))
    if not result:
        raise ValueError("expected at least one HOST:PORT")
    return tuple(result)


def parseListeners(raw: str) -> tuple[tuple[str, int], ...]:
    """Parse ``listeners``: a comma list of ``HOST:PORT``."""
    parts = [part for part in raw.split(",") if part.strip()]
    if not parts:
        raise ValueError("expected at least one HOST:PORT")
    return _checkDistinct(parseListener(part) for part in parts)


def parseRefuseOptions(raw: str) -> frozenset[str]:
    """Parse ``refuse_options``: option names compare case-insensitively on the wire."""
    names = set()
    for part in raw.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if any(ch.isspace() or ch == "=" for ch in name) or not name.isprintable():
            raise BadValueError("expected a comma-separated list of option names", part.strip())
        names.add(name)
    return frozenset(names)


def parsePortRange(raw: str) -> tuple[int, int] | None:
    """Parse ``port_range``: ``LOW:HIGH``; empty means any port the OS picks."""
    text = raw.strip()
    if not text:
        return None
    expected = "expected LOW:HIGH with ports 1..65535 and LOW <= HIGH"
    low, sep, high = text.partition(":")
    if not sep:
        raise ValueError(expected)
    lowPort, highPort = _port(low, expected, 1), _port(high, expected, 1)
    if lowPort > highPort:
        raise ValueError(expected)
    return (lowPort, highPort)


def _absolute(path: str, base: str | None) -> str:
    path = os.path.expanduser(path)
    if base is not None and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.normpath(os.path.abspath(path))


def _whereRelative(path: str, base: str | None) -> str:
    if os.path.isabs(os.path.expanduser(path)):
        return ""
    return f" (relative to {base if base is not None else os.getcwd()})"


def parseRootDir(raw: str, base: str | None = None) -> tuple[str, ...]:
    """Parse ``root_dir``: existing folders, so a typo fails at start-up, not per request.

    Relative entries are relative to ``base`` (the config file's folder) or,
    without one, to the current directory.
    """
    return _rootDirs([entry.strip() for entry in raw.split(",") if entry.strip()], base)


def _rootDirs(entries: list[str], base: str | None) -> tuple[str, ...]:
    if not entries:
        raise ValueError("expected a folder or a comma-separated list of folders")
    result: list[str] = []
    for entry in entries:
        path = _absolute(entry, base) if "\0" not in entry else ""
        if not path or not os.path.isdir(path):
            raise BadValueError(f"expected an existing folder{_whereRelative(entry, base)}", entry)
        if path not in result:
            result.append(path)
    return tuple(result)


def parseLogDir(raw: str, base: str | None = None) -> str:
    """Parse ``log_dir``: it may not exist yet (the log observer creates it)."""
    return _folderToBe(raw, base)


def _folderToBe(raw: str, base: str | None) -> str:
    """A folder path that need not exist yet (but is no file); "" stays ""."""
    text = raw.strip()
    if not text:
        return ""
    path = _absolute(text, base) if "\0" not in text else ""
    if not path or (os.path.exists(path) and not os.path.isdir(path)):
        raise ValueError(f"expected a folder, which need not exist yet{_whereRelative(text, base)}")
    return path


def _existingFile(raw: str, base: str | None) -> str:
    text = raw.strip()
    if not text:
        return ""
    path = _absolute(text, base) if "\0" not in text else ""
    if not path or not os.path.isfile(path):
        raise ValueError(f"expected an existing file{_whereRelative(text, base)}")
    return path


def parseFile(raw: str, base: str | None = None) -> str:
    """Parse an optional file key (``event_ca_bundle``, ``remap_file``, ``pcre_file``).

    Empty means off; otherwise the file must exist when ctftp starts, and the
    value is its absolute, normalised path.
    """
    return _existingFile(raw, base)


_EVENT_UDP_EXPECTED = (
    "expected HOST:PORT with an IP address or host name and a port 1..65535 ([::1]:514 for IPv6)"
)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def _hostName(text: str) -> bool:
    """True when ``text`` is a syntactically valid DNS name (no lookup)."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    # An all-digit last label is a mistyped IPv4 address, never a name.
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _sinkAddress(host: str, port: object) -> tuple[str, int]:
    """Check one ``event_udp`` (host, port); host unbracketed or bracketed IPv6."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(_EVENT_UDP_EXPECTED)
    text = host.strip()
    bracketed = text.startswith("[") and text.endswith("]")
    try:
        address = ipaddress.ip_address(text[1:-1] if bracketed else text)
    except ValueError:
        if bracketed or not _hostName(text):
            raise ValueError(_EVENT_UDP_EXPECTED) from None
        return (text, port)
    if bracketed and address.version != 6:
        raise ValueError(_EVENT_UDP_EXPECTED)
    return (str(address), port)


def parseEventUDP(raw: str) -> tuple[str, int] | None:
    """Parse ``event_udp``: ``HOST:PORT`` (IP literal or DNS name); empty means off."""
    text = raw.strip()
    if not text:
        return None
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(_EVENT_UDP_EXPECTED)
        host, port = text[: close + 1], text[close + 2 :]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(_EVENT_UDP_EXPECTED)
    return _sinkAddress(host, _port(port, _EVENT_UDP_EXPECTED, 1))


_HTTP_URL_EXPECTED = "expected an http:// or https:// URL"


def parseEventHTTPURL(raw: str) -> str:
    """Parse ``event_http_url``: an ``http(s)://`` URL with a host; empty means off."""
    text = raw.strip()
    if not text:
        return ""
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ValueError(_HTTP_URL_EXPECTED)
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValueError(_HTTP_URL_EXPECTED) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(_HTTP_URL_EXPECTED)
    return text


def parseMetricsListen(raw: str) -> tuple[str, int] | None:
    """Parse ``metrics_listen``: one ``HOST:PORT`` like a listener; empty means off."""
    text = raw.strip()
    if not text:
        return None
    return parseListener(text)


_UMASK_EXPECTED = "expected an octal umask 000..777, e.g. 022"


def parseUmask(raw: str) -> int:
    """Parse ``umask``: octal digits, with an optional leading ``0`` or ``0o``."""
    text = raw.strip().lower()
    if text.startswith("0o"):
        text = text[2:]
    if not text or any(ch not in "01234567" for ch in text):
        raise ValueError(_UMASK_EXPECTED)
    value = int(text, 8)
    if value > 0o777:
        raise ValueError(_UMASK_EXPECTED)
    return value


_BYTES_EXPECTED = "expected a number of bytes 0 or greater, with an optional K, M or G suffix"
_BYTE_SUFFIXES = {"k": 1024, "m": 1024**2, "g": 1024**3}


def parseMaxUploadBytes(raw: str) -> int:
    """Parse ``max_upload_bytes``: bytes, ``K``/``M``/``G`` are powers of 1024; 0: no limit."""
    text = raw.strip().lower()
    factor = _BYTE_SUFFIXES.get(text[-1:], 1)
    if factor != 1:
        text = text[:-1].rstrip()
    if not text.isascii() or not text.isdigit():
        raise ValueError(_BYTES_EXPECTED)
    return int(text) * factor


def parseClients(raw: str) -> tuple[acl.Network, ...]:
    """Parse ``allow_clients`` / ``deny_clients``: CIDRs or bare addresses, comma-separated."""
    return acl.parseCIDRList(raw)


def parseWorkers(raw: str) -> int:
    """Parse ``workers``: processes sharing each listener."""
    return _intIn(raw, 1, 64, "expected a whole number from 1 to 64")


_RELAY_URL_EXPECTED = (
    "expected an http:// or https:// URL, optionally with +nocache or +nocompress"
    " after the scheme (http+nocache://...)"
)
_RELAY_SCHEME = re.compile(r"(?i)(https?)((?:\+(?:nocache|nocompress))*)://")


def parseFallbackURL(raw: str) -> str:
    """Parse ``fallback_url``: the base URL of names not found locally; empty means off.

    The scheme may carry the modifiers of a URL symlink (``http+nocache://``),
    so a fallback can opt out of the cache like a link can. Unlike a link, an
    unknown modifier here is a mistake the operator can fix, so it is refused.
    """
    text = raw.strip()
    if not text:
        return ""
    match = _RELAY_SCHEME.match(text)
    if match is None or any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ValueError(_RELAY_URL_EXPECTED)
    try:
        parts = urllib.parse.urlsplit(match.group(1) + text[match.end() - 3 :])
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValueError(_RELAY_URL_EXPECTED) from None
    if not parts.hostname or parts.query or parts.fragment:
        raise ValueError(_RELAY_URL_EXPECTED)
    return text


def parseCacheDir(raw: str, base: str | None = None) -> str:
    """Parse ``cache_dir``: a folder for the HTTP relay's cache, created if missing;
    empty means the cache is kept in memory."""
    return _folderToBe(raw, base)


def parseByteCount(raw: str) -> int:
    """Parse a size in bytes (``cache_max_bytes``, ``relay_max_bytes``): the
    spelling of ``max_upload_bytes``, so every size key reads the same."""
    return parseMaxUploadBytes(raw)


# ---------------------------------------------------------------------------
# The key table.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One configuration key: everything the parser, the options and the docs need.

    ``default`` is the string a user would write (``None`` when the key is
    required). ``parse`` turns a raw string into the value, raising
    ``ValueError("expected ...")``; for path keys ``parseRelative`` does the
    same with relative paths taken from a given folder (the config file's).
    """

    name: str
    default: str | None
    help: str
    parse: Callable[[str], Any]
    parseRelative: Callable[[str, str], Any] | None = None

    @property
    def option(self) -> str:
        """The command-line spelling, ``--key-with-dashes``."""
        return "--" + self.name.replace("_", "-")

    def convert(self, raw: str, base: str | None = None) -> Any:
        """Parse ``raw``, taking relative paths from ``base`` when given."""
        if base is not None and self.parseRelative is not None:
            return self.parseRelative(raw, base)
        return self.parse(raw)


def _keys(*keys: Key) -> Mapping[str, Key]:
    return MappingProxyType({key.name: key for key in keys})


KEYS: Mapping[str, Key] = _keys(
    Key(
        "root_dir",
        None,
        "folder served; a comma-separated list adds read-only search folders, writes go to the"
        " first",
        parseRootDir,
        parseRootDir,
    ),
    Key(
        "log_dir",
        "",
        "folder of the central log ctftp.log; empty: twistd's log only",
        parseLogDir,
        parseLogDir,
    ),
    Key(
        "listeners",
        "0.0.0.0:69",
        "comma-separated HOST:PORT addresses to serve on; IPv6 as [::]:69",
        parseListeners,
    ),
    Key(
        "timeout_sec",
        "3",
        "seconds before a packet is sent again (fractions allowed)",
        parseTimeout,
    ),
    Key(
        "max_retries",
        "5",
        "sends of one packet again before the transfer is abandoned",
        parseMaxRetries,
    ),
    Key(
        "log_level",
        "info",
        "least severe level logged: error, warn, info or debug",
        parseLogLevel,
    ),
    Key(
        "log_format",
        "text",
        "central log format: text (ctftp lines) or json (one object a line)",
        parseLogFormat,
    ),
    Key(
        "file_log",
        "true",
        "append a line per transfer to <file>.log beside the file served",
        parseBool,
    ),
    Key(
        "max_blksize",
        str(MAX_BLKSIZE),
        f"cap on the negotiated blksize ({MIN_BLKSIZE}..{MAX_BLKSIZE})",
        parseMaxBlksize,
    ),
    Key(
        "refuse_options",
        "",
        "comma-separated TFTP options never accepted, e.g. blksize,tsize",
        parseRefuseOptions,
    ),
    Key(
        "options",
        "true",
        "false: no RFC 2347 option negotiation at all",
        parseBool,
    ),
    Key(
        "port_range",
        "",
        "LOW:HIGH local ports for transfers; empty: any free port",
        parsePortRange,
    ),
    Key(
        "port_pool",
        "0",
        "0: a fresh port per transfer; N: N ports per address shared by transfers",
        parsePortPool,
    ),
    Key(
        "max_connections",
        "1000",
        "concurrent transfers; past it new requests get no reply",
        parseMaxConnections,
    ),
    Key(
        "require_world_readable",
        "false",
        "true: serve only world-readable files",
        parseBool,
    ),
    Key(
        "event_udp",
        "",
        "HOST:PORT (IP or host name; IPv6 as [::1]:514) that receives one JSON event per"
        " datagram; empty: off",
        parseEventUDP,
    ),
    Key(
        "event_http_url",
        "",
        "http:// or https:// URL that receives each JSON event by POST; empty: off",
        parseEventHTTPURL,
    ),
    Key(
        "event_ca_bundle",
        "",
        "PEM file of private CAs trusted for https event delivery; empty: the system's",
        parseFile,
        parseFile,
    ),
    Key(
        "allow_write",
        "false",
        "true: accept write requests (WRQ) at all",
        parseBool,
    ),
    Key(
        "allow_create",
        "false",
        "true: a write may create a new file; false: only existing files are overwritten",
        parseBool,
    ),
    Key(
        "umask",
        "022",
        "octal umask for created files",
        parseUmask,
    ),
    Key(
        "write_devnull",
        "false",
        "true: accept write requests and discard the data",
        parseBool,
    ),
    Key(
        "max_upload_bytes",
        "0",
        "largest upload accepted, bytes with an optional K/M/G suffix; 0: no limit",
        parseMaxUploadBytes,
    ),
    Key(
        "metrics_listen",
        "",
        "HOST:PORT of an HTTP /metrics page (Prometheus text); empty: off",
        parseMetricsListen,
    ),
    Key(
        "remap_file",
        "",
        "tftp-hpa remap rules file, reloaded on SIGHUP; empty: no remapping",
        parseFile,
        parseFile,
    ),
    Key(
        "pcre_file",
        "",
        "atftpd pattern file, 'regex replacement' per line; empty: none",
        parseFile,
        parseFile,
    ),
    Key(
        "allow_clients",
        "",
        "comma-separated CIDR networks or addresses allowed; empty: every client not denied",
        parseClients,
    ),
    Key(
        "deny_clients",
        "",
        "comma-separated CIDR networks or addresses refused (wins over allow_clients)",
        parseClients,
    ),
    Key(
        "multicast",
        "false",
        "true: accept the RFC 2090 multicast option (atftpd)",
        parseBool,
    ),
    Key(
        "multicast_addr",
        "239.239.239.0-255",
        "IPv4 groups for multicast transfers, e.g. 239.239.239.0-255,239.1.1.1 (atftpd"
        " --mcast-addr)",
        parseMulticastAddr,
    ),
    Key(
        "multicast_port",
        "1758",
        "UDP port of the multicast groups, or a range LOW-HIGH (atftpd --mcast-port)",
        parseMulticastPort,
    ),
    Key(
        "multicast_ttl",
        "1",
        "TTL of multicast packets, 1..255 (atftpd --mcast-ttl)",
        parseMulticastTTL,
    ),
    Key(
        "mtftp_file",
        "",
        "PXE MTFTP files, 'FILE GROUP PORT' per line (atftpd --mtftp), reloaded on SIGHUP;"
        " empty: off",
        parseFile,
        parseFile,
    ),
    Key(
        "mtftp_port",
        "75",
        "UDP port of PXE MTFTP requests, when mtftp_file is set (atftpd --mtftp-port)",
        parseMtftpPort,
    ),
    Key(
        "workers",
        "1",
        "processes sharing each listener through SO_REUSEPORT (Linux), 1..64",
        parseWorkers,
    ),
    Key(
        "systemd",
        "false",
        "true: serve on UDP sockets passed by systemd socket activation",
        parseBool,
    ),
    Key(
        "http_relay",
        "true",
        "true: a symlink to an http(s):// URL is served from that URL, and fallback_url is"
        " used; false: both off",
        parseBool,
    ),
    Key(
        "fallback_url",
        "",
        "base http(s):// URL of names not found locally; empty: off",
        parseFallbackURL,
    ),
    Key(
        "cache_dir",
        "",
        "folder of the HTTP relay cache (created if missing, reused at restart); empty: memory",
        parseCacheDir,
        parseCacheDir,
    ),
    Key(
        "cache_max_bytes",
        "64M",
        "bound on the HTTP relay cache, bytes with an optional K/M/G suffix; 0: no cache",
        parseByteCount,
    ),
    Key(
        "relay_max_bytes",
        "64M",
        "largest body the HTTP relay fetches, bytes with an optional K/M/G suffix; 0: no limit",
        parseByteCount,
    ),
    Key(
        "http_timeout_sec",
        "30",
        "seconds the HTTP relay waits for a connection, the headers or the next body bytes",
        parseTimeout,
    ),
)
"""Every supported key, in the order the docs and the example file list them."""

COMMAND_LINE = "command line"


# ---------------------------------------------------------------------------
# ServerConfig
# ---------------------------------------------------------------------------


def _keyword(name: str, expected: str, got: object) -> ConfigError:
    shown = f"'{got}'" if isinstance(got, str) else repr(got)
    return ConfigError(f"ServerConfig: {name}: {expected}, got {shown}")


@dataclass(frozen=True)
class ServerConfig:
    """A complete, validated server configuration.

    Built from a file (:meth:`fromFile`), from command-line strings
    (:meth:`fromStrings`) or by keyword from Python. Keyword construction
    accepts convenient forms (strings, lists) and normalises them, so an
    embedding application need not know the internal shapes; any value that
    would be refused in a config file is refused here too.
    """

    root_dir: tuple[str, ...]
    log_dir: str = ""
    listeners: tuple[tuple[str, int], ...] = (("0.0.0.0", 69),)
    timeout_sec: float = 3.0
    max_retries: int = 5
    log_level: str = "info"
    log_format: str = "text"
    file_log: bool = True
    max_blksize: int = MAX_BLKSIZE
    refuse_options: frozenset[str] = frozenset()
    options: bool = True
    port_range: tuple[int, int] | None = None
    port_pool: int = 0
    max_connections: int = 1000
    require_world_readable: bool = False
    event_udp: tuple[str, int] | None = None
    event_http_url: str = ""
    event_ca_bundle: str = ""
    allow_write: bool = False
    allow_create: bool = False
    umask: int = 0o022
    write_devnull: bool = False
    max_upload_bytes: int = 0
    metrics_listen: tuple[str, int] | None = None
    remap_file: str = ""
    pcre_file: str = ""
    allow_clients: tuple[acl.Network, ...] = ()
    deny_clients: tuple[acl.Network, ...] = ()
    multicast: bool = False
    multicast_addr: tuple[str, ...] = tuple(f"239.239.239.{n}" for n in range(256))
    multicast_port: tuple[int, int] = (1758, 1758)
    multicast_ttl: int = 1
    mtftp_file: str = ""
    mtftp_port: int = 75
    workers: int = 1
    systemd: bool = False
    http_relay: bool = True
    fallback_url: str = ""
    cache_dir: str = ""
    cache_max_bytes: int = 64 * 1024**2
    relay_max_bytes: int = 64 * 1024**2
    http_timeout_sec: float = 30.0
    source: str = ""

    def __post_init__(self) -> None:
        for name, value in self._normalised().items():
            object.__setattr__(self, name, value)

    def _normalised(self) -> dict[str, Any]:
        """Return every field in its canonical form, or raise ConfigError."""
        result: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "source":
                if not isinstance(value, str):
                    raise _keyword("source", "expected a path", value)
                result["source"] = _absolute(value, None) if value else ""
                continue
            try:
                result[f.name] = _canonical(f.name, value)
            except ValueError as exc:
                raise _keyword(f.name, str(exc), getattr(exc, "got", value)) from None
        return result

    @classmethod
    def fromFile(cls, path: str, overrides: Mapping[str, str] | None = None) -> ServerConfig:
        """Read a ``key=value`` file; ``overrides`` (from the command line) win over it.

        ``overrides`` maps underscore key names to raw strings; their relative
        paths are relative to the current directory, the file's to its folder.
        """
        base = os.path.dirname(os.path.abspath(path))
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            bad = data.count(b"\n", 0, exc.start) + 1
            raise ConfigError(f"{path}:{bad}: cannot read config file: not UTF-8 text") from None
        # Overrides first: a file value the command line replaces is never
        # used, so it is not checked either (a root_dir= valid only on another
        # machine can be overridden with --root-dir).
        values = _convertAll(overrides or {}, COMMAND_LINE)
        lines: dict[str, int] = {}
        for number, stripped, name, raw in _settingLines(text):
            where = f"{path}:{number}"
            if not name:
                raise ConfigError(f"{where}: expected key=value, got '{stripped}'")
            _checkName(name, where, name)
            if name in lines:
                raise ConfigError(
                    f"{where}: {name}: duplicate key, first given on line {lines[name]}"
                )
            lines[name] = number
            if overrides is None or name not in overrides:
                values[name] = _convert(KEYS[name], raw, base, f"{where}: {name}")
        if "root_dir" not in values:
            raise ConfigError(f"{path}: root_dir: required key is missing")
        return cls(**values, source=os.path.abspath(path))

    @classmethod
    def fromStrings(cls, values: Mapping[str, str], origin: str = COMMAND_LINE) -> ServerConfig:
        """Build from raw strings keyed by underscore names, e.g. the command line's.

        Relative paths are relative to the current directory. With the default
        ``origin`` errors name the ``--option``; otherwise ``origin: key``.
        """
        converted = _convertAll(values, origin)
        if "root_dir" not in converted:
            if origin == COMMAND_LINE:
                raise ConfigError(
                    f"{origin}: --root-dir: required option is missing (or give --config FILE)"
                )
            raise ConfigError(f"{origin}: root_dir: required key is missing")
        return cls(**converted)


def _display(name: str, origin: str) -> str:
    return "--" + name.replace("_", "-") if origin == COMMAND_LINE else name


def checkKey(name: str, origin: str = COMMAND_LINE) -> None:
    """Raise the one-line ConfigError for a name that is not a supported key.

    ``name`` uses underscores or dashes; with the command-line origin the error
    names ``--the-option`` and suggests the closest option, so a front end
    that meets an unknown option can say the same as the file parser.
    """
    key = name.lstrip("-").replace("-", "_") if origin == COMMAND_LINE else name
    _checkName(key, origin, _display(key, origin))


def _checkName(name: str, where: str, shown: str) -> None:
    """Raise the one-line error for a key that is not a supported one."""
    if name in KEYS:
        return
    known = list(KEYS)
    candidate = name.lower().replace("-", "_")
    close = [candidate] if candidate in KEYS else difflib.get_close_matches(candidate, known, n=1)
    kind = "option" if shown.startswith("--") else "key"
    hint = ""
    if close:
        suggestion = "--" + close[0].replace("_", "-") if kind == "option" else close[0]
        hint = f" (did you mean '{suggestion}'?)"
    raise ConfigError(f"{where}: unknown {kind} '{shown}'{hint}")


def _convert(key: Key, raw: str, base: str | None, where: str) -> Any:
    try:
        return key.convert(raw, base)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}, got '{getattr(exc, 'got', raw)}'") from None


def _convertAll(values: Mapping[str, str], origin: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, raw in values.items():
        shown = _display(name, origin)
        _checkName(name, origin, shown)
        result[name] = _convert(KEYS[name], raw, None, f"{origin}: {shown}")
    return result


# ---------------------------------------------------------------------------
# Normalisers for typed keyword arguments (strings go through Key.parse).
# ---------------------------------------------------------------------------


def _typedRootDir(value: object) -> tuple[str, ...]:
    if isinstance(value, os.PathLike):
        value = [value]
    if not isinstance(value, Iterable):
        raise ValueError("expected a folder or a sequence of folders")
    entries = [os.fspath(entry) if isinstance(entry, os.PathLike) else entry for entry in value]
    if not all(isinstance(entry, str) for entry in entries):
        raise ValueError("expected a folder or a sequence of folders")
    return _rootDirs(entries, None)


def _typedListeners(value: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Iterable):
        raise ValueError(_LISTENER_EXPECTED)
    result = []
    for item in value:
        if isinstance(item, str):
            result.append(parseListener(item))
            continue
        try:
            host, port = item
        except (TypeError, ValueError):
            raise BadValueError(_LISTENER_EXPECTED, item) from None
        if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
            raise BadValueError(_LISTENER_EXPECTED, item)
        if not 0 <= port <= 65535:
            raise BadValueError(_LISTENER_EXPECTED, item)
        try:
            result.append((_host(host, _LISTENER_EXPECTED), port))
        except ValueError:
            raise BadValueError(_LISTENER_EXPECTED, item) from None
    return _checkDistinct(result)


def _typedInt(parse: Callable[[str], int]) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            parse("not a number")  # raises with the key's own "expected ..." text
        return parse(str(value))

    return check


def _typedTimeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        parseTimeout("not a number")
    return parseTimeout(repr(float(value)))  # type: ignore[arg-type]


def _typedBool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(_BOOL_EXPECTED)


def _typedMulticastAddr(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return parseMulticastAddr(value)
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise ValueError(_MULTICAST_ADDR_EXPECTED)
    return parseMulticastAddr(",".join(value))


def _typedMulticastPort(value: object) -> tuple[int, int]:
    if isinstance(value, str):
        return parseMulticastPort(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return parseMulticastPort(str(value))
    if isinstance(value, Iterable):
        ports = list(value)
        if len(ports) == 2 and all(isinstance(p, int) and not isinstance(p, bool) for p in ports):
            return parseMulticastPort(f"{ports[0]}-{ports[1]}")
    raise ValueError(_MULTICAST_PORT_EXPECTED)


def _typedRefuse(value: object) -> frozenset[str]:
    if not isinstance(value, Iterable):
        raise ValueError("expected a comma-separated list of option names")
    names = list(value)
    if not all(isinstance(name, str) and "," not in name for name in names):
        raise ValueError("expected a comma-separated list of option names")
    return parseRefuseOptions(",".join(names))


def _typedPortRange(value: object) -> tuple[int, int] | None:
    expected = "expected LOW:HIGH with ports 1..65535 and LOW <= HIGH"
    if value is None:
        return None
    if not isinstance(value, Iterable):
        raise ValueError(expected)
    ports = list(value)
    if len(ports) != 2 or any(isinstance(p, bool) or not isinstance(p, int) for p in ports):
        raise ValueError(expected)
    return parsePortRange(f"{ports[0]}:{ports[1]}")


def _typedStr(parse: Callable[[str], Any], expected: str) -> Callable[[object], Any]:
    def check(value: object) -> Any:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ValueError(expected)
        return parse(value)

    return check


def _typedAddress(
    parse: Callable[[str], tuple[str, int] | None],
    pair: Callable[[str, object], tuple[str, int]],
    expected: str,
) -> Callable[[object], tuple[str, int] | None]:
    """Normalise ``None``, a ``"HOST:PORT"`` string or a ``(host, port)`` pair."""

    def check(value: object) -> tuple[str, int] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return parse(value)
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise ValueError(expected)
        host, port = value
        if not isinstance(host, str):
            raise ValueError(expected)
        return pair(host, port)

    return check


def _listenerPair(host: str, port: object) -> tuple[str, int]:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(_LISTENER_EXPECTED)
    return (_host(host, _LISTENER_EXPECTED), port)


def _typedUmask(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise ValueError(_UMASK_EXPECTED)
    return value


_TYPED: dict[str, Callable[[object], Any]] = {
    "root_dir": _typedRootDir,
    "log_dir": _typedStr(parseLogDir, "expected a folder path"),
    "listeners": _typedListeners,
    "timeout_sec": _typedTimeout,
    "max_retries": _typedInt(parseMaxRetries),
    "log_level": _typedStr(parseLogLevel, "expected one of error, warn, info, debug"),
    "log_format": _typedStr(parseLogFormat, "expected text or json"),
    "file_log": _typedBool,
    "max_blksize": _typedInt(parseMaxBlksize),
    "refuse_options": _typedRefuse,
    "options": _typedBool,
    "port_range": _typedPortRange,
    "port_pool": _typedInt(parsePortPool),
    "max_connections": _typedInt(parseMaxConnections),
    "require_world_readable": _typedBool,
    "event_udp": _typedAddress(parseEventUDP, _sinkAddress, _EVENT_UDP_EXPECTED),
    "event_http_url": _typedStr(parseEventHTTPURL, _HTTP_URL_EXPECTED),
    "event_ca_bundle": _typedStr(parseFile, "expected an existing file"),
    "allow_write": _typedBool,
    "allow_create": _typedBool,
    "umask": _typedUmask,
    "write_devnull": _typedBool,
    "max_upload_bytes": _typedInt(parseMaxUploadBytes),
    "metrics_listen": _typedAddress(parseMetricsListen, _listenerPair, _LISTENER_EXPECTED),
    "remap_file": _typedStr(parseFile, "expected an existing file"),
    "pcre_file": _typedStr(parseFile, "expected an existing file"),
    "allow_clients": acl.normaliseCIDRList,
    "deny_clients": acl.normaliseCIDRList,
    "multicast": _typedBool,
    "multicast_addr": _typedMulticastAddr,
    "multicast_port": _typedMulticastPort,
    "multicast_ttl": _typedInt(parseMulticastTTL),
    "mtftp_file": _typedStr(parseFile, "expected an existing file"),
    "mtftp_port": _typedInt(parseMtftpPort),
    "workers": _typedInt(parseWorkers),
    "systemd": _typedBool,
    "http_relay": _typedBool,
    "fallback_url": _typedStr(parseFallbackURL, _RELAY_URL_EXPECTED),
    "cache_dir": _typedStr(parseCacheDir, "expected a folder path"),
    "cache_max_bytes": _typedInt(parseByteCount),
    "relay_max_bytes": _typedInt(parseByteCount),
    "http_timeout_sec": _typedTimeout,
}
