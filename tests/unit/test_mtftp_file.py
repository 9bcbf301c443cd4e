"""The mtftp_file format (atftpd's), where the MTFTP port listens, and the
checks made when the server is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctftp.config import ConfigError, ServerConfig
from ctftp.mtftp import MtftpFileError, MtftpFiles, mtftpHosts, tooBig
from ctftp.service import loadMtftp


def test_lines_comments_and_names():
    files = MtftpFiles.fromText(
        "# FILE GROUP PORT\n\n  /pxelinux.0\t239.255.1.1   1758  \n"
        "boot\\undionly.kpxe 224.1.5.1 3001\n   # indented comment\n",
        source="m.conf",
    )
    assert len(files) == 2
    entry = files.find("pxelinux.0")
    assert entry is not None
    assert (entry.name, entry.group, entry.line) == ("pxelinux.0", ("239.255.1.1", 1758), 3)
    assert files.find("/boot/undionly.kpxe").group == ("224.1.5.1", 3001)  # type: ignore[union-attr]
    assert files.find("\\pxelinux.0") is entry
    assert files.find("other") is None


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("pxelinux.0 239.1.1.1\n", 1, "expected FILE GROUP PORT (atftpd's mtftp format), got"),
        ("a 239.1.1.1 1 extra\n", 1, "expected FILE GROUP PORT"),
        ("# c\na 10.0.0.1 1758\n", 2, "expected an IPv4 multicast group (224.0.0.0/4), got '10"),
        ("a ff02::1 1758\n", 1, "expected an IPv4 multicast group"),
        ("a 239.1.1.1 0\n", 1, "expected a port 1..65535, got '0'"),
        ("a 239.1.1.1 65536\n", 1, "expected a port 1..65535"),
        ("a 239.1.1.1 x1\n", 1, "expected a port 1..65535, got 'x1'"),
        ("/ 239.1.1.1 1\n", 1, "expected a file name, got '/'"),
        ("a 239.1.1.1 1\n/a 239.1.1.2 1\n", 2, "file already listed on line 1"),
        ("a 239.1.1.1 1\nb 239.1.1.1 1\n", 2, "group already listed on line 1"),
    ],
)
def test_bad_lines_name_file_and_line(text, line, message):
    with pytest.raises(MtftpFileError) as info:
        MtftpFiles.fromText(text, source="m.conf")
    assert str(info.value).startswith(f"m.conf:{line}: {message}")


def test_the_same_address_on_two_ports_is_two_groups():
    files = MtftpFiles.fromText("a 239.1.1.1 1\nb 239.1.1.1 2\n")
    assert [e.group for e in files] == [("239.1.1.1", 1), ("239.1.1.1", 2)]


@pytest.mark.parametrize(
    ("listeners", "hosts"),
    [
        ((("0.0.0.0", 69),), ["0.0.0.0"]),
        ((("10.0.0.1", 69), ("10.0.0.2", 69), ("10.0.0.1", 70)), ["10.0.0.1", "10.0.0.2"]),
        ((("10.0.0.1", 69), ("0.0.0.0", 70)), ["0.0.0.0"]),
        ((("::", 69),), ["0.0.0.0"]),
        ((("::1", 69), ("127.0.0.1", 69)), ["127.0.0.1"]),
    ],
)
def test_mtftp_hosts(listeners, hosts):
    assert mtftpHosts(listeners) == hosts


def test_too_big():
    assert not tooBig(65534 * 512 + 511)  # 65,535 blocks, the last short
    assert tooBig(65535 * 512)  # the empty last block would be 65,536
    assert tooBig(None)


def _config(tmp_path: Path, text: str, **overrides) -> ServerConfig:
    path = tmp_path / "mtftp.conf"
    path.write_text(text)
    return ServerConfig(root_dir=(str(tmp_path),), mtftp_file=str(path), **overrides)


def test_load_names_file_and_line(tmp_path):
    config = _config(tmp_path, "a 239.1.1.1 1\nb 1.2.3.4 1\n")
    with pytest.raises(ConfigError, match=r"mtftp\.conf:2: expected an IPv4 multicast group"):
        loadMtftp(config)
    assert loadMtftp(ServerConfig(root_dir=(str(tmp_path),))) is None


def test_a_group_multicast_may_take_is_refused_at_load(tmp_path):
    text = "a 239.1.1.1 1\nb 239.239.239.7 1758\n"
    assert len(loadMtftp(_config(tmp_path, text)) or ()) == 2  # multicast off: no clash
    with pytest.raises(ConfigError) as info:
        loadMtftp(_config(tmp_path, text, multicast=True))
    assert str(info.value) == (
        f"{tmp_path / 'mtftp.conf'}:2: group 239.239.239.7:1758 is also one of"
        " multicast_addr x multicast_port; give MTFTP a group of its own"
    )
    assert loadMtftp(_config(tmp_path, text, multicast=True, multicast_port=(1800, 1801)))


def test_unreadable_file_at_load(tmp_path):
    config = _config(tmp_path, "")
    (tmp_path / "mtftp.conf").unlink()
    (tmp_path / "mtftp.conf").mkdir()
    with pytest.raises(ConfigError, match=r"mtftp\.conf: cannot read mtftp file: Is a directory"):
        loadMtftp(config)
