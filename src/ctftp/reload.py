"""What SIGHUP may change without a restart.

Pure: :func:`planReload` compares the running config with the file as it
reads now and sorts the differences into what the service applies live and
what only a restart takes (named in the log, never silently ignored). The
service (``CtftpService.reload``) does the applying.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ctftp.config import ServerConfig

__all__ = ["LIVE_KEYS", "ReloadPlan", "planReload"]

#: Keys whose new value takes effect on SIGHUP. The rest (root_dir,
#: listeners, workers, systemd, metrics_listen, the upload and relay keys,
#: file_log, port_range, port_pool) shape the service tree or open sockets and files at
#: start-up, so they need a restart.
LIVE_KEYS = frozenset(
    {
        "log_dir",
        "log_level",
        "log_format",
        "remap_file",
        "pcre_file",
        "allow_clients",
        "deny_clients",
        "event_udp",
        "event_http_url",
        "event_ca_bundle",
        "timeout_sec",
        "max_retries",
        "max_blksize",
        "refuse_options",
        "options",
        "max_connections",
        "multicast",
        "multicast_addr",
        "multicast_port",
        "multicast_ttl",
    }
)

_EVENT_KEYS = frozenset({"event_udp", "event_http_url", "event_ca_bundle"})
_LOG_KEYS = frozenset({"log_dir", "log_level", "log_format"})


@dataclass(frozen=True)
class ReloadPlan:
    """``config`` is the running config with the live changes applied."""

    config: ServerConfig
    live: tuple[str, ...]
    restart: tuple[str, ...]

    @property
    def events(self) -> bool:
        return bool(_EVENT_KEYS.intersection(self.live))

    @property
    def logs(self) -> bool:
        return bool(_LOG_KEYS.intersection(self.live))


def planReload(running: ServerConfig, reread: ServerConfig) -> ReloadPlan:
    """Sort the keys that differ between ``running`` and ``reread``."""
    changed = [
        f.name
        for f in dataclasses.fields(ServerConfig)
        if f.name != "source" and getattr(running, f.name) != getattr(reread, f.name)
    ]
    live = tuple(name for name in changed if name in LIVE_KEYS)
    restart = tuple(name for name in changed if name not in LIVE_KEYS)
    applied = dataclasses.replace(running, **{name: getattr(reread, name) for name in live})
    return ReloadPlan(applied, live, restart)
