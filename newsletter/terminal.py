"""Text from outside (server replies, names, titles) made safe to print on a terminal.

An escape sequence in a mail server's reply or a reader's name would otherwise reach the
terminal raw: it can move the cursor, retitle the window or hide the rest of the line.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, line and paragraph separators, and the bidirectional overrides
# that make a line read differently from what it holds.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with each control character shown as its escape (ESC becomes \\x1b)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
