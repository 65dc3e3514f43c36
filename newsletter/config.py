"""Settings: the real environment wins, then ./.env, then the defaults below.

A newsletter is a directory. Relative paths in settings are taken from that directory, so a
command behaves the same whichever way it was started.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, tzinfo
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from .addresses import normalise_address
from .errors import ConfigError, SubscriberError
from .headers import has_control_characters
from .vocab import RELAY_SERVICES, TransportKind

SmtpSecurity = Literal["starttls", "ssl", "none"]
SMTP_SECURITY_CHOICES: tuple[SmtpSecurity, ...] = ("starttls", "ssl", "none")
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}
IMAP_DEFAULT_PORTS: dict[str, int] = {"starttls": 143, "ssl": 993, "none": 143}
MAX_LOCAL_PART = 64  # RFC 5321
PREFIX = "NEWSLETTER_"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about one newsletter directory."""

    directory: Path
    db_path: Path
    posts_dir: Path
    templates_dir: Path
    outbox: Path
    title: str
    from_address: Address | None
    base_url: str
    secret_keys: tuple[str, ...]
    postal_address: str
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: SmtpSecurity = "starttls"
    smtp_timeout: float = 30.0
    smtp_connections: int = 4
    smtp_rate: float | None = None
    smtp_messages_per_connection: int = 1000
    smtp_max_attempts: int = 4
    smtp_retry_delay: float = 2.0
    max_consecutive_failures: int = 10
    bounce_limit: int = 3
    dkim_key_file: Path | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    subscribe_limit_per_hour: int = 5
    feed_url: str | None = None  # the blog's RSS or Atom feed, for `pull`
    timezone: tzinfo = UTC  # a post's bare date is midnight here
    typographer: bool = True  # typographic quotes and dashes in posts
    logo_url: str | None = None
    # Where bounces, complaints and mailto unsubscribes come back (#13); None: as before.
    bounce_address: str | None = None
    imap_host: str | None = None
    imap_port: int = 993
    imap_username: str | None = None
    imap_password: str | None = None
    imap_security: SmtpSecurity = "ssl"
    imap_folder: str = "INBOX"
    imap_done_folder: str = "Processed"
    breaker_deliveries: int = 20
    # The weekly digest goes out on this day (0 Monday .. 6 Sunday) at this hour, in `timezone`.
    digest_day: int = 6
    digest_hour: int = 8
    # NEWSLETTER_TRANSPORT (#22): smtp, ses or postmark; unset, SMTP if a host is set, else
    # the outbox. The relays' credentials are never shown (see __repr__).
    transport: TransportKind = "outbox"
    ses_region: str | None = None
    ses_access_key_id: str | None = None
    ses_secret_access_key: str | None = None
    ses_configuration_set: str | None = None
    ses_queue_url: str | None = None
    postmark_token: str | None = None
    postmark_account_token: str | None = None  # only for `doctor`'s sender-signature check
    postmark_webhook_password: str | None = None  # `serve`'s /webhooks/postmark, basic auth
    ses_topic_arn: str | None = None  # `serve`'s /webhooks/ses takes this SNS topic only
    postmark_stream: str = "broadcast"
    postmark_api_url: str = "https://api.postmarkapp.com"

    def __repr__(self) -> str:
        # Never let a password or key reach a log line or a traceback.
        return f"Settings(directory={str(self.directory)!r})"

    @property
    def sender(self) -> Address:
        """The From address; sending without one is a configuration error."""
        if self.from_address is None:
            raise ConfigError(
                "NEWSLETTER_FROM is not set: add e.g. NEWSLETTER_FROM="
                "'Jane Author <jane@example.org>' to .env"
            )
        return self.from_address

    @property
    def uses_smtp(self) -> bool:
        return self.transport == "smtp"

    @property
    def uses_outbox(self) -> bool:
        """Nothing to send through: each message becomes a file in the outbox."""
        return self.transport == "outbox"


