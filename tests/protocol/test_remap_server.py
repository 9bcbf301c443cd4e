"""Remap rules between the request and the files, and their reload."""

from __future__ import annotations

import pytest
from conftest import CLIENT
from twisted.logger import LogLevel

from ctftp import logs
from ctftp.config import ConfigError
from ctftp.packets import OP_WRQ, encodeData, encodeRequest
from ctftp.service import loadRules

RULES = r"""
# Cisco phones: every SEP<MAC>.cnf.xml to one template
ri ^SEP[0-9a-f]{12}\.cnf\.xml$ phones/SEP-default.cnf.xml
# PXE: make backslashes slashes, drop a drive letter
rg \\ /
ri ^[a-z]:/?(.*) \1
a ^private/ Private\ files\ are\ not\ served
r ^missing\.bin$ fallback.bin E
"""


def wrq(h, name, client=CLIENT):
    h.listener.deliver(encodeRequest(OP_WRQ, name, "octet", ()), client)


@pytest.fixture
def remapped(harness, tmp_path):
    rules = tmp_path / "rules"
    rules.write_text(RULES)
    h = harness(remap_file=str(rules))
    h.write("phones/SEP-default.cnf.xml", b"<device/>\n")
    h.write("boot/pxelinux.0", b"P" * 600)
    h.write("private/key", b"secret")
    h.write("fallback.bin", b"fb")
    return h


def test_phone_names_go_to_the_template(remapped):
    h = remapped
    h.request("SEP00AABBCCDDEE.cnf.xml")
    assert h.run(h.transferPort()) == b"<device/>\n"
    [record] = h.recorder.ended
    assert record.filename == "SEP00AABBCCDDEE.cnf.xml"
    assert record.resolved == "phones/SEP-default.cnf.xml"


def test_pxe_drive_letter_and_backslashes(remapped):
    h = remapped
    h.request("C:\\boot\\pxelinux.0")
    assert h.run(h.transferPort()) == b"P" * 600


def test_deny_rule_gives_error_2_with_its_message(remapped):
    h = remapped
    h.request("private/key")
    [reply] = h.listenerReplies()
    assert (reply.code, reply.message) == (2, "Private files are not served")
    assert h.recorder.ended[0].message == "access_denied"


def test_e_flag_and_result_still_contained(remapped, tmp_path):
    h = remapped
    h.request("missing.bin")
    assert h.run(h.transferPort()) == b"fb"


def test_e_flag_on_a_read_asks_what_would_be_served(harness, tmp_path):
    """With require_world_readable, a rewrite to a file the server would refuse
    is undone and the next rule runs (tftp-hpa asks its own access check)."""
    rules = tmp_path / "rules"
    rules.write_text("rE ^(.*)$ private/\\1\nrE ^(.*)$ public/\\1\n")
    h = harness(remap_file=str(rules), require_world_readable=True)
    h.write("private/x.txt", b"not for others")
    (h.root / "private" / "x.txt").chmod(0o640)
    h.write("public/x.txt", b"for everyone")
    (h.root / "public" / "x.txt").chmod(0o644)
    h.request("x.txt")
    assert h.run(h.transferPort()) == b"for everyone"


def test_e_flag_on_a_write_asks_the_sink(harness, tmp_path):
    """For a WRQ, E keeps a rewrite the upload would be accepted at, even for
    a file that does not exist yet (allow_create), and undoes one into a
    folder that does not exist."""
    rules = tmp_path / "rules"
    rules.write_text("rEP ^(.*)$ up/\\1\nrP ^(.*)$ other/\\1\n")
    h = harness(remap_file=str(rules), allow_write=True, allow_create=True)
    (h.root / "up").mkdir()
    (h.root / "other").mkdir()
    wrq(h, "new.txt")
    port = h.transferPort()
    port.take()
    port.deliver(encodeData(1, b"uploaded"), CLIENT)
    assert (h.root / "up" / "new.txt").read_bytes() == b"uploaded"
    (h.root / "up").rename(h.root / "gone")
    wrq(h, "second.txt", client=(CLIENT[0], 2))
    port = h.transferPort()
    port.take()
    port.deliver(encodeData(1, b"elsewhere"), (CLIENT[0], 2))
    assert (h.root / "other" / "second.txt").read_bytes() == b"elsewhere"


