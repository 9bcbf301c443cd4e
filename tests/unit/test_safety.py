"""Filename safety (SPEC section 4) with real files in tmp_path.

Most tests go through ``LocalFileSource.openRead``, the shipped read source;
a few run the whole server in memory (tests/protocol/conftest.py's harness,
loaded by path) to check what a client sees on the wire.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctftp.errors import RequestRefused
from ctftp.packets import Data, Error, decode
from ctftp.resolver import cleanName, resolveExisting
from ctftp.sources import LocalFile, LocalFileSource, ReadRequest

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# -- helpers ---------------------------------------------------------------------


def _protocolHarness() -> Any:
    """tests/protocol/conftest.py (the in-memory server), loaded by path."""
    name = "_ctftp_protocol_harness"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "protocol" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The served folder, with a secret file beside it (outside the root)."""
    served = tmp_path / "root"
    served.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"top secret\n")
    return served


def write(path: Path, data: bytes = b"content\n", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def fetch(source: LocalFileSource, name: str) -> bytes:
    """Open ``name`` like an RRQ would and read it whole."""
    f = source.openRead(ReadRequest(name, "10.0.0.5", 40000, "octet"))
    assert isinstance(f, LocalFile)
    try:
        data = f.read(1 << 20)
        assert f.read(1) == b""
        assert f.size == len(data)
        return data
    finally:
        f.close()


def refused(source: LocalFileSource, name: str) -> int:
    """The TFTP error code ``name`` is refused with (fails if it is served)."""
    with pytest.raises(RequestRefused) as info:
        source.openRead(ReadRequest(name, "10.0.0.5", 40000, "octet"))
    return info.value.code


def withTimeout(call: Callable[[], Any], seconds: float = 5.0) -> Any:
    """Run ``call`` in a thread; fail if it does not return within ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"call blocked for more than {seconds}s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


# -- name cleaning ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("/pxelinux.0", "pxelinux.0"),
        ("//pxelinux.0", "pxelinux.0"),
        ("pxelinux.0", "pxelinux.0"),
        ("\\boot\\pxelinux.0", "boot/pxelinux.0"),
        ("pxelinux.cfg\\default", "pxelinux.cfg/default"),
        ("/", ""),
        ("\\", ""),
        ("a/b/", "a/b/"),
    ],
)
def test_clean_name(name, clean):
    assert cleanName(name) == clean


def test_leading_slash_is_dropped(root):
    write(root / "pxelinux.0", b"PXE")
    source = LocalFileSource([str(root)])
    assert fetch(source, "/pxelinux.0") == b"PXE"
    assert fetch(source, "///pxelinux.0") == b"PXE"
    assert fetch(source, "pxelinux.0") == b"PXE"


def test_backslashes_become_slashes(root):
    write(root / "pxelinux.cfg" / "default", b"DEFAULT menu")
    source = LocalFileSource([str(root)])
    assert fetch(source, "pxelinux.cfg\\default") == b"DEFAULT menu"
    assert fetch(source, "\\pxelinux.cfg\\default") == b"DEFAULT menu"


def test_file_in_subfolder_and_harmless_dotdot_inside_root(root):
    write(root / "a" / "b.txt", b"b")
    write(root / "c.txt", b"c")
    source = LocalFileSource([str(root)])
    assert fetch(source, "a/b.txt") == b"b"
    assert fetch(source, "a/../c.txt") == b"c"
    assert fetch(source, "./a/./b.txt") == b"b"


def test_served_path_is_the_real_path(root):
    target = write(root / "f.bin")
    f = LocalFileSource([str(root)]).openRead(ReadRequest("/f.bin", "h", 1, "octet"))
    try:
        assert f.path == os.path.realpath(target)
    finally:
        f.close()


def test_missing_file_is_error_1(root):
    assert refused(LocalFileSource([str(root)]), "nope.bin") == 1
    assert refused(LocalFileSource([str(root)]), "no/such/dir/file") == 1


def test_non_utf8_filename_bytes_reach_the_right_file(root):
    raw = b"caf\xe9.cfg"  # latin-1, not UTF-8
    (root / os.fsdecode(raw)).write_bytes(b"latin")
    assert os.path.exists(os.path.join(os.fsencode(root), raw))
    name = raw.decode("utf-8", "surrogateescape")  # what the codec hands on
    assert fetch(LocalFileSource([str(root)]), name) == b"latin"


# -- escapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",
        "/../secret.txt",
        "..\\secret.txt",
        "\\..\\secret.txt",
        "a/../../secret.txt",
        "../../../../../../etc/passwd",
        "../root/../secret.txt",
        "..",
        "../",
    ],
)
def test_dotdot_escape_of_an_existing_target_is_error_2(root, name):
    write(root / "a" / "x")
    assert refused(LocalFileSource([str(root)]), name) == 2


@pytest.mark.parametrize("name", ["../missing.txt", "../no/such/thing", "a/../../missing"])
def test_dotdot_escape_of_a_missing_target_is_error_2_not_1(root, name):
    # Answering 1 here would let a client probe for files outside the root.
    assert refused(LocalFileSource([str(root)]), name) == 2


def test_dotdot_above_the_root_is_refused_even_when_it_comes_back(root):
    """Serving ``../root/f.txt`` would tell a client the root's own name
    and path (DATA against ERROR 2), so a ``..`` at the root is an escape."""
    write(root / "f.txt", b"f")
    assert refused(LocalFileSource([str(root)]), "../root/f.txt") == 2


@pytest.mark.parametrize("outside", ["secret.txt", "no-such-file"])
def test_nothing_outside_the_root_can_be_probed(root, outside):
    """Found by a black-box review: the walk looked at what lay outside the
    root before the final check, so ``X/..`` answered ERROR 1 when X was a
    file there and served the file when X did not exist."""
    write(root / "small.txt", b"s")
    depth = len(root.parts) - 1  # components below /
    down = str(root.parent / outside).lstrip("/")
    back = "../" * (depth - 1)  # from root.parent/outside/.. (root.parent) up to /
    name = "../" * depth + down + "/../" + back + str(root).lstrip("/") + "/small.txt"
    assert refused(LocalFileSource([str(root)]), name) == 2


def test_absolute_symlink_into_the_root_is_served(root):
    """Its target passes through the root's own ancestors, which is allowed."""
    write(root / "menus" / "default", b"menu")
    (root / "default").symlink_to(root / "menus" / "default")
    assert fetch(LocalFileSource([str(root)]), "default") == b"menu"


def test_sibling_folder_with_common_prefix_is_outside(tmp_path):
    served = tmp_path / "tftp"
    served.mkdir()
    write(tmp_path / "tftp-private" / "key", b"k")
    assert refused(LocalFileSource([str(served)]), "../tftp-private/key") == 2


def test_symlink_to_a_file_outside_the_root_is_error_2(root, tmp_path):
    (root / "link").symlink_to(tmp_path / "secret.txt")
    (root / "abs").symlink_to("/etc/passwd")
    source = LocalFileSource([str(root)])
    assert refused(source, "link") == 2
    assert refused(source, "abs") == 2


def test_dangling_symlink_outside_the_root_is_error_2(root, tmp_path):
    (root / "dangling").symlink_to(tmp_path / "not-there")
    assert refused(LocalFileSource([str(root)]), "dangling") == 2


def test_symlinked_folder_outside_the_root_is_error_2(root, tmp_path):
    write(tmp_path / "outside" / "f.txt")
    (root / "dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    assert refused(LocalFileSource([str(root)]), "dir/f.txt") == 2
    assert refused(LocalFileSource([str(root)]), "dir/missing") == 2


def test_symlink_inside_the_root_is_served(root):
    write(root / "real" / "phone.cfg", b"cfg")
    (root / "alias.cfg").symlink_to("real/phone.cfg")
    (root / "dir").symlink_to("real", target_is_directory=True)
    source = LocalFileSource([str(root)])
    assert fetch(source, "alias.cfg") == b"cfg"
    assert fetch(source, "dir/phone.cfg") == b"cfg"


def test_root_given_through_a_symlink_still_serves(tmp_path, root):
    write(root / "f.txt", b"f")
    (tmp_path / "rootlink").symlink_to(root, target_is_directory=True)
    source = LocalFileSource([str(tmp_path / "rootlink")])
    assert fetch(source, "f.txt") == b"f"
    assert refused(source, "../secret.txt") == 2


def test_absolute_symlink_through_a_symlinked_root_is_served(tmp_path):
    """The root is a link to a release folder; a link inside it names its
    target through the root's configured path, not the release's."""
    release = tmp_path / "release-2"
    write(release / "t.txt", b"in the release")
    (tmp_path / "current").symlink_to(release, target_is_directory=True)
    (release / "via-root").symlink_to(tmp_path / "current" / "t.txt")
    (release / "via-release").symlink_to(release / "t.txt")
    (tmp_path / "current-other").symlink_to(tmp_path, target_is_directory=True)
    (release / "via-other-link").symlink_to(tmp_path / "current-other" / "release-2" / "t.txt")
    source = LocalFileSource([str(tmp_path / "current")])
    assert fetch(source, "via-root") == b"in the release"
    assert fetch(source, "via-release") == b"in the release"
    # Only the root's own configured path is read as the root: another link
    # outside it is not followed (nothing outside the root is looked at).
    assert refused(source, "via-other-link") == 2


def test_symlink_loop_is_refused_not_hung(root):
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    source = LocalFileSource([str(root)])
    code = withTimeout(lambda: refused(source, "loop1"))
    assert code in (1, 2)


# -- search path ------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    return first, second


def test_search_path_first_root_that_has_the_name_wins(roots):
    first, second = roots
    write(first / "both.txt", b"first")
    write(second / "both.txt", b"second")
    write(second / "only2.txt", b"only in second")
    write(second / "sub" / "deep.txt", b"deep")
    source = LocalFileSource([str(first), str(second)])
    assert fetch(source, "both.txt") == b"first"
    assert fetch(source, "only2.txt") == b"only in second"
    assert fetch(source, "/sub/deep.txt") == b"deep"
    assert refused(source, "nowhere.txt") == 1


def test_search_path_escape_is_refused_even_if_a_later_root_has_the_name(roots, tmp_path):
    first, second = roots
    write(second / "x.txt", b"second")
    # In the first root, "x.txt" is a symlink out: refused, not skipped.
    (first / "x.txt").symlink_to(tmp_path / "elsewhere.txt")
    source = LocalFileSource([str(first), str(second)])
    assert refused(source, "x.txt") == 2
    # "../second/x.txt" leaves the first root: refused although it names a
    # file of the second root.
    assert refused(source, "../second/x.txt") == 2


def test_search_path_escape_from_the_second_root_is_refused(roots, tmp_path):
    first, second = roots
    (second / "out").symlink_to(tmp_path / "secret-2")
    write(tmp_path / "secret-2", b"s")
    assert refused(LocalFileSource([str(first), str(second)]), "out") == 2


def test_search_path_goes_past_what_is_not_a_regular_file(roots):
    """As BSD tftpd: the first root where the name is a regular file wins; a
    folder or a FIFO of that name in an earlier root does not hide it."""
    first, second = roots
    (first / "name").mkdir()
    write(second / "name", b"file")
    os.mkfifo(first / "fifo")
    write(second / "fifo", b"file 2")
    (first / "only-a-folder").mkdir()
    source = LocalFileSource([str(first), str(second)])
    assert fetch(source, "name") == b"file"
    assert fetch(source, "fifo") == b"file 2"
    assert refused(source, "only-a-folder") == 2  # no root has a file: the folder answers


@pytest.mark.parametrize("name", ["text.txt/", "text.txt/.", "text.txt//", "text.txt/x", "link/"])
def test_a_file_with_more_after_it_is_error_1(root, name):
    """``text.txt/`` is not the file: open(2) says ENOTDIR, and so no such name."""
    write(root / "text.txt", b"text")
    (root / "link").symlink_to("text.txt")
    assert refused(LocalFileSource([str(root)]), name) == 1


def test_a_file_with_more_after_it_lets_a_later_root_serve_the_name(roots):
    first, second = roots
    write(first / "name", b"a file in the first root")
    write(second / "name" / "inner.bin", b"inner")
    source = LocalFileSource([str(first), str(second)])
    assert fetch(source, "name/inner.bin") == b"inner"
    assert refused(source, "name/") == 2  # the second root's folder


def test_a_folder_the_server_cannot_enter_is_error_2(root, monkeypatch):
    """EACCES on the way (what a 0700 folder of another user gives) is an
    access violation, as tftpd-hpa answers, not ``File not found``."""
    write(root / "private" / "phone.cfg", b"cfg")
    real = os.lstat

    def lstat(path, *args, **kwargs):
        if os.path.dirname(os.fspath(path)) == str(root / "private"):
            raise PermissionError(13, "Permission denied", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr("ctftp.resolver.os.lstat", lstat)
    assert refused(LocalFileSource([str(root)]), "private/phone.cfg") == 2
    assert refused(LocalFileSource([str(root)]), "private/missing.cfg") == 2


@pytest.mark.skipif(IS_ROOT, reason="root enters a chmod 000 folder, so this cannot be observed")
def test_a_folder_the_server_cannot_enter_is_error_2_for_real(root):
    write(root / "private" / "phone.cfg", b"cfg")
    (root / "private").chmod(0o000)
    try:
        assert refused(LocalFileSource([str(root)]), "private/phone.cfg") == 2
    finally:
        (root / "private").chmod(0o755)


# -- things that are not regular files ---------------------------------------------------


@pytest.mark.parametrize("name", ["sub", "sub/", "/sub", ".", "/", "\\", "sub/.."])
def test_folders_are_error_2(root, name):
    (root / "sub").mkdir()
    assert refused(LocalFileSource([str(root)]), name) == 2


def test_fifo_is_error_2_without_blocking(root):
    fifo = root / "pipe"
    os.mkfifo(fifo)
    source = LocalFileSource([str(root)])
    try:
        assert withTimeout(lambda: refused(source, "pipe")) == 2
    finally:
        # If the open did block, release it so the thread can end.
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass


def test_fifo_with_a_writer_is_still_error_2(root):
    fifo = root / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"data in the pipe")
        assert withTimeout(lambda: refused(LocalFileSource([str(root)]), "pipe")) == 2
    finally:
        os.close(writer)
        os.close(reader)


def test_unix_socket_is_error_2(root):
    path = root / "sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        try:
            sock.bind(str(path))
        except OSError as e:  # path too long for sun_path on some systems
            pytest.skip(f"cannot bind a UNIX socket here: {e}")
        assert withTimeout(lambda: refused(LocalFileSource([str(root)]), "sock")) == 2
    finally:
        sock.close()


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero", "/dev/tty", "/dev/random"])
def test_device_through_a_symlink_is_error_2(root, device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    (root / "dev").symlink_to(device)
    assert withTimeout(lambda: refused(LocalFileSource([str(root)]), "dev")) == 2


def test_device_node_inside_the_root_is_error_2(root):
    node = root / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # like /dev/null
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot create a device node here: {e}")
    assert withTimeout(lambda: refused(LocalFileSource([str(root)]), "null")) == 2


# -- permissions ----------------------------------------------------------------------


def test_require_world_readable(root):
    write(root / "private.cfg", b"p", mode=0o640)
    write(root / "public.cfg", b"q", mode=0o644)
    write(root / "other-only.cfg", b"o", mode=0o604)
    strict = LocalFileSource([str(root)], requireWorldReadable=True)
    assert refused(strict, "private.cfg") == 2
    assert fetch(strict, "public.cfg") == b"q"
    assert fetch(strict, "other-only.cfg") == b"o"


def test_without_require_world_readable_a_0640_file_is_served(root):
    write(root / "private.cfg", b"p", mode=0o640)
    assert fetch(LocalFileSource([str(root)]), "private.cfg") == b"p"


def test_require_world_readable_checks_the_target_of_a_symlink(root):
    write(root / "private.cfg", b"p", mode=0o600)
    (root / "link.cfg").symlink_to("private.cfg")  # a symlink itself is 0777
    assert refused(LocalFileSource([str(root)], requireWorldReadable=True), "link.cfg") == 2


@pytest.mark.skipif(
    IS_ROOT,
    reason="running as root: file permissions do not stop root from reading a chmod 000 "
    "file, so the open succeeds and this case cannot be observed",
)
def test_unreadable_file_is_error_2(root):
    write(root / "locked.bin", b"x", mode=0o000)
    assert refused(LocalFileSource([str(root)]), "locked.bin") == 2


# -- sidecar protection -----------------------------------------------------------------


def test_sidecar_beside_an_existing_file_is_refused_while_protected(root):
    write(root / "phone.cfg", b"cfg")
    write(root / "phone.cfg.log", b"who fetched what")
    protected = LocalFileSource([str(root)], protectSidecars=True)
    assert refused(protected, "phone.cfg.log") == 2
    assert refused(protected, "/phone.cfg.log") == 2
    assert fetch(protected, "phone.cfg") == b"cfg"


def test_sidecar_is_served_when_not_protected(root):
    write(root / "phone.cfg", b"cfg")
    write(root / "phone.cfg.log", b"lines")
    assert fetch(LocalFileSource([str(root)], protectSidecars=False), "phone.cfg.log") == b"lines"


def test_log_file_without_its_base_file_is_served(root):
    write(root / "install.log", b"a log file in its own right")
    source = LocalFileSource([str(root)], protectSidecars=True)
    assert fetch(source, "install.log") == b"a log file in its own right"


def test_log_file_beside_a_folder_of_that_name_is_served(root):
    (root / "images").mkdir()
    write(root / "images.log", b"not a sidecar")
    assert (
        fetch(LocalFileSource([str(root)], protectSidecars=True), "images.log") == b"not a sidecar"
    )


def test_sidecar_reached_through_a_symlink_is_refused(root):
    write(root / "phone.cfg", b"cfg")
    write(root / "phone.cfg.log", b"lines")
    (root / "innocent.txt").symlink_to("phone.cfg.log")
    assert refused(LocalFileSource([str(root)], protectSidecars=True), "innocent.txt") == 2


def test_sidecar_of_a_file_in_a_later_root_is_refused(roots):
    first, second = roots
    write(second / "fw.bin", b"fw")
    write(second / "fw.bin.log", b"lines")
    source = LocalFileSource([str(first), str(second)], protectSidecars=True)
    assert refused(source, "fw.bin.log") == 2


def test_sidecar_not_written_yet_is_refused_like_one_that_is(root):
    """ERROR 2 whether or not X was ever fetched: ERROR 1 would tell."""
    write(root / "phone.cfg", b"cfg")
    assert refused(LocalFileSource([str(root)], protectSidecars=True), "phone.cfg.log") == 2


def test_sidecar_name_of_a_file_in_an_earlier_root_is_not_served_from_a_later_one(roots):
    """X in the first root protects the name X.log: a file of that name in a
    later root is not served (nor gets an X.log.log), whether or not X's own
    sidecar exists yet."""
    first, second = roots
    write(first / "g.txt", b"g")
    write(second / "g.txt.log", b"another root's file")
    source = LocalFileSource([str(first), str(second)], protectSidecars=True)
    assert refused(source, "g.txt.log") == 2
    write(first / "g.txt.log", b"lines")
    assert refused(source, "g.txt.log") == 2


def test_resolver_sidecar_rule_directly(root):
    write(root / "X")
    write(root / "X.log")
    with pytest.raises(RequestRefused) as info:
        resolveExisting([str(root)], "X.log", protectSidecars=True)
    assert info.value.code == 2
    assert resolveExisting([str(root)], "X.log", protectSidecars=False) == os.path.realpath(
        root / "X.log"
    )


# -- NUL bytes ---------------------------------------------------------------------------


def test_name_with_nul_given_to_the_source_is_refused(root):
    write(root / "a")
    assert refused(LocalFileSource([str(root)]), "a\0b") in (1, 2)


# -- end to end through the in-memory server ------------------------------------------


@pytest.fixture
def server(root: Path) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        h = _protocolHarness().Harness(root, **overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        h.service.stopService()


def wireRequest(h: Any, name: bytes, mode: bytes = b"octet") -> None:
    h.listener.deliver(b"\x00\x01" + name + b"\x00" + mode + b"\x00", _protocolHarness().CLIENT)


def listenerError(h: Any) -> Error:
    [reply] = h.listenerReplies()
    assert isinstance(reply, Error), reply
    assert h.reactor.newestPort() is h.listener, "a transfer port was opened"
    return reply


def test_wire_nul_in_name_is_a_bad_mode_and_touches_nothing(server, root):
    h = server()
    write(root / "a", b"must not be served")
    h.listener.deliver(b"\x00\x01a\x00b\x00octet\x00", _protocolHarness().CLIENT)
    reply = listenerError(h)
    assert reply.code == 4
    assert "mode" in reply.message
    # A well-formed request in mode "b": refused with its events, nothing opened.
    assert [(r.filename, r.mode) for r in h.recorder.started] == [("a", "b")]
    assert [r.message for r in h.recorder.ended] == ["illegal_operation"]
    assert h.reactor.newestPort() is h.listener


def test_wire_leading_slash_and_backslash(server, root):
    h = server()
    data = write(root / "pxelinux.cfg" / "default", b"menu").read_bytes()
    wireRequest(h, b"/pxelinux.cfg\\default")
    port = h.transferPort()
    [(datagram, _)] = port.take()
    assert decode(datagram) == Data(1, data)


@pytest.mark.parametrize(
    "name", [b"../secret.txt", b"..\\secret.txt", b"/../missing", b"../../../etc/passwd"]
)
def test_wire_escape_gets_error_2_from_the_listener(server, name):
    h = server()
    wireRequest(h, name)
    reply = listenerError(h)
    assert reply.code == 2
    [record] = h.recorder.ended
    assert (record.status, record.message, record.errorCode) == ("error", "access_denied", 2)


def test_wire_fifo_gets_error_2_promptly(server, root):
    h = server()
    os.mkfifo(root / "pipe")
    withTimeout(lambda: wireRequest(h, b"pipe"))
    assert listenerError(h).code == 2


def test_wire_folder_gets_error_2(server, root):
    h = server()
    (root / "dir").mkdir()
    wireRequest(h, b"dir")
    assert listenerError(h).code == 2


def test_wire_sidecar_refused_only_while_file_log_is_on(server, root):
    write(root / "phone.cfg", b"cfg")
    write(root / "phone.cfg.log", b"lines")
    on = server(file_log=True)
    wireRequest(on, b"phone.cfg.log")
    assert listenerError(on).code == 2
    on.service.stopService()
    off = server(file_log=False)
    wireRequest(off, b"phone.cfg.log")
    [(datagram, _)] = off.transferPort().take()
    assert decode(datagram) == Data(1, b"lines")


def test_wire_require_world_readable(server, root):
    write(root / "private.cfg", b"p", mode=0o640)
    write(root / "public.cfg", b"q", mode=0o644)
    h = server(require_world_readable=True)
    wireRequest(h, b"private.cfg")
    assert listenerError(h).code == 2
    wireRequest(h, b"public.cfg")
    [(datagram, _)] = h.transferPort().take()
    assert decode(datagram) == Data(1, b"q")


def test_wire_non_utf8_name_is_served(server, root):
    raw = b"\xff\xfe.bin"
    (root / os.fsdecode(raw)).write_bytes(b"odd name")
    h = server()
    wireRequest(h, raw)
    [(datagram, _)] = h.transferPort().take()
    assert decode(datagram) == Data(1, b"odd name")


def test_a_root_symlink_switched_to_a_new_release_is_followed_within_the_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root's realpath is reused for REAL_ROOT_TTL seconds, then looked
    up again: a deployment that flips ``current -> v2`` serves v2 after that."""
    from ctftp import resolver

    now = [1000.0]
    monkeypatch.setattr(resolver.time, "monotonic", lambda: now[0])
    for release in ("v1", "v2"):
        (tmp_path / release).mkdir()
        (tmp_path / release / "phone.cfg").write_text(release)
    current = tmp_path / "current"
    current.symlink_to("v1")
    root = str(current)
    assert resolveExisting([root], "phone.cfg", protectSidecars=True).endswith("/v1/phone.cfg")
    current.unlink()
    current.symlink_to("v2")
    now[0] += resolver.REAL_ROOT_TTL / 2
    assert resolveExisting([root], "phone.cfg", protectSidecars=True).endswith("/v1/phone.cfg")
    now[0] += resolver.REAL_ROOT_TTL
    assert resolveExisting([root], "phone.cfg", protectSidecars=True).endswith("/v2/phone.cfg")


@pytest.mark.parametrize(
    ("name", "looks"),
    [
        ("phone.cfg", 1),
        ("sub/phone.cfg", 2),
        ("missing.cfg", 1),
        ("sub/../phone.cfg", 2),
        ("sub/..", 2),
    ],
)
def test_each_component_is_looked_at_once(root, monkeypatch, name, looks):
    """The walk's own ``lstat`` answers whether the name exists (a second
    look cost a system call per request); only after a ``..`` is it asked
    again when the walk ends on one. The root's realpath is cached here."""
    write(root / "phone.cfg", b"cfg")
    write(root / "sub" / "phone.cfg", b"sub cfg")
    source = LocalFileSource([str(root)])
    source.locate(ReadRequest("phone.cfg", "10.0.0.5", 40000, "octet"))  # caches the root
    calls: list[str] = []
    realLstat = os.lstat

    def lstat(path, *args, **kwargs):
        calls.append(os.fspath(path))
        return realLstat(path, *args, **kwargs)

    monkeypatch.setattr("ctftp.resolver.os.lstat", lstat)
    try:
        source.locate(ReadRequest(name, "10.0.0.5", 40000, "octet"))
    except RequestRefused as refusal:
        assert refusal.code == 1 and name == "missing.cfg"
    assert len(calls) == looks, calls