T = TypeVar("T")


def load_settings(
    directory: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the settings of the newsletter in `directory` (the current one by default)."""
    directory = (directory or Path.cwd()).resolve()
    environ = os.environ if environ is None else environ
    dotenv_file = directory / ".env"
    try:
        from_file = {k: v for k, v in dotenv_values(dotenv_file).items() if v is not None}
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{dotenv_file} is not UTF-8 text (byte {e.start}); save it as UTF-8"
        ) from e
    values = {**from_file, **{k: v for k, v in environ.items() if k.startswith(PREFIX)}}

    def get(name: str, default: str | None = None) -> str | None:
        value = values.get(PREFIX + name)
        if value is None or value.strip() == "":
            return default
        if has_control_characters(value.strip()):
            # These go into headers and pages: a line break would be a header injection.
            raise ConfigError(f"{PREFIX}{name} must be one line without control characters")
        return value.strip()

    def parse(name: str, convert: Callable[[str], T], default: T, what: str) -> T:
        raw = get(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name} must be {what}, not {raw!r}") from None

    def path(name: str, default: str) -> Path:
        return directory / Path(get(name, default) or default)

    security = (get("SMTP_SECURITY", "starttls") or "starttls").lower()
    if security not in SMTP_SECURITY_CHOICES:
        raise ConfigError(
            f"{PREFIX}SMTP_SECURITY must be one of {', '.join(SMTP_SECURITY_CHOICES)}, "
            f"not {security!r}"
        )
    from_address = _parse_from(get("FROM"))
    dkim_key_file = get("DKIM_KEY_FILE")
    secret = get("SECRET_KEY")
    bounce_address = _parse_bounce_address(get("BOUNCE_ADDRESS"))
    imap_security = (get("IMAP_SECURITY", "ssl") or "ssl").lower()
    if imap_security not in SMTP_SECURITY_CHOICES:
        raise ConfigError(
            f"{PREFIX}IMAP_SECURITY must be one of {', '.join(SMTP_SECURITY_CHOICES)}, "
            f"not {imap_security!r}"
        )

    utc: tzinfo = UTC
    return Settings(
        directory=directory,
        db_path=path("DB", "newsletter.db"),
        posts_dir=path("POSTS_DIR", "posts"),
        templates_dir=path("TEMPLATES_DIR", "templates"),
        outbox=path("OUTBOX", "outbox"),
        title=get("TITLE") or (from_address.display_name if from_address else "") or "Newsletter",
        from_address=from_address,
        base_url=_parse_base_url(get("BASE_URL", DEFAULT_BASE_URL) or ""),
        secret_keys=tuple(k.strip() for k in secret.split(",") if k.strip()) if secret else (),
        postal_address=get("POSTAL_ADDRESS", "") or "",
        smtp_host=get("SMTP_HOST"),
        smtp_port=parse("SMTP_PORT", _port, DEFAULT_PORTS[security], "a port number (1-65535)"),
        smtp_username=get("SMTP_USERNAME"),
        smtp_password=values.get(PREFIX + "SMTP_PASSWORD") or None,
        smtp_security=_choice(security),
        smtp_timeout=parse("SMTP_TIMEOUT", _positive(float), 30.0, "a number of seconds"),
        smtp_connections=parse(
            "SMTP_CONNECTIONS", _at_least(1, 1000), 4, "a whole number from 1 to 1000"
        ),
        smtp_rate=parse("SMTP_RATE", _positive(float), None, "messages per second, above 0"),
        smtp_messages_per_connection=parse(
            "SMTP_MESSAGES_PER_CONNECTION", _at_least(1), 1000, "a whole number of 1 or more"
        ),
        smtp_max_attempts=parse("SMTP_MAX_ATTEMPTS", _at_least(1, 20), 4, "1 to 20"),
        smtp_retry_delay=parse(
            "SMTP_RETRY_DELAY", _at_least_float(0.0), 2.0, "a number of seconds (0 or more)"
        ),
        max_consecutive_failures=parse(
            "MAX_CONSECUTIVE_FAILURES", _at_least(1), 10, "a whole number of 1 or more"
        ),
        bounce_limit=parse("BOUNCE_LIMIT", _at_least(1), 3, "a whole number of 1 or more"),
        dkim_key_file=directory / dkim_key_file if dkim_key_file else None,
        dkim_selector=get("DKIM_SELECTOR"),
        dkim_domain=get("DKIM_DOMAIN"),
        subscribe_limit_per_hour=parse(
            "SUBSCRIBE_LIMIT_PER_HOUR", _at_least(1), 5, "a whole number of 1 or more"
        ),
        feed_url=get("FEED_URL"),
        timezone=parse("TIMEZONE", _zone, utc, "a time zone such as UTC or Europe/London"),
        typographer=parse("TYPOGRAPHER", _yes_no, True, "true or false"),
        logo_url=parse("LOGO_URL", _image_url, None, "an http(s) URL of an image"),
        bounce_address=bounce_address,
        imap_host=get("IMAP_HOST"),
        imap_port=parse(
            "IMAP_PORT", _port, IMAP_DEFAULT_PORTS[imap_security], "a port number (1-65535)"
        ),
        imap_username=get("IMAP_USERNAME") or bounce_address,
        imap_password=values.get(PREFIX + "IMAP_PASSWORD") or None,
        imap_security=_choice(imap_security),
        imap_folder=get("IMAP_FOLDER", "INBOX") or "INBOX",
        imap_done_folder=get("IMAP_DONE_FOLDER", "Processed") or "Processed",
        breaker_deliveries=parse(
            "BREAKER_DELIVERIES", _at_least(1), 20, "a whole number of 1 or more"
        ),
        digest_day=parse("DIGEST_DAY", _weekday, 6, "a day of the week, such as sunday"),
        digest_hour=parse("DIGEST_HOUR", _at_least(0, 23), 8, "an hour from 0 to 23"),
        transport=_transport(get("TRANSPORT"), smtp_host=get("SMTP_HOST")),
        ses_region=get("SES_REGION"),
        ses_access_key_id=get("SES_ACCESS_KEY_ID"),
        ses_secret_access_key=values.get(PREFIX + "SES_SECRET_ACCESS_KEY") or None,
        ses_configuration_set=get("SES_CONFIGURATION_SET"),
        ses_queue_url=get("SES_QUEUE_URL"),
        postmark_token=values.get(PREFIX + "POSTMARK_TOKEN") or None,
        postmark_account_token=values.get(PREFIX + "POSTMARK_ACCOUNT_TOKEN") or None,
        postmark_webhook_password=values.get(PREFIX + "POSTMARK_WEBHOOK_PASSWORD") or None,
        ses_topic_arn=get("SES_TOPIC_ARN"),
        postmark_stream=get("POSTMARK_STREAM", "broadcast") or "broadcast",
        postmark_api_url=parse(
            "POSTMARK_API_URL", _api_url, "https://api.postmarkapp.com", "an http(s) URL"
        ),
    )


def _transport(raw: str | None, *, smtp_host: str | None) -> TransportKind:
    """NEWSLETTER_TRANSPORT; unset, SMTP when a host is set, else the outbox (as before #22)."""
    if raw is None:
        return "smtp" if smtp_host else "outbox"
    word = raw.lower()
    if word == "smtp":
        if not smtp_host:
            raise ConfigError(
                f"{PREFIX}TRANSPORT=smtp needs {PREFIX}SMTP_HOST (unset both to write to the "
                "outbox)"
            )
        return "smtp"
    for service in RELAY_SERVICES:
        if word == service:
            return service
    raise ConfigError(
        f"{PREFIX}TRANSPORT must be one of smtp, {', '.join(RELAY_SERVICES)}, not {raw!r}"
    )


def _api_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(raw)
    return raw.rstrip("/")


def _choice(checked: str) -> SmtpSecurity:
    """A security setting already checked against SMTP_SECURITY_CHOICES, as its Literal."""
    return next(choice for choice in SMTP_SECURITY_CHOICES if choice == checked)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(raw: str) -> int:
    """`sunday`, `Sun` or `sun.`: the day's number, Monday 0."""
    word = raw.strip().rstrip(".").lower()
    for number, day in enumerate(WEEKDAYS):
        if len(word) >= 3 and day.startswith(word):
            return number
    raise ValueError(raw)


def _zone(raw: str) -> tzinfo:
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(raw) from None


def _yes_no(raw: str) -> bool:
    answers = {"true": True, "yes": True, "1": True, "on": True}
    answers.update({"false": False, "no": False, "0": False, "off": False})
    if raw.lower() not in answers:
        raise ValueError(raw)
    return answers[raw.lower()]


def _image_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in raw for c in ' <>"'):
        raise ValueError(raw)
    return raw


def _port(raw: str) -> int:
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(raw)
    return port


def _at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        number = int(raw)
        if number < low or (high is not None and number > high):
            raise ValueError(raw)
        return number

    return convert


def _at_least_float(low: float) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        number = float(raw)
        if not number >= low:  # also rejects nan
            raise ValueError(raw)
        return number

    return convert


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        number = kind(raw)
        if not number > 0:
            raise ValueError(raw)
        return number

    return convert


def _parse_from(raw: str | None) -> Address | None:
    if raw is None:
        return None
    if any(ord(c) < 32 for c in raw):
        raise ConfigError("NEWSLETTER_FROM must not contain control characters")
    name, addr = parseaddr(raw)
    try:
        email = normalise_address(addr or raw)
    except SubscriberError:
        raise ConfigError(
            f"NEWSLETTER_FROM must be an address like 'Jane Author <jane@example.org>', not {raw!r}"
        ) from None
    username, domain = email.rsplit("@", 1)
    return Address(display_name=name, username=username, domain=domain)


def _parse_base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or not raw.isascii()
        or any(c in raw for c in " <>\"'")
    ):
        hint = "" if raw.isascii() else " (write an international domain in its xn-- form)"
        raise ConfigError(
            f"NEWSLETTER_BASE_URL must be an http(s) URL such as https://news.example.org, "
            f"not {raw!r}{hint}"
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        # The web app's pages and forms live at the root of their site.
        raise ConfigError(
            f"NEWSLETTER_BASE_URL must be the root of a site (https://news.example.org), "
            f"not {raw!r}"
        )
    return raw.rstrip("/")


def _parse_bounce_address(raw: str | None) -> str | None:
    """The bounce mailbox; its local part must leave room for `+unsubscribe-TOKEN` (64 in all)."""
    from .tokens import MAIL_TOKEN_LENGTH
    from .verp import UNSUBSCRIBE_PREFIX

    if raw is None:
        return None
    try:
        address = normalise_address(raw)
    except SubscriberError:
        raise ConfigError(
            f"NEWSLETTER_BOUNCE_ADDRESS must be an address like bounces@news.example.org, "
            f"not {raw!r}"
        ) from None
    local = address.rsplit("@", 1)[0]
    room = MAX_LOCAL_PART - 1 - len(UNSUBSCRIBE_PREFIX) - MAIL_TOKEN_LENGTH
    if "+" in local or len(local) > room or not local.isascii():
        raise ConfigError(
            f"NEWSLETTER_BOUNCE_ADDRESS {address}: its local part must be ASCII, without '+', "
            f"and at most {room} characters, so that {local}+{UNSUBSCRIBE_PREFIX}TOKEN fits "
            f"the {MAX_LOCAL_PART} an address allows"
        )
    return address
