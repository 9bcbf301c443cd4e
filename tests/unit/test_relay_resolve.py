"""URL symlinks in the resolver: where a walk meets a URL, and the safety rules around it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctftp.errors import RequestRefused
from ctftp.resolver import (
    RemoteTarget,
    fallbackTarget,
    parseURLLink,
    resolveExisting,
    resolveRead,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    return served


def resolve(root: Path, name: str, relay: bool = True) -> str | RemoteTarget:
    return resolveRead([str(root)], name, protectSidecars=True, relay=relay)


def code(root: Path, name: str, relay: bool = True) -> int:
    with pytest.raises(RequestRefused) as caught:
        resolve(root, name, relay)
    return caught.value.code


@pytest.mark.parametrize(
    "target, expected",
    [
        ("http://h/x", RemoteTarget("http://h/x")),
        ("HTTPS://h/x", RemoteTarget("https://h/x")),
        ("http+nocache://h/x", RemoteTarget("http://h/x", nocache=True)),
        (
            "https+NoCompress+nocache://h:8443/x",
            RemoteTarget("https://h:8443/x", nocache=True, nocompress=True),
        ),
        ("http+later+nocompress://h/", RemoteTarget("http://h/", nocompress=True)),
        ("plain/file", None),
        ("../up", None),
        ("/abs/path", None),
        ("http:/not-a-url", None),
    ],
)
def test_parse_url_link(target: str, expected: RemoteTarget | None) -> None:
    assert parseURLLink(target) == expected


def test_other_schemes_are_refused() -> None:
    with pytest.raises(RequestRefused) as caught:
        parseURLLink("ftp://h/x")
    assert caught.value.code == 2


def test_file_link_and_folder_link(root: Path) -> None:
    (root / "fw.bin").symlink_to("http://origin/fw.bin")
    (root / "phones").symlink_to("https+nocache://origin/cfg/")
    (root / "noslash").symlink_to("http://origin/base")
    assert resolve(root, "/fw.bin") == RemoteTarget("http://origin/fw.bin")
    assert resolve(root, "phones/a/SEP 1.cnf.xml") == RemoteTarget(
        "https://origin/cfg/a/SEP%201.cnf.xml", nocache=True
    )
    assert resolve(root, "phones\\x?y#z%") == RemoteTarget(
        "https://origin/cfg/x%3Fy%23z%25", nocache=True
    )
    assert resolve(root, "noslash/./b//c") == RemoteTarget("http://origin/base/b/c")
    assert resolve(root, "phones") == RemoteTarget("https://origin/cfg/", nocache=True)


def test_dot_dot_after_a_url_link_is_refused(root: Path) -> None:
    (root / "phones").symlink_to("http://origin/cfg/")
    assert code(root, "phones/../../etc/passwd") == 2
    assert code(root, "phones/a/..") == 2


def test_link_reached_through_local_links(root: Path) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "remote").symlink_to("http://origin/r/")
    (root / "alias").symlink_to("sub")
    (root / "chain").symlink_to("alias/remote")
    assert resolve(root, "alias/remote/x") == RemoteTarget("http://origin/r/x")
    assert resolve(root, "chain/y") == RemoteTarget("http://origin/r/y")


def test_url_link_outside_the_root_is_an_escape(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").symlink_to("http://origin/secret")
    (root / "out").symlink_to(str(tmp_path))
    assert code(root, "out/outside") == 2
    assert code(root, "../outside") == 2


def test_relay_off_refuses_url_links_like_escapes(root: Path) -> None:
    (root / "fw.bin").symlink_to("http://origin/fw.bin")
    assert code(root, "fw.bin", relay=False) == 2
    with pytest.raises(RequestRefused) as caught:
        resolveExisting([str(root)], "fw.bin", protectSidecars=False)
    assert caught.value.code == 2


def test_local_resolution_is_unchanged(root: Path, tmp_path: Path) -> None:
    (root / "a").mkdir()
    (root / "a" / "f.txt").write_text("x")
    (root / "link").symlink_to("a/f.txt")
    (root / "loop").symlink_to("loop")
    (tmp_path / "secret").write_text("s")
    (root / "esc").symlink_to("../secret")
    real = os.path.realpath(root)
    assert resolve(root, "a/f.txt") == f"{real}/a/f.txt"
    assert resolve(root, "link") == f"{real}/a/f.txt"
    assert resolve(root, "missing/../a/f.txt") == f"{real}/a/f.txt"
    assert code(root, "missing.txt") == 1
    assert code(root, "esc") == 2
    assert code(root, "../root/../secret") == 2
    assert code(root, "loop") == 2
    (root / "fw").write_text("f")
    (root / "fw.log").write_text("l")
    assert code(root, "fw.log") == 2


def test_search_path_and_url_in_a_later_root(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (second / "fw.bin").symlink_to("http://origin/fw.bin")
    (first / "local.bin").write_text("l")
    roots = [str(first), str(second)]
    assert resolveRead(roots, "fw.bin", protectSidecars=False, relay=True) == RemoteTarget(
        "http://origin/fw.bin"
    )
    assert resolveRead(roots, "local.bin", protectSidecars=False, relay=True) == os.path.join(
        os.path.realpath(first), "local.bin"
    )


@pytest.mark.parametrize(
    "base, name, url",
    [
        ("http://h/tftp", "a/b.cfg", "http://h/tftp/a/b.cfg"),
        ("http://h/tftp/", "/a b.cfg", "http://h/tftp/a%20b.cfg"),
        ("http+nocache://h", "x/./y/../z", "http://h/x/z"),
        ("https://h/p/", "dir\\file", "https://h/p/dir/file"),
    ],
)
def test_fallback_target(base: str, name: str, url: str) -> None:
    assert fallbackTarget(base, name).url == url


def test_fallback_refuses_escapes() -> None:
    with pytest.raises(RequestRefused) as caught:
        fallbackTarget("http://h/", "../x")
    assert caught.value.code == 2
