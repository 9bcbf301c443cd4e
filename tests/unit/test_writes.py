"""LocalWriteSink, DevNullSink and the helpers of ctftp.writes, on real files."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from ctftp.errors import RequestRefused
from ctftp.writes import (
    TEMPORARY_SUFFIX,
    DevNullSink,
    IWriteFile,
    IWriteSink,
    LocalWriteFile,
    LocalWriteSink,
    WriteRequest,
    checkUploadSize,
    isTemporaryName,
    refusalFor,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def request(name: str, tsize: int | None = None) -> WriteRequest:
    return WriteRequest(name, "10.0.0.5", 40000, "octet", tsize)


def refusal(sink: Any, name: str) -> tuple[int, str]:
    with pytest.raises(RequestRefused) as info:
        sink.openWrite(request(name))
    return info.value.code, info.value.message


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(TEMPORARY_SUFFIX))


def upload(sink: LocalWriteSink, name: str, data: bytes) -> LocalWriteFile:
    file = sink.openWrite(request(name))
    file.write(data)
    file.commit()
    return file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


def test_interfaces(root):
    sink = LocalWriteSink(str(root), allowCreate=True)
    verifyObject(IWriteSink, sink)
    verifyObject(IWriteFile, sink.openWrite(request("a.bin")))
    verifyObject(IWriteSink, DevNullSink())
    verifyObject(IWriteFile, DevNullSink().openWrite(request("a.bin")))


def test_write_request_repr():
    assert repr(request("a", 5)) == (
        "WriteRequest(filename='a', clientHost='10.0.0.5', clientPort=40000, mode='octet', tsize=5)"
    )


# -- creating ---------------------------------------------------------------------


def test_created_only_with_allow_create(root):
    assert refusal(LocalWriteSink(str(root), allowCreate=False), "new.bin") == (
        2,
        "Access violation",
    )
    assert list(root.iterdir()) == []
    upload(LocalWriteSink(str(root), allowCreate=True), "new.bin", b"data")
    assert (root / "new.bin").read_bytes() == b"data"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0, 0o666)])
def test_created_file_mode_follows_umask(root, umask, mode):
    upload(LocalWriteSink(str(root), allowCreate=True, umask=umask), "f.bin", b"x")
    assert stat.S_IMODE((root / "f.bin").stat().st_mode) == mode


def test_file_appears_only_at_commit(root):
    sink = LocalWriteSink(str(root), allowCreate=True)
    file = sink.openWrite(request("late.bin"))
    file.write(b"part one ")
    file.write(b"part two")
    assert not (root / "late.bin").exists()
    [temporary] = temporaries(root)
    assert temporary.name.startswith(".late.bin.")
    assert isTemporaryName(temporary.name)
    assert stat.S_IMODE(temporary.stat().st_mode) == 0o600  # private until complete
    assert temporary.read_bytes() == b"part one part two"
    file.commit()
    assert (root / "late.bin").read_bytes() == b"part one part two"
    assert temporaries(root) == []


def test_missing_folder_is_never_created(root):
    sink = LocalWriteSink(str(root), allowCreate=True)
    assert refusal(sink, "nope/f.bin") == (1, "Folder not found")
    assert refusal(LocalWriteSink(str(root), allowCreate=False), "nope/f.bin")[0] == 2
    assert list(root.iterdir()) == []


def test_existing_subfolder_is_fine(root):
    (root / "logs").mkdir()
    upload(LocalWriteSink(str(root), allowCreate=True), "/logs\\dev1.txt", b"boot ok")
    assert (root / "logs" / "dev1.txt").read_bytes() == b"boot ok"


def test_file_as_a_folder_is_refused(root):
    (root / "plain").write_bytes(b"")
    assert refusal(LocalWriteSink(str(root), allowCreate=True), "plain/f.bin")[0] == 2


def test_long_name_still_gets_a_temporary(root):
    name = "n" * 250
    upload(LocalWriteSink(str(root), allowCreate=True), name, b"long")
    assert (root / name).read_bytes() == b"long"


# -- overwriting ------------------------------------------------------------------


def test_existing_file_is_replaced_atomically(root):
    target = root / "config.xml"
    target.write_bytes(b"old config")
    target.chmod(0o640)
    oldInode = target.stat().st_ino
    sink = LocalWriteSink(str(root), allowCreate=False)
    with open(target, "rb") as reader:
        file = sink.openWrite(request("config.xml"))
        file.write(b"new config, longer")
        assert target.read_bytes() == b"old config"
        file.commit()
        assert reader.read() == b"old config"  # the old inode is untouched
    assert target.read_bytes() == b"new config, longer"
    assert target.stat().st_ino != oldInode
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # keeps its mode
    assert temporaries(root) == []


def test_require_world_writable(root):
    target = root / "f.bin"
    target.write_bytes(b"old")
    target.chmod(0o644)
    sink = LocalWriteSink(str(root), allowCreate=False, requireWorldWritable=True)
    assert refusal(sink, "f.bin") == (2, "Access violation")
    target.chmod(0o666)
    upload(sink, "f.bin", b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666


def test_require_world_writable_does_not_stop_creation(root):
    sink = LocalWriteSink(str(root), allowCreate=True, requireWorldWritable=True)
    upload(sink, "fresh.bin", b"x")
    assert (root / "fresh.bin").exists()


@pytest.mark.skipif(IS_ROOT, reason="root may write any file")
def test_read_only_file_is_refused(root):
    target = root / "ro.bin"
    target.write_bytes(b"keep")
    target.chmod(0o444)
    assert refusal(LocalWriteSink(str(root), allowCreate=True), "ro.bin")[0] == 2
    assert target.read_bytes() == b"keep"


def test_read_only_file_is_refused_by_access_check(root, monkeypatch):
    """The same rule, shown as root too: what os.access says decides."""
    target = root / "ro.bin"
    target.write_bytes(b"keep")
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    assert refusal(LocalWriteSink(str(root), allowCreate=True), "ro.bin")[0] == 2


@pytest.mark.skipif(not IS_ROOT, reason="only root can give files away")
def test_overwritten_file_keeps_its_owner_when_running_as_root(root):
    target = root / "owned.bin"
    target.write_bytes(b"old")
    os.chown(target, 1234, 5678)
    upload(LocalWriteSink(str(root), allowCreate=False), "owned.bin", b"new")
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert target.read_bytes() == b"new"


# -- one upload per name -------------------------------------------------------------


def test_concurrent_upload_of_the_same_name_is_refused(root):
    sink = LocalWriteSink(str(root), allowCreate=True)
    first = sink.openWrite(request("same.bin"))
    for spelling in ("same.bin", "/same.bin", "./same.bin", "x/../same.bin"):
        if spelling.startswith("x/"):
            (root / "x").mkdir(exist_ok=True)
        assert refusal(sink, spelling) == (2, "File is being uploaded")
    first.write(b"1")
    first.commit()
    second = sink.openWrite(request("same.bin"))  # free again
    second.abort()
    third = sink.openWrite(request("same.bin"))
    third.abort()
    assert sink.uploading == set()


def test_other_names_upload_side_by_side(root):
    sink = LocalWriteSink(str(root), allowCreate=True)
    a = sink.openWrite(request("a.bin"))
    b = sink.openWrite(request("b.bin"))
    b.write(b"B")
    a.write(b"A")
    a.commit()
    b.commit()
    assert (root / "a.bin").read_bytes() == b"A"
    assert (root / "b.bin").read_bytes() == b"B"


# -- abort and failures -------------------------------------------------------------------


def test_abort_leaves_nothing_and_the_old_file_intact(root):
    target = root / "keep.bin"
    target.write_bytes(b"good")
    sink = LocalWriteSink(str(root), allowCreate=True)
    file = sink.openWrite(request("keep.bin"))
    file.write(b"half of someth")
    file.abort()
    file.abort()  # twice is harmless
    assert target.read_bytes() == b"good"
    assert temporaries(root) == []
    assert sink.uploading == set()
    with pytest.raises(RequestRefused):
        file.commit()
    assert target.read_bytes() == b"good"


def test_abort_after_commit_changes_nothing(root):
    sink = LocalWriteSink(str(root), allowCreate=True)
    file = upload(sink, "f.bin", b"stored")
    file.abort()
    assert (root / "f.bin").read_bytes() == b"stored"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOSPC, (3, "Disk full or allocation exceeded")),
        (errno.EDQUOT, (3, "Disk full or allocation exceeded")),
        (errno.EFBIG, (3, "Disk full or allocation exceeded")),
        (errno.EACCES, (2, "Access violation")),
        (errno.EROFS, (2, "Access violation")),
        (errno.EIO, (0, "Write error")),
    ],
)
def test_write_errors_map_to_tftp_errors(root, monkeypatch, code, expected):
    target = root / "f.bin"
    target.write_bytes(b"old")
    sink = LocalWriteSink(str(root), allowCreate=True)
    file = sink.openWrite(request("f.bin"))

    def failing(fd: int, data: Any) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(RequestRefused) as info:
        file.write(b"data")
    monkeypatch.undo()
    assert (info.value.code, info.value.message) == expected
    assert info.value.reason == {3: "disk_full", 2: "access_denied", 0: "aborted"}[expected[0]]
    file.abort()
    assert target.read_bytes() == b"old"
    assert temporaries(root) == []


def test_short_writes_are_completed(root, monkeypatch):
    realWrite = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: realWrite(fd, bytes(data[:3])))
    sink = LocalWriteSink(str(root), allowCreate=True)
    file = sink.openWrite(request("f.bin"))
    file.write(b"0123456789")
    monkeypatch.undo()
    file.commit()
    assert (root / "f.bin").read_bytes() == b"0123456789"


def test_disk_full_at_fsync_is_error_3_and_cleans_up(root, monkeypatch):
    target = root / "f.bin"
    target.write_bytes(b"old")
    file = LocalWriteSink(str(root), allowCreate=True).openWrite(request("f.bin"))
    file.write(b"new")

    def failing(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(RequestRefused) as info:
        file.commit()
    assert info.value.code == 3
    assert target.read_bytes() == b"old"
    assert temporaries(root) == []


def test_target_turned_into_a_folder_meanwhile(root):
    sink = LocalWriteSink(str(root), allowCreate=True)
    file = sink.openWrite(request("f.bin"))
    file.write(b"x")
    (root / "f.bin").mkdir()
    (root / "f.bin" / "inside").write_bytes(b"")
    with pytest.raises(RequestRefused) as info:
        file.commit()
    assert info.value.code == 2
    assert temporaries(root) == []
    assert sink.uploading == set()


def test_unwritable_folder(root, monkeypatch):
    import tempfile

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    sink = LocalWriteSink(str(root), allowCreate=True)
    assert refusal(sink, "f.bin") == (2, "Access violation")
    assert sink.uploading == set()


# -- names that are refused -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../outside.bin",
        "/../../outside.bin",
        "..\\outside.bin",
        "sub/../../outside.bin",
        "../root/comes-back.bin",  # would tell the root's own name, as reads refuse it
        "",
        "/",
        "sub/",
        ".",
        "..",
        "a\0b",
        ".x.bin.abcd1234" + TEMPORARY_SUFFIX,
    ],
)
def test_bad_names_are_access_violations(root, name):
    (root / "sub").mkdir()
    assert refusal(LocalWriteSink(str(root), allowCreate=True), name) == (2, "Access violation")
    assert not (root.parent / "outside.bin").exists()


def test_symlink_escaping_the_root_is_refused(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"safe")
    (root / "link").symlink_to(outside / "victim")
    (root / "dirlink").symlink_to(outside)
    sink = LocalWriteSink(str(root), allowCreate=True)
    assert refusal(sink, "link")[0] == 2
    assert refusal(sink, "dirlink/victim")[0] == 2
    assert refusal(sink, "dirlink/new")[0] == 2
    assert (outside / "victim").read_bytes() == b"safe"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_symlink_inside_the_root_is_written_through(root):
    (root / "real.cfg").write_bytes(b"old")
    (root / "alias.cfg").symlink_to("real.cfg")
    upload(LocalWriteSink(str(root), allowCreate=False), "alias.cfg", b"new")
    assert (root / "alias.cfg").is_symlink()
    assert (root / "real.cfg").read_bytes() == b"new"


def test_http_relay_link_is_refused(root):
    (root / "remote.bin").symlink_to("http://example.com/remote.bin")
    assert refusal(LocalWriteSink(str(root), allowCreate=True), "remote.bin")[0] == 2


def test_folder_and_fifo_are_refused(root):
    (root / "folder").mkdir()
    os.mkfifo(root / "pipe")
    sink = LocalWriteSink(str(root), allowCreate=True)
    assert refusal(sink, "folder")[0] == 2
    assert refusal(sink, "pipe")[0] == 2  # and it did not hang


def test_sidecar_names_are_protected(root):
    (root / "fw.bin").write_bytes(b"firmware")
    (root / "fw.bin.log").write_bytes(b"a line\n")
    sink = LocalWriteSink(str(root), allowCreate=True)
    assert refusal(sink, "fw.bin.log") == (2, "Access violation")
    assert (root / "fw.bin.log").read_bytes() == b"a line\n"
    upload(sink, "other.log", b"no file beside it")  # not a sidecar
    upload(LocalWriteSink(str(root), allowCreate=True, protectSidecars=False), "fw.bin.log", b"x")
    assert (root / "fw.bin.log").read_bytes() == b"x"


# -- helpers ---------------------------------------------------------------------------------


def test_is_temporary_name():
    assert isTemporaryName(".fw.bin.k2j4h5g6" + TEMPORARY_SUFFIX)
    assert isTemporaryName("/srv/tftp/sub/.a.x" + TEMPORARY_SUFFIX)
    assert isTemporaryName("sub\\.a.x" + TEMPORARY_SUFFIX)
    assert not isTemporaryName("fw.bin" + TEMPORARY_SUFFIX)  # not hidden
    assert not isTemporaryName(".hidden.bin")
    assert not isTemporaryName(".x" + TEMPORARY_SUFFIX + "/file")


def test_check_upload_size():
    checkUploadSize(None, 100)
    checkUploadSize(10**12, 0)  # 0: no limit
    checkUploadSize(100, 100)
    with pytest.raises(RequestRefused) as info:
        checkUploadSize(101, 100)
    assert (info.value.code, info.value.message, info.value.reason) == (
        3,
        "Disk full or allocation exceeded",
        "disk_full",
    )


def test_refusal_for():
    assert refusalFor(OSError(errno.ENOSPC, "x")).code == 3
    assert refusalFor(OSError(errno.EPERM, "x")).code == 2
    assert refusalFor(OSError(errno.EINVAL, "x")).code == 0


def test_dev_null_accepts_everything_and_keeps_nothing(tmp_path):
    sink = DevNullSink()
    for name in ("anything.bin", "../../etc/passwd", "x.log"):
        file = sink.openWrite(request(name))
        assert file.path is None
        file.write(b"12345")
        file.write(b"678")
        assert file.size == 8
        file.commit()
        file.abort()
    assert list(tmp_path.iterdir()) == []
