"""The server's log without readers' tokens: an unsubscribe or confirm link in a log line is
a key to that reader's subscription for whoever reads the log (and logs get shared)."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import uvicorn.config

# /unsubscribe/<token>, /confirm/<token>, /resubscribe/<token>: the token up to ? # or space.
_TOKEN_IN_PATH = re.compile(r"/(unsubscribe|confirm|resubscribe)/[^/?#\s\"]+")
REDACTED = "[token]"


def redact_tokens(text: str) -> str:
    return _TOKEN_IN_PATH.sub(rf"/\1/{REDACTED}", text)


class RedactTokens(logging.Filter):
    """Takes tokens out of a record's message and arguments (uvicorn's access line is built
    from its arguments: client, method, path, HTTP version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's own logging set-up, with every handler passing records through RedactTokens."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": f"{__name__}.RedactTokens"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    return config
