"""Addresses: the fast path for plain addresses agrees with email-validator's full check."""

from __future__ import annotations

import pytest

from newsletter.addresses import _validated, normalise_address
from newsletter.errors import SubscriberError

CASES = [
    "Ann@EXAMPLE.org",
    "ann.archer+news@example.org",
    "o'brien@example.co.uk",
    "-bob@example.org",
    "a" * 64 + "@example.org",
    "a" * 65 + "@example.org",
    "x@" + "a" * 63 + ".org",
    "x@" + ("a" * 60 + ".") * 4 + "org",
    "ann..archer@example.org",
    ".ann@example.org",
    "ann.@example.org",
    "ann@localhost",
    "ann@example",
    "ann@example.invalid",
    "ann@exa_mple.org",
    "ann@-example.org",
    "ann@example..org",
    "ann@bücher.de",
    "ann@xn--bcher-kva.de",
    "anné@example.org",
    '"ann archer"@example.org',
    "ann@@example.org",
    "ann@[192.0.2.1]",
    "ann@example.org.",
    "ann@EXAMPLE.ORG",
]


@pytest.mark.parametrize("address", CASES)
def test_fast_path_agrees_with_the_full_check(address: str) -> None:
    try:
        expected: str | Exception = _validated(address)
    except SubscriberError as e:
        expected = e
    try:
        got: str | Exception = normalise_address(address)
    except SubscriberError as e:
        got = e
    assert str(got) == str(expected)
    assert type(got) is type(expected)
