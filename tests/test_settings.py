"""Passwords in Redis URLs are never printed, whatever form the URL takes."""

from __future__ import annotations

import pytest

from streamcalc.settings import mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@host:6379/0", "redis://u:***@host:6379/0"),
        ("REDIS://u:pw@h/0", "REDIS://u:***@h/0"),
        ("Rediss://u:pw@h/0", "Rediss://u:***@h/0"),
        ("redis://u:p@ss@host/0", "redis://u:***@host/0"),
        ("redis://:pw@h", "redis://:***@h"),
        ("redis://token@h/0", "redis://***@h/0"),
        ("redis://host/0?password=secret&db=1", "redis://host/0?password=***&db=1"),
        ("redis://host/0?db=1&PassWord=secret", "redis://host/0?db=1&PassWord=***"),
        ("unix:///tmp/r.sock?password=x", "unix:///tmp/r.sock?password=***"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ],
)
def test_every_form_of_password_is_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_urls_inside_messages_are_masked() -> None:
    text = "cannot reach redis://a:s3cret@h:1/0 (and rediss://b:t0p@h2/0?password=x)"
    masked = mask_url(text)
    assert "s3cret" not in masked and "t0p" not in masked and "password=x" not in masked
    assert masked.startswith("cannot reach redis://a:***@h:1/0 ")
