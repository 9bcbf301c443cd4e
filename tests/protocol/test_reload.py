"""SIGHUP: the config read again, what changes live, what waits for a restart."""

from __future__ import annotations

import dataclasses

from conftest import CLIENT
from twisted.logger import capturedLogs, formatEvent

from ctftp.config import ConfigError
from ctftp.reload import planReload
from ctftp.service import makeService


def messages(captured) -> list[str]:
    return [formatEvent(e) for e in captured]


def reloadable(harness):
    """A harness's server rebuilt so that ``reload()`` reads
    ``current["config"]``: (harness, current, service, listener port)."""
    h = harness()
    h.write("f.bin", b"f" * 100)
    current = {"config": h.config}
    h.service.stopService()
    service = makeService(
        h.config, reactor=h.reactor, observers=[h.recorder], reloadConfig=lambda: current["config"]
    )
    service.startService()
    return h, current, service, h.reactor.portAt("127.0.0.1", 6969)


def test_plan_sorts_live_and_restart_keys(tmp_path):
    from ctftp.config import ServerConfig

    running = ServerConfig(root_dir=str(tmp_path), listeners="127.0.0.1:69", max_retries=5)
    reread = dataclasses.replace(
        running, max_retries=2, listeners=(("127.0.0.1", 70),), deny_clients="10.0.0.0/8"
    )
    plan = planReload(running, reread)
    assert set(plan.live) == {"max_retries", "deny_clients"}
    assert plan.restart == ("listeners",)
    assert plan.config.max_retries == 2
    assert plan.config.listeners == running.listeners  # not applied


def test_reload_applies_acl_and_limits_and_names_restart_keys(harness):
    h, current, service, listener = reloadable(harness)
    current["config"] = dataclasses.replace(
        h.config, deny_clients=f"{CLIENT[0]}/32", max_connections=7, listeners="127.0.0.1:7070"
    )
    with capturedLogs() as captured:
        service.reload()
    text = "\n".join(messages(captured))
    assert "SIGHUP: applied max_connections, deny_clients" in text
    assert "only a restart applies: listeners" in text
    assert service.server.config.max_connections == 7
    listener.deliver(b"\x00\x01f.bin\x00octet\x00", CLIENT)
    assert listener.take() == []  # denied: no reply
    assert h.recorder.ended[-1].message == "access_denied"
    service.stopService()


def test_reload_with_a_broken_file_changes_nothing(harness):
    h = harness()
    h.service.stopService()

    def broken():
        raise ConfigError(
            "ctftp.conf:3: max_retries: expected a whole number 0 or greater, got 'x'"
        )

    service = makeService(h.config, reactor=h.reactor, reloadConfig=broken)
    service.startService()
    with capturedLogs() as captured:
        service.reload()
    assert any(
        "config not reloaded, nothing changed: ctftp.conf:3" in m for m in messages(captured)
    )
    assert service.server.config == h.config
    service.stopService()


def test_reload_swaps_event_receivers(harness):
    from ctftp.sinks import UDPEventSink

    h = harness()
    h.service.stopService()
    current = {"config": h.config}
    service = makeService(h.config, reactor=h.reactor, reloadConfig=lambda: current["config"])
    service.startService()
    assert service.eventSinks == []
    current["config"] = dataclasses.replace(h.config, event_udp="127.0.0.1:5140")
    service.reload()
    [sink] = service.eventSinks
    assert isinstance(sink, UDPEventSink)
    assert sink in service.server.observers
    current["config"] = h.config
    service.reload()
    assert service.eventSinks == [] and sink not in service.server.observers
    service.stopService()


def test_reload_turns_multicast_on_with_its_groups(harness):
    h, current, service, listener = reloadable(harness)
    current["config"] = dataclasses.replace(
        h.config, multicast=True, multicast_addr="239.9.9.9", multicast_port="999", multicast_ttl=3
    )
    with capturedLogs() as captured:
        service.reload()
    assert "SIGHUP: applied multicast, multicast_addr, multicast_port, multicast_ttl" in "\n".join(
        messages(captured)
    )
    listener.deliver(b"\x00\x01f.bin\x00octet\x00multicast\x00\x00", CLIENT)
    [(oack, addr)] = h.reactor.newestPort().take()
    assert (oack, addr) == (b"\x00\x06multicast\x00239.9.9.9,999,1\x00", CLIENT)
    service.stopService()