def test_remap_result_goes_through_the_safety_rules(harness, tmp_path):
    rules = tmp_path / "rules"
    rules.write_text("r ^escape$ ../../etc/passwd\n")
    h = harness(remap_file=str(rules))
    h.request("escape")
    [reply] = h.listenerReplies()
    assert reply.code == 2


def test_runaway_rules_end_with_remap_table_failure(harness, tmp_path):
    rules = tmp_path / "rules"
    rules.write_text("rs ^(.*)$ \\1\n")
    h = harness(remap_file=str(rules))
    h.request("anything")
    [reply] = h.listenerReplies()
    assert (reply.code, reply.message) == (2, "Remap table failure")


@pytest.mark.parametrize("key", ["remap_file", "pcre_file"])
def test_a_runaway_regex_is_stopped_and_the_server_goes_on(harness, tmp_path, monkeypatch, key):
    """A name built to make Python's backtracking run for ever (glibc matches it
    at once) gets ERROR 2 after the time limit, with a warning naming the rule;
    the next request is served."""
    monkeypatch.setattr("ctftp.remap.TIME_LIMIT", 0.01)
    rules = tmp_path / "rules"
    rule = r"^([a-z0-9]+[-_.]?)+\.cfg$"
    rules.write_text(f"r {rule} cfg/\\0\n" if key == "remap_file" else f"{rule} cfg/$0\n")
    h = harness(**{key: str(rules)})
    h.write("ok.txt", b"fine")
    seen: list[dict] = []
    logs.publisher.addObserver(seen.append)
    try:
        h.request("a1" * 14 + "!")
    finally:
        logs.publisher.removeObserver(seen.append)
    [reply] = h.listenerReplies()
    assert (reply.code, reply.message) == (2, "Remap table failure")
    [warning] = [e for e in seen if e.get("detail")]
    assert warning["log_level"] == LogLevel.warn
    assert warning["detail"].startswith(f"{rules}:1: the regex took more than 10 ms")
    h.request("ok.txt", client=(CLIENT[0], 2))
    assert h.run(h.transferPort(), client=(CLIENT[0], 2)) == b"fine"


def test_pcre_only_when_the_name_does_not_exist(harness, tmp_path):
    patterns = tmp_path / "pcre"
    patterns.write_text("^(.*)\\.bak$ $1\n")
    h = harness(pcre_file=str(patterns))
    h.write("a.cfg", b"A")
    h.write("b.cfg.bak", b"B-backup")
    h.write("b.cfg", b"B")
    h.request("a.cfg.bak")
    assert h.run(h.transferPort()) == b"A"
    h.request("b.cfg.bak", client=(CLIENT[0], CLIENT[1] + 1))
    assert h.run(h.transferPort(), client=(CLIENT[0], CLIENT[1] + 1)) == b"B-backup"


def test_reload_applies_new_rules_and_keeps_old_ones_on_a_broken_file(harness, tmp_path):
    rules = tmp_path / "rules"
    rules.write_text("r ^old$ a.txt\n")
    h = harness(remap_file=str(rules))
    h.write("a.txt", b"A")
    h.write("b.txt", b"B")
    h.request("old")
    assert h.run(h.transferPort()) == b"A"
    rules.write_text("r ^old$ b.txt\n")
    h.service.reload()
    h.request("old", client=(CLIENT[0], 2))
    assert h.run(h.transferPort(), client=(CLIENT[0], 2)) == b"B"
    rules.write_text("r ^old$ [unclosed\nr (( x\n")
    h.service.reload()
    h.request("old", client=(CLIENT[0], 3))
    assert h.run(h.transferPort(), client=(CLIENT[0], 3)) == b"B"


def test_a_rule_file_that_does_not_parse_stops_start_up_with_file_and_line(tmp_path):
    from ctftp.config import ServerConfig

    rules = tmp_path / "rules"
    rules.write_text("# fine\nr ok fine\nr ([ broken\n")
    config = ServerConfig(root_dir=str(tmp_path), remap_file=str(rules))
    with pytest.raises(ConfigError) as caught:
        loadRules(config)
    assert str(caught.value).startswith(f"{rules}:3: ")
    assert "\n" not in str(caught.value)
