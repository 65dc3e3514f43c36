"""Every header value of every email passes here first: no control characters in a header.

Python's email package takes \\v, \\f, \\x1c, U+0085 and U+2028 for line breaks (str.splitlines)
and refuses the header with a traceback; NUL, ESC and DEL it writes out raw. Values the author
controls (a post's title, NEWSLETTER_TITLE) are refused with a one-line error naming the field;
a reader's name, written by other means than our checked entry points, is mended instead, so
that one bad row cannot stop a send.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import HeaderError

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control_characters(text: str) -> bool:
    return _FORBIDDEN.search(text) is not None


def check_header(field: str, value: str) -> str:
    """`value` unchanged if it may go into a header; a HeaderError naming `field` if not."""
    found = _FORBIDDEN.search(value)
    if found is not None:
        char = found.group()
        name = unicodedata.name(char, "a control character")
        raise HeaderError(
            f"{field} {value!r} holds U+{ord(char):04X} ({name}), which cannot go into an "
            "email header; remove it"
        )
    return value


def mend_header(value: str, replacement: str = " ") -> str:
    """`value` with each forbidden character replaced: for readers' names and addresses."""
    return _FORBIDDEN.sub(replacement, value)
