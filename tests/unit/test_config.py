"""ctftp.config: the key table, the file parser, keyword construction and error lines."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from ctftp.config import KEYS, ConfigError, Key, ServerConfig, checkKey, settingWhere

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "srv"
    served.mkdir()
    return served


def writeConf(folder: Path, text: str, name: str = "ctftp.conf") -> str:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(folder: Path, body: str, root: Path | None = None) -> ServerConfig:
    """Parse a file made of an optional root_dir line followed by ``body``."""
    head = f"root_dir={root}\n" if root is not None else ""
    return ServerConfig.fromFile(writeConf(folder, head + body))


def loadError(folder: Path, body: str, root: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(folder, body, root)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the key table -----------------------------------------------------------


def test_keys_match_server_config_fields() -> None:
    names = [f.name for f in dataclasses.fields(ServerConfig) if f.name != "source"]
    assert list(KEYS) == names


def test_keys_records() -> None:
    for name, key in KEYS.items():
        assert isinstance(key, Key)
        assert key.name == name
        assert key.help and "\n" not in key.help
        assert key.option == "--" + name.replace("_", "-")
    assert KEYS["root_dir"].default is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        KEYS["timeout_sec"].default = "9"  # type: ignore[misc]


def test_key_defaults_parse_to_field_defaults(root: Path) -> None:
    config = ServerConfig(root_dir=(str(root),))
    for f in dataclasses.fields(ServerConfig):
        key = KEYS.get(f.name)
        if key is None or key.default is None:
            continue
        assert key.parse(key.default) == getattr(config, f.name), f.name


def test_key_parse_raises_value_error_with_expected() -> None:
    with pytest.raises(ValueError, match="^expected a number of seconds greater than 0$"):
        KEYS["timeout_sec"].parse("abc")


# --- the file format ---------------------------------------------------------


def test_minimal_file_and_defaults(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\n")
    config = ServerConfig.fromFile(path)
    assert config == ServerConfig(root_dir=(str(root),), source=path)
    assert config.source == path
    assert config.listeners == (("0.0.0.0", 69),)
    assert config.timeout_sec == 3.0
    assert config.max_retries == 5
    assert config.log_level == "info"
    assert config.log_format == "text"
    assert config.file_log is True
    assert config.max_blksize == 65464
    assert config.refuse_options == frozenset()
    assert config.options is True
    assert config.port_range is None
    assert config.max_connections == 1000
    assert config.require_world_readable is False
    assert config.log_dir == ""
    assert config.event_udp is None
    assert config.event_http_url == ""
    assert config.event_ca_bundle == ""
    assert config.allow_write is False
    assert config.allow_create is False
    assert config.umask == 0o022
    assert config.write_devnull is False
    assert config.max_upload_bytes == 0
    assert config.metrics_listen is None
    assert config.remap_file == ""
    assert config.pcre_file == ""
    assert config.allow_clients == ()
    assert config.deny_clients == ()
    assert config.workers == 1
    assert config.systemd is False


def test_comments_blank_lines_and_spaces(tmp_path: Path, root: Path) -> None:
    text = (
        "# a hash comment\n"
        "   ; an indented semicolon comment\n"
        "\n"
        "   \t\n"
        f"  root_dir   =   {root}   \n"
        "#timeout_sec=abc\n"
        ";max_retries=abc\n"
        "\ttimeout_sec\t=\t1.5\n"
    )
    config = ServerConfig.fromFile(writeConf(tmp_path, text))
    assert config.timeout_sec == 1.5
    assert config.max_retries == 5


def test_crlf_and_bom(tmp_path: Path, root: Path) -> None:
    path = tmp_path / "win.conf"
    path.write_bytes(b"\xef\xbb\xbfroot_dir=" + str(root).encode() + b"\r\nmax_retries=2\r\n")
    config = ServerConfig.fromFile(str(path))
    assert config.root_dir == (str(root),)
    assert config.max_retries == 2


def test_value_may_contain_equals(tmp_path: Path) -> None:
    odd = tmp_path / "a=b"
    odd.mkdir()
    config = load(tmp_path, f"root_dir={odd}\n")
    assert config.root_dir == (str(odd),)


def test_line_without_equals(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\ntimeout_sec 3\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == f"{path}:2: expected key=value, got 'timeout_sec 3'"


def test_line_without_key(tmp_path: Path, root: Path) -> None:
    assert loadError(tmp_path, "=3\n", root).endswith(":2: expected key=value, got '=3'")


def test_no_inline_comments(tmp_path: Path, root: Path) -> None:
    message = loadError(tmp_path, "timeout_sec=3 # three\n", root)
    assert message.endswith(
        ":2: timeout_sec: expected a number of seconds greater than 0, got '3 # three'"
    )


def test_duplicate_key_names_both_lines(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\ntimeout_sec=1\n\nmax_retries=1\ntimeout_sec=2\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == f"{path}:5: timeout_sec: duplicate key, first given on line 2"


def test_unknown_key_suggests_closest(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\ntimeout_secs=3\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == f"{path}:2: unknown key 'timeout_secs' (did you mean 'timeout_sec'?)"


def test_unknown_key_other_case_suggests_key(tmp_path: Path, root: Path) -> None:
    message = loadError(tmp_path, "Max_Retries=3\n", root)
    assert message.endswith(":2: unknown key 'Max_Retries' (did you mean 'max_retries'?)")


def test_unknown_key_can_suggest_unsupported_key(tmp_path: Path, root: Path) -> None:
    message = loadError(tmp_path, "multicasts=yes\n", root)
    assert message.endswith(":2: unknown key 'multicasts' (did you mean 'multicast'?)")


def test_unknown_key_without_suggestion(tmp_path: Path, root: Path) -> None:
    message = loadError(tmp_path, "zzzz=1\n", root)
    assert message.endswith(":2: unknown key 'zzzz'")


def test_mtftp_keys(tmp_path: Path, root: Path) -> None:
    config = ServerConfig.fromFile(writeConf(tmp_path, f"root_dir={root}\nmtftp_file= \n"))
    assert (config.mtftp_file, config.mtftp_port) == ("", 75)
    (tmp_path / "mtftp.conf").write_text("pxelinux.0 239.1.1.1 1758\n")
    text = f"root_dir={root}\nmtftp_file=mtftp.conf\nmtftp_port=1759\n"
    config = ServerConfig.fromFile(writeConf(tmp_path, text))
    assert config.mtftp_file == str(tmp_path / "mtftp.conf")  # relative to the config file
    assert config.mtftp_port == 1759
    typed = ServerConfig(root_dir=(str(root),), mtftp_file=tmp_path / "mtftp.conf", mtftp_port=9)
    assert (typed.mtftp_file, typed.mtftp_port) == (str(tmp_path / "mtftp.conf"), 9)


def test_multicast_keys(tmp_path: Path, root: Path) -> None:
    config = ServerConfig.fromFile(writeConf(tmp_path, f"root_dir={root}\n"))
    assert (config.multicast, config.multicast_port) == (False, (1758, 1758))
    assert config.multicast_ttl == 1
    assert config.multicast_addr == tuple(f"239.239.239.{n}" for n in range(256))
    text = (
        f"root_dir={root}\nmulticast=yes\nmulticast_addr=239.1.1.1, 224.0.1.7-8,239.1.1.1\n"
        "multicast_port=1800-1801\nmulticast_ttl=4\n"
    )
    config = ServerConfig.fromFile(writeConf(tmp_path, text))
    assert config.multicast is True
    assert config.multicast_addr == ("239.1.1.1", "224.0.1.7", "224.0.1.8")
    assert (config.multicast_port, config.multicast_ttl) == ((1800, 1801), 4)
    typed = ServerConfig(
        root_dir=(str(root),), multicast_addr=["239.2.2.2"], multicast_port=(9, 10)
    )
    assert (typed.multicast_addr, typed.multicast_port) == (("239.2.2.2",), (9, 10))
    assert ServerConfig(root_dir=(str(root),), multicast_port=7).multicast_port == (7, 7)


@pytest.mark.parametrize(
    ("line", "expected", "got"),
    [
        ("multicast_addr=10.0.0.1", "expected comma-separated IPv4 multicast", "10.0.0.1"),
        ("multicast_addr=239.1.1.9-3", "expected comma-separated IPv4 multicast", "239.1.1.9-3"),
        ("multicast_addr=239.1.1.0-256", "expected comma-separated IPv4", "239.1.1.0-256"),
        ("multicast_addr=239.1.1.1,ff02::1", "expected comma-separated IPv4", "ff02::1"),
        ("multicast_addr=,", "expected comma-separated IPv4 multicast", ","),
        ("multicast_port=0", "expected a port 1..65535 or a range LOW-HIGH", "0"),
        ("multicast_port=9-8", "expected a port 1..65535 or a range LOW-HIGH", "9-8"),
        ("multicast_port=1758:1760", "expected a port 1..65535 or a range", "1758:1760"),
        ("multicast_ttl=0", "expected a whole number 1..255", "0"),
        ("multicast_ttl=256", "expected a whole number 1..255", "256"),
    ],
)
def test_multicast_keys_refused(
    tmp_path: Path, root: Path, line: str, expected: str, got: str
) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\n{line}\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    key = line.split("=")[0]
    assert str(info.value).startswith(f"{path}:2: {key}: {expected}")
    assert str(info.value).endswith(f"got '{got}'")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("multicast=maybe", "multicast: expected true/false"),
        ("mtftp_file=mtftp.conf", "mtftp_file: expected an existing file (relative to"),
        ("mtftp_port=0", "mtftp_port: expected a port 1..65535"),
        ("mtftp_port=75x", "mtftp_port: expected a port 1..65535"),
    ],
)
def test_multicast_switches_refused(tmp_path: Path, root: Path, line: str, expected: str) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\n{line}\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value).startswith(f"{path}:2: {expected}")
    assert str(info.value).endswith(f"got '{line.split('=')[1]}'")


def test_multicast_switches_by_keyword(root: Path) -> None:
    assert ServerConfig(root_dir=(str(root),), multicast=True).multicast is True
    with pytest.raises(ConfigError, match="^ServerConfig: mtftp_file: expected an existing file"):
        ServerConfig(root_dir=(str(root),), mtftp_file="no-such-m.conf")


def test_missing_root(tmp_path: Path) -> None:
    path = writeConf(tmp_path, "timeout_sec=3\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == f"{path}: root_dir: required key is missing"


def test_missing_file_names_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile("nope.conf")
    assert str(info.value) == "nope.conf: cannot read config file: No such file or directory"


def test_config_path_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: cannot read config file: Is a directory"


def test_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.conf"
    path.write_bytes(b"root_dir=/tmp\n# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(str(path))
    assert str(info.value) == f"{path}:2: cannot read config file: not UTF-8 text"


# --- root_dir and log_dir: paths ---------------------------------------------


def test_relative_paths_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    (etc / "files").mkdir(parents=True)
    (etc / "more").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = writeConf(etc, "root_dir=files, ./more/ ,files\nlog_dir=logs\n")
    config = ServerConfig.fromFile(path)
    assert config.root_dir == (str(etc / "files"), str(etc / "more"))
    assert config.log_dir == str(etc / "logs")


def test_relative_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf" / "files").mkdir(parents=True)
    writeConf(tmp_path / "conf", "root_dir=files\n")
    monkeypatch.chdir(tmp_path)
    config = ServerConfig.fromFile("conf/ctftp.conf")
    assert config.root_dir == (str(tmp_path / "conf" / "files"),)
    assert config.source == str(tmp_path / "conf" / "ctftp.conf")


def test_root_dir_list_order_and_normalisation(tmp_path: Path, root: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    config = load(tmp_path, f"root_dir={other}/../other/, {root}\n")
    assert config.root_dir == (str(other), str(root))


def test_nonexistent_root(tmp_path: Path) -> None:
    path = writeConf(tmp_path, "root_dir=missing\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == (
        f"{path}:1: root_dir: expected an existing folder (relative to {tmp_path}), got 'missing'"
    )


def test_nonexistent_root_in_a_list_names_the_entry(tmp_path: Path, root: Path) -> None:
    message = loadError(tmp_path, f"root_dir={root},/no/such/dir\n")
    assert message.endswith(":1: root_dir: expected an existing folder, got '/no/such/dir'")


def test_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert "expected an existing folder" in loadError(tmp_path, f"root_dir={tmp_path / 'file'}\n")


def test_empty_root(tmp_path: Path) -> None:
    message = loadError(tmp_path, "root_dir= , \n")
    assert message.endswith(
        ":1: root_dir: expected a folder or a comma-separated list of folders, got ','"
    )


def test_log_dir_may_not_exist_yet(tmp_path: Path, root: Path) -> None:
    config = load(tmp_path, f"log_dir={tmp_path}/a/b\n", root)
    assert config.log_dir == str(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()


def test_log_dir_existing_file(tmp_path: Path, root: Path) -> None:
    (tmp_path / "afile").write_text("")
    message = loadError(tmp_path, "log_dir=afile\n", root)
    assert message.endswith(
        f":2: log_dir: expected a folder, which need not exist yet (relative to {tmp_path}),"
        " got 'afile'"
    )


def test_log_dir_empty(tmp_path: Path, root: Path) -> None:
    assert load(tmp_path, "log_dir=\n", root).log_dir == ""


# --- every key: good and bad values ------------------------------------------

GOOD = [
    ("listeners", "127.0.0.1:6969", (("127.0.0.1", 6969),)),
    ("listeners", " 0.0.0.0:69 , [::]:69 ", (("0.0.0.0", 69), ("::", 69))),
    ("listeners", "[::1]:6969", (("::1", 6969),)),
    ("listeners", "[fe80::0001]:69", (("fe80::1", 69),)),
    ("listeners", "127.0.0.1:0,127.0.0.1:0", (("127.0.0.1", 0), ("127.0.0.1", 0))),
    ("listeners", "10.0.0.1:65535", (("10.0.0.1", 65535),)),
    ("timeout_sec", "3", 3.0),
    ("timeout_sec", "0.25", 0.25),
    ("timeout_sec", " 1e1 ", 10.0),
    ("max_retries", "0", 0),
    ("max_retries", "12", 12),
    ("log_level", "error", "error"),
    ("log_level", "WARN", "warn"),
    ("log_level", "Warning", "warn"),
    ("log_level", "info", "info"),
    ("log_level", "DEBUG", "debug"),
    ("log_format", "text", "text"),
    ("log_format", "JSON", "json"),
    ("file_log", "false", False),
    ("max_blksize", "8", 8),
    ("max_blksize", "1428", 1428),
    ("max_blksize", "65464", 65464),
    ("refuse_options", "blksize, TSIZE,,", frozenset({"blksize", "tsize"})),
    ("refuse_options", "", frozenset()),
    ("options", "no", False),
    ("port_range", "50000:50999", (50000, 50999)),
    ("port_range", "1:1", (1, 1)),
    ("port_range", "", None),
    ("max_connections", "1", 1),
    ("require_world_readable", "yes", True),
    ("event_udp", "", None),
    ("event_udp", "127.0.0.1:514", ("127.0.0.1", 514)),
    ("event_udp", " logs.example.com:514 ", ("logs.example.com", 514)),
    ("event_udp", "LOGHOST:1", ("LOGHOST", 1)),
    ("event_udp", "collector-2.example.:65535", ("collector-2.example.", 65535)),
    ("event_udp", "[::1]:514", ("::1", 514)),
    ("event_udp", "[2001:DB8::0001]:514", ("2001:db8::1", 514)),
    ("event_http_url", "", ""),
    ("event_http_url", "http://127.0.0.1:8080/events", "http://127.0.0.1:8080/events"),
    ("event_http_url", "https://logs.example.com/in?x=1", "https://logs.example.com/in?x=1"),
    ("event_http_url", "HTTPS://[::1]:8443/", "HTTPS://[::1]:8443/"),
    ("event_ca_bundle", "", ""),
    ("allow_write", "yes", True),
    ("allow_create", "on", True),
    ("write_devnull", "1", True),
    ("umask", "022", 0o022),
    ("umask", "0", 0),
    ("umask", "77", 0o077),
    ("umask", "0777", 0o777),
    ("umask", "0o027", 0o027),
    ("umask", "0O002", 0o002),
    ("max_upload_bytes", "0", 0),
    ("max_upload_bytes", "1000", 1000),
    ("max_upload_bytes", "64k", 64 * 1024),
    ("max_upload_bytes", "10M", 10 * 1024**2),
    ("max_upload_bytes", "2 g", 2 * 1024**3),
    ("metrics_listen", "", None),
    ("metrics_listen", "127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("metrics_listen", "[::]:0", ("::", 0)),
    ("remap_file", "", ""),
    ("pcre_file", "", ""),
    ("allow_clients", "", ()),
    ("allow_clients", "10.0.0.0/8", (ipaddress.ip_network("10.0.0.0/8"),)),
    ("allow_clients", "10.1.2.3/8", (ipaddress.ip_network("10.0.0.0/8"),)),
    (
        "allow_clients",
        " 192.0.2.7 , 2001:db8::/32,,10.0.0.0/8 ",
        (
            ipaddress.ip_network("192.0.2.7/32"),
            ipaddress.ip_network("2001:db8::/32"),
            ipaddress.ip_network("10.0.0.0/8"),
        ),
    ),
    ("deny_clients", "", ()),
    ("deny_clients", "::1", (ipaddress.ip_network("::1/128"),)),
    ("deny_clients", "[2001:db8::1]", (ipaddress.ip_network("2001:db8::1/128"),)),
    ("workers", "1", 1),
    ("workers", "64", 64),
    ("systemd", "true", True),
]


@pytest.mark.parametrize(("name", "raw", "value"), GOOD)
def test_good_values(tmp_path: Path, root: Path, name: str, raw: str, value: object) -> None:
    config = load(tmp_path, f"{name}={raw}\n", root)
    assert getattr(config, name) == value


BAD = [
    ("listeners", "", "expected at least one HOST:PORT"),
    ("listeners", "127.0.0.1", "expected HOST:PORT"),
    ("listeners", "localhost:69", "expected HOST:PORT"),
    ("listeners", "127.0.0.1:65536", "expected HOST:PORT"),
    ("listeners", "127.0.0.1:-1", "expected HOST:PORT"),
    ("listeners", "127.0.0.1:x", "expected HOST:PORT"),
    ("listeners", "::1:69", "expected HOST:PORT"),
    ("listeners", "[::1]69", "expected HOST:PORT"),
    ("listeners", "[::1:69", "expected HOST:PORT"),
    ("listeners", "[127.0.0.1]:69", "expected HOST:PORT"),
    ("listeners", "256.0.0.1:69", "expected HOST:PORT"),
    ("listeners", "127.0.0.1:69,127.0.0.1:69", "expected each HOST:PORT only once"),
    ("timeout_sec", "abc", "expected a number of seconds greater than 0"),
    ("timeout_sec", "0", "expected a number of seconds greater than 0"),
    ("timeout_sec", "-1", "expected a number of seconds greater than 0"),
    ("timeout_sec", "nan", "expected a number of seconds greater than 0"),
    ("timeout_sec", "inf", "expected a number of seconds greater than 0"),
    ("timeout_sec", "", "expected a number of seconds greater than 0"),
    ("max_retries", "-1", "expected a whole number 0 or greater"),
    ("max_retries", "2.5", "expected a whole number 0 or greater"),
    ("max_retries", "five", "expected a whole number 0 or greater"),
    ("log_level", "verbose", "expected one of error, warn, info, debug"),
    ("log_level", "", "expected one of error, warn, info, debug"),
    ("log_format", "xml", "expected text or json"),
    ("file_log", "maybe", "expected true/false, yes/no, on/off or 1/0"),
    ("file_log", "", "expected true/false, yes/no, on/off or 1/0"),
    ("max_blksize", "7", "expected a whole number from 8 to 65464"),
    ("max_blksize", "65465", "expected a whole number from 8 to 65464"),
    ("max_blksize", "big", "expected a whole number from 8 to 65464"),
    ("refuse_options", "blk size", "expected a comma-separated list of option names"),
    ("options", "2", "expected true/false, yes/no, on/off or 1/0"),
    ("port_range", "1000", "expected LOW:HIGH with ports 1..65535 and LOW <= HIGH"),
    ("port_range", "2000:1000", "expected LOW:HIGH with ports 1..65535 and LOW <= HIGH"),
    ("port_range", "0:1000", "expected LOW:HIGH with ports 1..65535 and LOW <= HIGH"),
    ("port_range", "1000:70000", "expected LOW:HIGH with ports 1..65535 and LOW <= HIGH"),
    ("port_range", "a:b", "expected LOW:HIGH with ports 1..65535 and LOW <= HIGH"),
    ("max_connections", "0", "expected a whole number 1 or greater"),
    ("max_connections", "many", "expected a whole number 1 or greater"),
    ("require_world_readable", "o+r", "expected true/false, yes/no, on/off or 1/0"),
    ("event_udp", "127.0.0.1", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "127.0.0.1:0", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "127.0.0.1:65536", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "256.0.0.1:514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "::1:514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "[::1]514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "[127.0.0.1]:514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "[logs]:514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "logs_1.example:514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "-logs.example:514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "logs..example:514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "logs example:514", "expected HOST:PORT with an IP address or host name"),
    ("event_udp", "udp://logs:514", "expected HOST:PORT with an IP address or host name"),
    ("event_http_url", "ftp://example.com/", "expected an http:// or https:// URL"),
    ("event_http_url", "example.com/events", "expected an http:// or https:// URL"),
    ("event_http_url", "http://", "expected an http:// or https:// URL"),
    ("event_http_url", "http:///events", "expected an http:// or https:// URL"),
    ("event_http_url", "http://example.com:99999/", "expected an http:// or https:// URL"),
    ("event_http_url", "http://exa mple.com/", "expected an http:// or https:// URL"),
    ("event_ca_bundle", "/no/such/ca.pem", "expected an existing file"),
    ("allow_write", "sometimes", "expected true/false, yes/no, on/off or 1/0"),
    ("allow_create", "", "expected true/false, yes/no, on/off or 1/0"),
    ("write_devnull", "2", "expected true/false, yes/no, on/off or 1/0"),
    ("umask", "", "expected an octal umask 000..777, e.g. 022"),
    ("umask", "8", "expected an octal umask 000..777, e.g. 022"),
    ("umask", "1000", "expected an octal umask 000..777, e.g. 022"),
    ("umask", "-22", "expected an octal umask 000..777, e.g. 022"),
    ("umask", "0x12", "expected an octal umask 000..777, e.g. 022"),
    ("umask", "u=rwx", "expected an octal umask 000..777, e.g. 022"),
    ("max_upload_bytes", "", "expected a number of bytes 0 or greater"),
    ("max_upload_bytes", "-1", "expected a number of bytes 0 or greater"),
    ("max_upload_bytes", "1.5M", "expected a number of bytes 0 or greater"),
    ("max_upload_bytes", "1T", "expected a number of bytes 0 or greater"),
    ("max_upload_bytes", "10MB", "expected a number of bytes 0 or greater"),
    ("max_upload_bytes", "K", "expected a number of bytes 0 or greater"),
    ("metrics_listen", "localhost:9100", "expected HOST:PORT with an IP address"),
    ("metrics_listen", "127.0.0.1", "expected HOST:PORT with an IP address"),
    ("metrics_listen", "127.0.0.1:65536", "expected HOST:PORT with an IP address"),
    ("metrics_listen", "127.0.0.1:9100,[::1]:9100", "expected HOST:PORT with an IP address"),
    ("remap_file", "/no/such/rules", "expected an existing file"),
    ("pcre_file", "/no/such/pcre", "expected an existing file"),
    (
        "allow_clients",
        "10.0.0.0/33",
        "expected a comma-separated list of IP addresses or CIDR networks",
    ),
    ("allow_clients", "bogus", "expected a comma-separated list of IP addresses or CIDR networks"),
    (
        "deny_clients",
        "10.0.0.0/8,300.1.1.1",
        "expected a comma-separated list of IP addresses or CIDR networks",
    ),
    (
        "deny_clients",
        "fe80::1%eth0",
        "expected a comma-separated list of IP addresses or CIDR networks",
    ),
    ("workers", "0", "expected a whole number from 1 to 64"),
    ("workers", "65", "expected a whole number from 1 to 64"),
    ("workers", "", "expected a whole number from 1 to 64"),
    ("workers", "two", "expected a whole number from 1 to 64"),
    ("systemd", "socket", "expected true/false, yes/no, on/off or 1/0"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), BAD)
def test_bad_values(tmp_path: Path, root: Path, name: str, raw: str, expected: str) -> None:
    message = loadError(tmp_path, f"{name}={raw}\n", root)
    assert message.startswith(f"{tmp_path / 'ctftp.conf'}:2: {name}: {expected}")
    assert ", got '" in message


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (
            "event_udp=logs:0",
            "event_udp: expected HOST:PORT with an IP address or host name and a port 1..65535"
            " ([::1]:514 for IPv6), got 'logs:0'",
        ),
        (
            "event_http_url=ftp://x/",
            "event_http_url: expected an http:// or https:// URL, got 'ftp://x/'",
        ),
        (
            "event_ca_bundle=/no/ca.pem",
            "event_ca_bundle: expected an existing file, got '/no/ca.pem'",
        ),
        ("umask=999", "umask: expected an octal umask 000..777, e.g. 022, got '999'"),
        (
            "max_upload_bytes=1.5G",
            "max_upload_bytes: expected a number of bytes 0 or greater,"
            " with an optional K, M or G suffix, got '1.5G'",
        ),
        (
            "metrics_listen=localhost:9100",
            "metrics_listen: expected HOST:PORT with an IP address and a port 0..65535"
            " ([::1]:69 for IPv6), got 'localhost:9100'",
        ),
        (
            "allow_clients=10.0.0.0/8, 10.300.0.0/16",
            "allow_clients: expected a comma-separated list of IP addresses or CIDR networks"
            " (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32), got '10.300.0.0/16'",
        ),
        (
            "deny_clients=nobody",
            "deny_clients: expected a comma-separated list of IP addresses or CIDR networks"
            " (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32), got 'nobody'",
        ),
        ("remap_file=/no/rules", "remap_file: expected an existing file, got '/no/rules'"),
        ("pcre_file=/no/pcre", "pcre_file: expected an existing file, got '/no/pcre'"),
        ("workers=100", "workers: expected a whole number from 1 to 64, got '100'"),
        ("systemd=maybe", "systemd: expected true/false, yes/no, on/off or 1/0, got 'maybe'"),
        (
            "allow_write=maybe",
            "allow_write: expected true/false, yes/no, on/off or 1/0, got 'maybe'",
        ),
    ],
)
def test_new_key_error_lines(tmp_path: Path, root: Path, body: str, line: str) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\n{body}\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == f"{path}:2: {line}"


def test_event_ca_bundle_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: Path
) -> None:
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    (etc / "tls" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    path = writeConf(etc, f"root_dir={root}\nevent_ca_bundle=tls/ca.pem\n")
    assert ServerConfig.fromFile(path).event_ca_bundle == str(etc / "tls" / "ca.pem")
    path = writeConf(etc, f"root_dir={root}\nevent_ca_bundle=tls\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == (
        f"{path}:2: event_ca_bundle: expected an existing file (relative to {etc}), got 'tls'"
    )
    config = ServerConfig.fromStrings({"root_dir": str(root), "event_ca_bundle": "etc/tls/ca.pem"})
    assert config.event_ca_bundle == str(etc / "tls" / "ca.pem")


def test_rule_files_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: Path
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "rules").write_text("r ^/ \n")
    (etc / "pcre").write_text("^a b\n")
    monkeypatch.chdir(tmp_path)
    path = writeConf(etc, f"root_dir={root}\nremap_file=rules\npcre_file=./pcre\n")
    config = ServerConfig.fromFile(path)
    assert config.remap_file == str(etc / "rules")
    assert config.pcre_file == str(etc / "pcre")
    path = writeConf(etc, f"root_dir={root}\nremap_file=missing\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == (
        f"{path}:2: remap_file: expected an existing file (relative to {etc}), got 'missing'"
    )
    path = writeConf(etc, f"root_dir={root}\npcre_file=.\n")
    with pytest.raises(ConfigError, match=r":2: pcre_file: expected an existing file \(relative"):
        ServerConfig.fromFile(path)


def test_new_keys_on_the_command_line(tmp_path: Path, root: Path) -> None:
    config = ServerConfig.fromStrings(
        {
            "root_dir": str(root),
            "allow_write": "yes",
            "umask": "027",
            "max_upload_bytes": "1M",
            "event_udp": "[::1]:514",
        }
    )
    assert (config.allow_write, config.umask, config.max_upload_bytes) == (True, 0o27, 1 << 20)
    assert config.event_udp == ("::1", 514)
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromStrings({"root_dir": str(root), "umask": "9"})
    assert str(info.value) == (
        "command line: --umask: expected an octal umask 000..777, e.g. 022, got '9'"
    )


def test_bad_value_whole_line(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\n\n# timeouts\ntimeout_sec=abc\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path)
    assert str(info.value) == (
        f"{path}:4: timeout_sec: expected a number of seconds greater than 0, got 'abc'"
    )


def test_bad_listener_names_the_entry(tmp_path: Path, root: Path) -> None:
    message = loadError(tmp_path, "listeners=127.0.0.1:69, [::1]:99999\n", root)
    assert message.endswith(
        ":2: listeners: expected HOST:PORT with an IP address and a port 0..65535"
        " ([::1]:69 for IPv6), got '[::1]:99999'"
    )


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (word, expected)
        for words, expected in (
            (("true", "TRUE", "yes", "Yes", "on", "ON", "1"), True),
            (("false", "False", "no", "NO", "off", "Off", "0"), False),
        )
        for word in words
    ],
)
def test_boolean_spellings(tmp_path: Path, root: Path, raw: str, value: bool) -> None:
    config = load(tmp_path, f"file_log={raw}\noptions={raw}\nrequire_world_readable={raw}\n", root)
    assert config.file_log is value
    assert config.options is value
    assert config.require_world_readable is value


# --- overrides and the command line ------------------------------------------


def test_overrides_win_over_the_file(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\ntimeout_sec=5\nlisteners=127.0.0.1:69\n")
    config = ServerConfig.fromFile(path, {"timeout_sec": "0.5", "max_retries": "1"})
    assert config.timeout_sec == 0.5
    assert config.max_retries == 1
    assert config.listeners == (("127.0.0.1", 69),)


def test_overridden_file_value_is_not_checked(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, "root_dir=/only/on/the/server\ntimeout_sec=abc\n")
    config = ServerConfig.fromFile(path, {"root_dir": str(root), "timeout_sec": "2"})
    assert config.root_dir == (str(root),)
    assert config.timeout_sec == 2.0


def test_overridden_file_key_must_still_be_known_and_single(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\ntimeout_secs=1\n")
    with pytest.raises(ConfigError, match=r":2: unknown key 'timeout_secs'"):
        ServerConfig.fromFile(path, {"timeout_sec": "2"})
    path = writeConf(tmp_path, f"root_dir={root}\ntimeout_sec=1\ntimeout_sec=3\n")
    with pytest.raises(
        ConfigError, match=r":3: timeout_sec: duplicate key, first given on line 2$"
    ):
        ServerConfig.fromFile(path, {"timeout_sec": "2"})


def test_override_supplies_missing_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: Path
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = writeConf(conf, "max_retries=1\n")
    monkeypatch.chdir(tmp_path)
    config = ServerConfig.fromFile(path, {"root_dir": "srv"})
    assert config.root_dir == (str(root),)  # relative to the current directory


def test_bad_override_names_the_option(tmp_path: Path, root: Path) -> None:
    path = writeConf(tmp_path, f"root_dir={root}\n")
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromFile(path, {"timeout_sec": "abc"})
    assert str(info.value) == (
        "command line: --timeout-sec: expected a number of seconds greater than 0, got 'abc'"
    )


def test_from_strings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = ServerConfig.fromStrings({"root_dir": "srv", "listeners": "[::1]:6969,127.0.0.1:0"})
    assert config.root_dir == (str(root),)
    assert config.listeners == (("::1", 6969), ("127.0.0.1", 0))
    assert config.source == ""


def test_from_strings_errors() -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromStrings({})
    assert str(info.value) == (
        "command line: --root-dir: required option is missing (or give --config FILE)"
    )
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromStrings({"root_dir": "/", "timeout_secs": "1"})
    assert str(info.value) == (
        "command line: unknown option '--timeout-secs' (did you mean '--timeout-sec'?)"
    )
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromStrings({"root_dir": "/", "multicast_ttl": "300"})
    assert str(info.value) == (
        "command line: --multicast-ttl: expected a whole number 1..255, got '300'"
    )


def test_from_strings_other_origin() -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig.fromStrings({"root_dir": "/", "max_retries": "-2"}, origin="environment")
    assert str(info.value) == (
        "environment: max_retries: expected a whole number 0 or greater, got '-2'"
    )
    with pytest.raises(ConfigError, match="^environment: root_dir: required key is missing$"):
        ServerConfig.fromStrings({}, origin="environment")


def test_check_key() -> None:
    checkKey("--timeout-sec")
    checkKey("timeout_sec")
    with pytest.raises(ConfigError, match=r"^command line: unknown option '--rot-dir' \(did you"):
        checkKey("--rot-dir")
    checkKey("--umask")
    checkKey("multicast", "x.conf")
    with pytest.raises(ConfigError, match="^x.conf: unknown key 'multicst' \\(did you mean"):
        checkKey("multicst", "x.conf")


# --- keyword construction ----------------------------------------------------


def test_keyword_construction(root: Path) -> None:
    config = ServerConfig(root_dir=(str(root),), listeners=(("127.0.0.1", 6969),))
    assert config.root_dir == (str(root),)
    assert config.listeners == (("127.0.0.1", 6969),)
    assert config.source == ""


def test_keyword_convenient_forms(tmp_path: Path, root: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    config = ServerConfig(
        root_dir=f"{root}, {other}",
        listeners="127.0.0.1:6969,[::1]:69",
        refuse_options="TSIZE, blksize",
        timeout_sec=1,
        port_range="100:200",
        log_level="WARNING",
        log_dir=tmp_path / "logs",  # type: ignore[arg-type]
    )
    assert config.root_dir == (str(root), str(other))
    assert config.listeners == (("127.0.0.1", 6969), ("::1", 69))
    assert config.refuse_options == frozenset({"tsize", "blksize"})
    assert config.timeout_sec == 1.0 and isinstance(config.timeout_sec, float)
    assert config.port_range == (100, 200)
    assert config.log_level == "warn"
    assert config.log_dir == str(tmp_path / "logs")


def test_keyword_sequences(root: Path) -> None:
    config = ServerConfig(
        root_dir=[root],  # type: ignore[arg-type]
        listeners=["[::1]:6969", ("[::]", 69), ("127.0.0.1", 0)],  # type: ignore[arg-type]
        refuse_options={"Multicast"},  # type: ignore[arg-type]
        port_range=[5, 6],  # type: ignore[arg-type]
    )
    assert config.root_dir == (str(root),)
    assert config.listeners == (("::1", 6969), ("::", 69), ("127.0.0.1", 0))
    assert config.refuse_options == frozenset({"multicast"})
    assert config.port_range == (5, 6)


def test_keyword_relative_root_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert ServerConfig(root_dir="srv").root_dir == (str(root),)


def test_keyword_new_keys(tmp_path: Path, root: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    config = ServerConfig(
        root_dir=root,  # type: ignore[arg-type]
        event_udp=("logs.example.com", 514),
        event_http_url="https://example.com/e",
        event_ca_bundle=bundle,  # type: ignore[arg-type]
        allow_write=True,
        allow_create=1,  # type: ignore[arg-type]
        umask=0o077,
        write_devnull=False,
        max_upload_bytes=4096,
        metrics_listen=["[::1]", 9100],  # type: ignore[arg-type]
    )
    assert config.event_udp == ("logs.example.com", 514)
    assert config.event_http_url == "https://example.com/e"
    assert config.event_ca_bundle == str(bundle)
    assert (config.allow_write, config.allow_create, config.write_devnull) == (True, True, False)
    assert config.umask == 0o077
    assert config.max_upload_bytes == 4096
    assert config.metrics_listen == ("::1", 9100)
    strings = ServerConfig(
        root_dir=(str(root),),
        event_udp="[::1]:514",  # type: ignore[arg-type]
        umask="0o027",  # type: ignore[arg-type]
        max_upload_bytes="2K",  # type: ignore[arg-type]
        metrics_listen="127.0.0.1:0",  # type: ignore[arg-type]
    )
    assert strings.event_udp == ("::1", 514)
    assert (strings.umask, strings.max_upload_bytes) == (0o027, 2048)
    assert strings.metrics_listen == ("127.0.0.1", 0)
    off = dataclasses.replace(config, event_udp=None, metrics_listen=None)
    assert off.event_udp is None and off.metrics_listen is None
    empty: Any = ""
    pair: Any = ["10.0.0.1", 514]
    assert dataclasses.replace(config, event_udp=empty).event_udp is None
    assert dataclasses.replace(config, event_udp=pair).event_udp == ("10.0.0.1", 514)


def test_keyword_group_two(tmp_path: Path, root: Path) -> None:
    rules = tmp_path / "rules"
    rules.write_text("")
    denied: Any = [ipaddress.ip_network("10.9.0.0/16"), "192.0.2.1"]
    config = ServerConfig(
        root_dir=(str(root),),
        remap_file=rules,  # type: ignore[arg-type]
        pcre_file=str(rules),
        allow_clients="10.1.2.3/8, ::1",  # type: ignore[arg-type]
        deny_clients=denied,
        workers=8,
        systemd=True,
    )
    assert config.remap_file == str(rules) and config.pcre_file == str(rules)
    assert config.allow_clients == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.deny_clients == (
        ipaddress.ip_network("10.9.0.0/16"),
        ipaddress.ip_network("192.0.2.1/32"),
    )
    assert (config.workers, config.systemd) == (8, True)
    assert hash(config) == hash(dataclasses.replace(config))


def test_keyword_root_with_comma_in_sequence(tmp_path: Path) -> None:
    odd = tmp_path / "a,b"
    odd.mkdir()
    assert ServerConfig(root_dir=(str(odd),)).root_dir == (str(odd),)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"timeout_sec": 0},
            "ServerConfig: timeout_sec: expected a number of seconds greater than 0, got 0",
        ),
        (
            {"timeout_sec": "abc"},
            "ServerConfig: timeout_sec: expected a number of seconds greater than 0, got 'abc'",
        ),
        ({"max_retries": -1}, "ServerConfig: max_retries: expected a whole number 0 or greater"),
        ({"max_retries": True}, "ServerConfig: max_retries: expected a whole number"),
        ({"max_blksize": 70000}, "ServerConfig: max_blksize: expected a whole number from 8"),
        ({"max_connections": 0}, "ServerConfig: max_connections: expected a whole number 1"),
        ({"log_level": "loud"}, "ServerConfig: log_level: expected one of"),
        ({"log_format": 1}, "ServerConfig: log_format: expected text or json, got 1"),
        ({"file_log": "maybe"}, "ServerConfig: file_log: expected true/false"),
        ({"options": None}, "ServerConfig: options: expected true/false"),
        ({"listeners": (("::1", 70000),)}, "ServerConfig: listeners: expected HOST:PORT"),
        ({"listeners": (("example.com", 69),)}, "ServerConfig: listeners: expected HOST:PORT"),
        ({"listeners": ()}, "ServerConfig: listeners: expected at least one HOST:PORT"),
        ({"port_range": (9, 1)}, "ServerConfig: port_range: expected LOW:HIGH"),
        ({"root_dir": "/no/such/dir"}, "ServerConfig: root_dir: expected an existing folder"),
        ({"root_dir": ()}, "ServerConfig: root_dir: expected a folder or a comma-separated"),
        ({"refuse_options": 3}, "ServerConfig: refuse_options: expected a comma-separated"),
        ({"event_udp": ("logs", 0)}, "ServerConfig: event_udp: expected HOST:PORT with an IP"),
        ({"event_udp": ("logs", True)}, "ServerConfig: event_udp: expected HOST:PORT"),
        ({"event_udp": ("a_b", 514)}, "ServerConfig: event_udp: expected HOST:PORT"),
        ({"event_udp": ("logs",)}, "ServerConfig: event_udp: expected HOST:PORT"),
        ({"event_udp": 514}, "ServerConfig: event_udp: expected HOST:PORT"),
        ({"event_udp": (514, "logs")}, "ServerConfig: event_udp: expected HOST:PORT"),
        (
            {"event_http_url": "gopher://x"},
            "ServerConfig: event_http_url: expected an http:// or https:// URL, got 'gopher://x'",
        ),
        ({"event_http_url": None}, "ServerConfig: event_http_url: expected an http:// or"),
        (
            {"event_ca_bundle": "/no/such.pem"},
            "ServerConfig: event_ca_bundle: expected an existing file, got '/no/such.pem'",
        ),
        ({"event_ca_bundle": 1}, "ServerConfig: event_ca_bundle: expected an existing file"),
        ({"allow_write": "perhaps"}, "ServerConfig: allow_write: expected true/false"),
        ({"allow_create": 2}, "ServerConfig: allow_create: expected true/false"),
        ({"write_devnull": None}, "ServerConfig: write_devnull: expected true/false"),
        ({"umask": 0o1000}, "ServerConfig: umask: expected an octal umask 000..777, e.g. 022"),
        ({"umask": -1}, "ServerConfig: umask: expected an octal umask"),
        ({"umask": True}, "ServerConfig: umask: expected an octal umask"),
        (
            {"umask": "9"},
            "ServerConfig: umask: expected an octal umask 000..777, e.g. 022, got '9'",
        ),
        ({"max_upload_bytes": -1}, "ServerConfig: max_upload_bytes: expected a number of bytes"),
        ({"max_upload_bytes": 1.5}, "ServerConfig: max_upload_bytes: expected a number of bytes"),
        ({"max_upload_bytes": "1T"}, "ServerConfig: max_upload_bytes: expected a number of"),
        ({"metrics_listen": ("localhost", 9100)}, "ServerConfig: metrics_listen: expected HOST"),
        ({"metrics_listen": ("::1", 65536)}, "ServerConfig: metrics_listen: expected HOST:PORT"),
        ({"metrics_listen": 9100}, "ServerConfig: metrics_listen: expected HOST:PORT"),
        ({"remap_file": "/no/rules"}, "ServerConfig: remap_file: expected an existing file"),
        ({"pcre_file": 3}, "ServerConfig: pcre_file: expected an existing file"),
        (
            {"allow_clients": ["10.0.0.0/8", "nope"]},
            "ServerConfig: allow_clients: expected a comma-separated list of IP addresses or CIDR"
            " networks (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32), got 'nope'",
        ),
        ({"deny_clients": 10}, "ServerConfig: deny_clients: expected a comma-separated list"),
        ({"workers": 0}, "ServerConfig: workers: expected a whole number from 1 to 64, got 0"),
        ({"workers": 65}, "ServerConfig: workers: expected a whole number from 1 to 64"),
        ({"workers": "4.0"}, "ServerConfig: workers: expected a whole number from 1 to 64"),
        ({"systemd": "socket"}, "ServerConfig: systemd: expected true/false"),
    ],
)
def test_keyword_validation(root: Path, kwargs: dict[str, object], message: str) -> None:
    kwargs.setdefault("root_dir", (str(root),))
    with pytest.raises(ConfigError) as info:
        ServerConfig(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_replace_keeps_working(root: Path) -> None:
    config = ServerConfig(root_dir=(str(root),), listeners=(("127.0.0.1", 6969),))
    changed = dataclasses.replace(config, timeout_sec=0.5, listeners="[::1]:0")
    assert changed.timeout_sec == 0.5
    assert changed.listeners == (("::1", 0),)
    assert changed.root_dir == config.root_dir
    with pytest.raises(ConfigError):
        dataclasses.replace(config, max_retries=-1)


def test_frozen_and_hashable(root: Path) -> None:
    config = ServerConfig(root_dir=(str(root),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timeout_sec = 1.0  # type: ignore[misc]
    assert hash(config) == hash(ServerConfig(root_dir=str(root)))


# --- the shipped example -----------------------------------------------------


def test_example_config_serves_samples(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on the current directory
    config = ServerConfig.fromFile(str(REPO / "ctftp.conf.example"))
    assert config.root_dir == (str(REPO / "samples"),)
    assert config.listeners == (("127.0.0.1", 6969),)
    assert config.log_dir == ""
    defaults = ServerConfig(root_dir=config.root_dir, listeners=config.listeners)
    assert dataclasses.replace(config, source="") == defaults
    assert (REPO / "samples" / "hello.txt").is_file()
    assert (REPO / "samples" / "SEP001122334455.cnf.xml").is_file()
    assert (REPO / "samples" / "pxelinux.cfg" / "default").is_file()


def test_example_and_docs_list_every_key() -> None:
    example = (REPO / "ctftp.conf.example").read_text()
    docs = (REPO / "docs" / "configuration.md").read_text()
    for name, key in KEYS.items():
        assert f"\n{name}=" in example, name
        assert f"`{name}`" in docs, name
        assert key.option in docs, name
    assert os.path.basename(str(REPO / "samples")) in docs


# --- HTTP relay keys ---------------------------------------------------------


def test_relay_key_defaults(root: Path) -> None:
    config = ServerConfig(root_dir=(str(root),))
    assert config.http_relay is True
    assert (config.fallback_url, config.cache_dir) == ("", "")
    assert config.cache_max_bytes == config.relay_max_bytes == 64 * 1024 * 1024
    assert config.http_timeout_sec == 30.0


def test_relay_keys_from_file(tmp_path: Path, root: Path) -> None:
    config = load(
        tmp_path,
        "http_relay=off\nfallback_url=https+nocache://prov.example.com:8443/tftp/\n"
        "cache_dir=cache\ncache_max_bytes=1g\nrelay_max_bytes=512K\nhttp_timeout_sec=2.5\n",
        root,
    )
    assert config.http_relay is False
    assert config.fallback_url == "https+nocache://prov.example.com:8443/tftp/"
    assert config.cache_dir == str(tmp_path / "cache")
    assert (config.cache_max_bytes, config.relay_max_bytes) == (1024**3, 512 * 1024)
    assert config.http_timeout_sec == 2.5


@pytest.mark.parametrize(
    "line, expected",
    [
        ("fallback_url=ftp://example.com/", "expected an http:// or https:// URL"),
        ("fallback_url=http+bogus://example.com/", "expected an http:// or https:// URL"),
        ("fallback_url=http:///path", "expected an http:// or https:// URL"),
        ("fallback_url=http://h:99999/", "expected an http:// or https:// URL"),
        ("fallback_url=http://h/a?b=c", "expected an http:// or https:// URL"),
        ("cache_max_bytes=-1", "expected a number of bytes 0 or greater"),
        ("relay_max_bytes=lots", "expected a number of bytes 0 or greater"),
        ("http_timeout_sec=0", "expected a number of seconds greater than 0"),
        ("http_relay=maybe", "expected true/false"),
    ],
)
def test_relay_key_errors(tmp_path: Path, root: Path, line: str, expected: str) -> None:
    message = loadError(tmp_path, line + "\n", root)
    key, _, value = line.partition("=")
    assert f":2: {key}: {expected}" in message
    assert message.endswith(f"got '{value}'")


def test_cache_dir_must_not_be_a_file(tmp_path: Path, root: Path) -> None:
    (tmp_path / "afile").write_text("x")
    message = loadError(tmp_path, "cache_dir=afile\n", root)
    assert ":2: cache_dir: expected a folder, which need not exist yet" in message


def test_relay_keys_by_keyword(root: Path) -> None:
    config = ServerConfig(
        root_dir=str(root),
        http_relay=False,
        fallback_url="http://127.0.0.1:8080/",
        cache_dir=root / "c",
        cache_max_bytes=0,
        relay_max_bytes="2M",
        http_timeout_sec=1,
    )
    assert (config.http_relay, config.cache_max_bytes, config.relay_max_bytes) == (
        False,
        0,
        2 * 1024 * 1024,
    )
    assert config.cache_dir == str(root / "c") and config.http_timeout_sec == 1.0
    with pytest.raises(ConfigError, match="^ServerConfig: fallback_url: expected an http"):
        ServerConfig(root_dir=str(root), fallback_url=5)
    with pytest.raises(ConfigError, match="^ServerConfig: cache_max_bytes: expected"):
        ServerConfig(root_dir=str(root), cache_max_bytes=-5)


# -- where a setting came from, for errors found after parsing ---------------------------


def test_setting_where_names_the_file_line_or_the_option(tmp_path: Path, root: Path) -> None:
    """A folder found unusable when the service is built (log_dir, cache_dir)
    is reported at the line that set it, or at the option that overrode it."""
    path = writeConf(
        tmp_path,
        f"# ctftp\nroot_dir={root}\n\nlog_dir = logs\n; cache\ncache_dir=cache\n",
    )
    config = ServerConfig.fromFile(path)
    assert settingWhere(config, "log_dir") == f"{path}:4: log_dir"
    assert settingWhere(config, "cache_dir") == f"{path}:6: cache_dir"
    overridden = ServerConfig.fromFile(path, {"log_dir": str(tmp_path / "other")})
    assert settingWhere(overridden, "log_dir") == "command line: --log-dir"
    added = ServerConfig.fromFile(path, {"metrics_listen": "127.0.0.1:9100"})
    assert settingWhere(added, "metrics_listen") == "command line: --metrics-listen"
    assert settingWhere(ServerConfig(root_dir=str(root)), "log_dir") == "command line: --log-dir"
