"""Tests for ctftp.webclient's URL helpers: credentials out of URLs, URLs fit for logs."""

from __future__ import annotations

import pytest

from ctftp.webclient import displayURL, splitCredentials


@pytest.mark.parametrize(
    ("url", "bare", "auth"),
    [
        ("http://h/p", "http://h/p", None),
        ("http://u:p@h:8080/p?q=1", "http://h:8080/p?q=1", ("u", "p")),
        ("https://u@h/p", "https://h/p", ("u", "")),
        ("http://u:p@ss@h/p", "http://h/p", ("u", "p@ss")),  # the last @ ends the user info
        ("http://a%20b:c%3Ad%40e@[::1]:81/x", "http://[::1]:81/x", ("a b", "c:d@e")),
    ],
)
def test_split_credentials(url: str, bare: str, auth: tuple[str, str] | None) -> None:
    assert splitCredentials(url) == (bare, auth)


@pytest.mark.parametrize(
    ("url", "withQuery", "withoutQuery"),
    [
        ("http://h/p?q=1#f", "http://h/p?q=1", "http://h/p"),
        ("http://u:secret@h:81/p?t=x", "http://***@h:81/p?t=x", "http://***@h:81/p"),
        ("https://u:p@[::1]/", "https://***@[::1]/", "https://***@[::1]/"),
        ("http://[::1/p", "http://(unparsable URL)", "http://(unparsable URL)"),
    ],
)
def test_display_url(url: str, withQuery: str, withoutQuery: str) -> None:
    assert displayURL(url) == withQuery
    assert displayURL(url, query=False) == withoutQuery
