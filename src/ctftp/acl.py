"""Client access lists: ``allow_clients`` / ``deny_clients``.

A TFTP server hands out configuration files, firmware and boot images to
anyone who asks, so a site usually limits it to its provisioning networks.
The check runs on every datagram a listener receives, before the request is
even decoded, so it is kept cheap: no lists means one attribute test, and the
answer for a client address is cached (a storm of requests comes from few
addresses many times over).

Rules, as tcpwrappers-style tools and the other servers' ``-a``/``--deny``
options lead operators to expect:

- ``deny_clients`` wins over ``allow_clients``;
- an empty ``allow_clients`` allows every address not denied;
- an IPv4-mapped IPv6 address (``::ffff:10.1.2.3``, what a dual-stack ``[::]``
  listener reports for an IPv4 client) is matched as the IPv4 address it is,
  so ``10.0.0.0/8`` covers IPv4 clients whatever socket they arrived on;
- an address that does not parse is refused: a check that cannot decide must
  not open the door.

A refused client gets no reply at all (an ERROR would confirm that a server is
there), and at most one log line per interval (:class:`ctftp.logs.RateLimitedLog`), since
a client that is refused retries, and a scanner sends thousands of requests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ctftp.events import formatAddress
from ctftp.logs import RateLimitedLog, logger

__all__ = [
    "BadCIDRList",
    "ClientACL",
    "ClientFilter",
    "Network",
    "formatCIDRList",
    "normaliseCIDRList",
    "parseCIDRList",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_EXPECTED = (
    "expected a comma-separated list of IP addresses or CIDR networks"
    " (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)"
)

#: Bound on the per-address answer cache; cleared when full (a scan from a
#: whole /16 must not grow memory without limit).
_CACHE_SIZE = 4096

_log = logger("ctftp.acl")


class BadCIDRList(ValueError):
    """A ``ValueError("expected ...")`` naming the offending entry in ``got``.

    ``ctftp.config`` quotes ``got`` rather than the whole value, so for
    ``allow_clients=10.0.0.0/8, 10.300.0.0/16`` the error line shows the entry
    that is wrong.
    """

    def __init__(self, got: object) -> None:
        super().__init__(_EXPECTED)
        self.got = got


def _network(entry: str) -> Network:
    text = entry.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::]/32 or [2001:db8::1]
        close = text.index("]")
        text = text[1:close] + text[close + 1 :]
    if "%" in text:  # a zone index belongs to one link, not to a network
        raise BadCIDRList(entry.strip())
    try:
        # strict=False: 10.1.2.3/8 means 10.0.0.0/8, as iptables and tcpwrappers read it.
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BadCIDRList(entry.strip()) from None


def parseCIDRList(text: str) -> tuple[Network, ...]:
    """Parse a comma- or space-separated list of networks.

    A bare address is a /32 (IPv4) or /128 (IPv6) network. Raises
    :class:`BadCIDRList` (a ``ValueError`` whose message starts with
    ``expected``) naming the first bad entry. Duplicates are dropped, order is
    kept, so the value reads back the way it was written.
    """
    result: list[Network] = []
    for entry in text.replace(",", " ").split():
        network = _network(entry)
        if network not in result:
            result.append(network)
    return tuple(result)


def normaliseCIDRList(value: object) -> tuple[Network, ...]:
    """Accept what an embedding application may pass by keyword.

    A string (parsed like the config file's value), or an iterable of strings
    and ``ipaddress`` network/address objects. Raises :class:`BadCIDRList`.
    """
    if isinstance(value, str):
        return parseCIDRList(value)
    if not isinstance(value, Iterable):
        raise BadCIDRList(value)
    result: list[Network] = []
    for item in value:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            network: Network = item
        elif isinstance(item, ipaddress.IPv4Address | ipaddress.IPv6Address):
            network = ipaddress.ip_network(item)
        elif isinstance(item, str):
            if not item.strip() or "," in item or len(item.split()) != 1:
                raise BadCIDRList(item)
            network = _network(item)
        else:
            raise BadCIDRList(item)
        if network not in result:
            result.append(network)
    return tuple(result)


def formatCIDRList(networks: Iterable[Network]) -> str:
    """The config-file spelling of a list, e.g. for a reload log line."""
    return ", ".join(str(network) for network in networks) or "(empty)"


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientACL:
    """Who may talk to the server: ``allows(host)`` decides.

    ``allow`` and ``deny`` are networks as :func:`parseCIDRList` returns them
    (or anything :func:`normaliseCIDRList` accepts). Immutable once built: a
    reload builds a new one and swaps it in (:attr:`ClientFilter.acl`).
    """

    def __init__(self, allow: object = (), deny: object = ()) -> None:
        self.allow = normaliseCIDRList(allow)
        self.deny = normaliseCIDRList(deny)
        #: False when both lists are empty: every client is allowed, and the
        #: server can skip the check entirely.
        self.active = bool(self.allow or self.deny)
        self._cache: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"ClientACL(allow={formatCIDRList(self.allow)}, deny={formatCIDRList(self.deny)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientACL):
            return NotImplemented
        return (self.allow, self.deny) == (other.allow, other.deny)

    def __hash__(self) -> int:
        return hash((self.allow, self.deny))

    def allows(self, host: str) -> bool:
        """True when a request from ``host`` (textual IP, as in a UDP address) may be served."""
        if not self.active:
            return True
        try:
            return self._cache[host]
        except KeyError:
            pass
        verdict = self._decide(host)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[host] = verdict
        return verdict

    def _decide(self, host: str) -> bool:
        address = _address(host)
        if address is None:
            return False
        # Networks of the other family never contain the address (no error).
        if any(address in network for network in self.deny):
            return False
        if not self.allow:
            return True
        return any(address in network for network in self.allow)


class ClientFilter:
    """The server's gate: the ACL, a refusal count and the rate-limited log line.

    ``check(host, port)`` is what the listener path calls for every datagram;
    it returns False for a refused client after counting it and (rate
    limited) logging it. Replace :attr:`acl` to reload the lists live.
    """

    def __init__(
        self,
        acl: ClientACL,
        clock: IReactorTime,
        interval: float = 60.0,
        log: Logger | None = None,
    ) -> None:
        self.acl = acl
        self.refused = 0
        self.refusalLog = RateLimitedLog(log or _log, clock, interval)

    def check(self, host: str, port: int) -> bool:
        """True when ``host`` may be served; otherwise count and (maybe) log it."""
        acl = self.acl
        if not acl.active or acl.allows(host):
            return True
        self.refused += 1
        client = formatAddress(host, port)
        self.refusalLog(
            "refused request from {client}: not in allow_clients or in deny_clients"
            " ({refused} refused so far)",
            client=client,
            refused=self.refused,
        )
        return False
