"""`newsletter doctor`: is this newsletter set up as Gmail's and Yahoo's bulk sender rules ask?

Those rules (2024) want mail signed (DKIM) for a domain aligned with From, From on the sender's
own domain, one-click unsubscribe (RFC 8058: an https link that takes a POST), and CAN-SPAM adds
a postal address. Each check returns a record; the CLI prints them. A `missing` check is one
that the rules require; a `warning` is worth fixing but mail can go out without it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from . import db as store
from .config import Settings
from .dkim import KEY_BITS, signer_from_settings
from .errors import NewsletterError
from .files import shared_with_others
from .mailer import SMTPTransport

CheckStatus = Literal["ok", "warning", "missing"]
MIN_SECRET_KEY_LENGTH = 32

# Their DMARC policies tell receivers to reject or quarantine mail From their domains that
# their own servers did not send: a newsletter cannot be From one of these.
MAILBOX_PROVIDER_DOMAINS = frozenset(
    {
        "aol.com",
        "gmail.com",
        "googlemail.com",
        "hotmail.com",
        "icloud.com",
        "live.com",
        "mac.com",
        "me.com",
        "msn.com",
        "outlook.com",
        "yahoo.com",
        "ymail.com",
    }
)
# RFC 2606 / 6761 names that never receive or send real mail.
RESERVED_DOMAINS = ("example.com", "example.net", "example.org", "localhost")
RESERVED_SUFFIXES = (".example", ".invalid", ".localhost", ".test")


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it stands, and what to do."""

    name: str
    status: CheckStatus
    message: str


def run_checks(settings: Settings, *, smtp: bool = False, imap: bool = False) -> list[Check]:
    """Every check, in the order a reader of the report fixes them; `smtp` and `imap` also log
    in to the SMTP server and the bounce mailbox."""
    return [
        check_from(settings),
        *check_dkim(settings),
        check_base_url(settings),
        check_secret_key(settings),
        check_postal_address(settings),
        *(
            check_relay(settings, login=smtp)
            if settings.transport in ("ses", "postmark")
            else [check_smtp(settings, login=smtp)]
        ),
        check_bounces(settings, login=imap),
        *check_posts(settings),
        check_file_permissions(settings),
    ]


def missing(checks: list[Check]) -> list[Check]:
    return [check for check in checks if check.status == "missing"]


def check_from(settings: Settings) -> Check:
    sender = settings.from_address
    if sender is None:
        return Check(
            "From",
            "missing",
            "NEWSLETTER_FROM is not set: e.g. NEWSLETTER_FROM='Jane Author <jane@example.org>'",
        )
    domain = sender.domain.lower()
    if _is_mailbox_provider(domain):
        return Check(
            "From",
            "missing",
            f"{sender.addr_spec} is on {domain}, whose DMARC policy makes receivers refuse it "
            "from other servers: send From an address on your own domain",
        )
    if domain in RESERVED_DOMAINS or domain.endswith(RESERVED_SUFFIXES):
        return Check(
            "From",
            "warning",
            f"{sender.addr_spec}: {domain} is a reserved example domain; no receiver trusts it",
        )
    return Check("From", "ok", f"{sender.addr_spec} (domain {domain})")


def check_dkim(settings: Settings) -> list[Check]:
    """DKIM configured, its key readable and strong; its domain aligned with From's."""
    try:
        signer = signer_from_settings(settings)
    except NewsletterError as e:
        return [Check("DKIM", "missing", str(e))]
    if signer is None:
        return [
            Check(
                "DKIM",
                "missing",
                "not configured: run `newsletter dkim generate`, publish the DNS record it "
                "prints, then set NEWSLETTER_DKIM_KEY_FILE, _SELECTOR and _DOMAIN",
            )
        ]
    selector, domain = signer.selector.decode(), signer.domain.decode()
    key = f"{signer.key_bits}-bit key {settings.dkim_key_file}"
    record = f"TXT record {selector}._domainkey.{domain}"
    if signer.key_bits < KEY_BITS:
        checks = [Check("DKIM", "warning", f"{key} is weak: make a {KEY_BITS}-bit one ({record})")]
    else:
        checks = [Check("DKIM", "ok", f"signs as d={domain} with the {key} ({record})")]
    if settings.from_address is not None:
        from_domain = settings.from_address.domain.lower()
        if _aligned(domain, from_domain):
            checks.append(Check("DKIM alignment", "ok", f"d={domain} aligns with From"))
        else:
            checks.append(
                Check(
                    "DKIM alignment",
                    "warning",
                    f"d={domain} is not the From domain {from_domain}, nor its parent or "
                    "subdomain: DMARC then rests on SPF alone",
                )
            )
    return checks


def check_base_url(settings: Settings) -> Check:
    """The unsubscribe link must be https (RFC 8058) and reachable by readers."""
    parts = urlsplit(settings.base_url)
    host = parts.hostname or ""
    if parts.scheme != "https":
        return Check(
            "Base URL",
            "missing",
            f"{settings.base_url} is not https: one-click unsubscribe (RFC 8058) needs an "
            "https link; set NEWSLETTER_BASE_URL to where `newsletter serve` is reached",
        )
    if _is_local(host):
        return Check(
            "Base URL",
            "missing",
            f"{settings.base_url} is this machine or a private network: readers' "
            "unsubscribe links cannot reach it",
        )
    return Check("Base URL", "ok", f"{settings.base_url} (links to unsubscribe and read online)")


def check_secret_key(settings: Settings) -> Check:
    """Readers' links are signed; the key is set, or kept in the database."""
    if settings.secret_keys:
        shortest = min(len(key) for key in settings.secret_keys)
        if shortest < MIN_SECRET_KEY_LENGTH:
            return Check(
                "Secret key",
                "warning",
                f"NEWSLETTER_SECRET_KEY has a key of {shortest} characters; use "
                f"{MIN_SECRET_KEY_LENGTH} or more random ones",
            )
        count = len(settings.secret_keys)
        return Check(
            "Secret key", "ok", f"set in NEWSLETTER_SECRET_KEY ({count} key{'s' * (count > 1)})"
        )
    stored = None
    if settings.db_path.is_file():  # a check must not create the database
        try:
            database = store.open_db(settings.db_path)
        except NewsletterError as e:
            return Check("Secret key", "missing", str(e))
        try:
            stored = store.read_stored_secret_key(database)
        finally:
            database.close()
    if stored is None:
        return Check(
            "Secret key",
            "warning",
            "none yet: one is made at the first send and kept in the database; "
            "or set NEWSLETTER_SECRET_KEY",
        )
    return Check("Secret key", "ok", f"kept in the database {settings.db_path.name}")


def check_postal_address(settings: Settings) -> Check:
    if not settings.postal_address:
        return Check(
            "Postal address",
            "missing",
            "NEWSLETTER_POSTAL_ADDRESS is not set; CAN-SPAM asks for one in every bulk email",
        )
    return Check("Postal address", "ok", settings.postal_address)


def check_relay(settings: Settings, *, login: bool) -> list[Check]:
    """SES or Postmark: with `login`, the account's credentials and sending status, one line
    each (the relays' code loads only then)."""
    name = "SES" if settings.transport == "ses" else "Postmark"
    if not login:
        return [
            Check(
                name,
                "ok",
                f"mail goes through {name}'s API; `doctor --smtp` asks it for the account's status",
            )
        ]
    if settings.transport == "ses":
        from .relays.ses import check_account as check_ses

        findings = check_ses(settings, readers=_active_readers(settings))
    else:
        from .relays.postmark import check_account

        findings = check_account(settings)
    return [Check(name, f.status, f.message) for f in findings]


def _active_readers(settings: Settings) -> int | None:
    """How many readers a send would mail (None: no database yet; a check never makes one)."""
    if not settings.db_path.is_file():
        return None
    try:
        with store.connect(settings.db_path) as database:
            return store.count_subscribers(database)
    except NewsletterError:
        return None


def check_smtp(settings: Settings, *, login: bool) -> Check:
    """Where mail goes; with `login`, connect and log in without sending anything."""
    if not settings.uses_smtp:
        status: CheckStatus = "missing" if login else "warning"
        return Check(
            "SMTP",
            status,
            "NEWSLETTER_SMTP_HOST is not set: mail goes to the outbox, not to readers",
        )
    transport = SMTPTransport(settings)
    if not login:
        if (
            settings.smtp_security == "none"
            and settings.smtp_username
            and not _is_local(transport.host)
        ):
            return Check(
                "SMTP",
                "warning",
                f"{transport.where} with NEWSLETTER_SMTP_SECURITY=none: the password "
                "crosses the network unencrypted",
            )
        return Check(
            "SMTP",
            "ok",
            f"{transport.where} ({settings.smtp_security}); `doctor --smtp` logs in to check",
        )
    try:
        return Check("SMTP", "ok", transport.check())
    except NewsletterError as e:
        return Check("SMTP", "missing", str(e))


def check_file_permissions(settings: Settings) -> Check:
    """The database (the signing key, everyone's data), .env and the DKIM key: owner-only."""
    db = settings.db_path
    candidates = [
        db,
        db.with_name(db.name + "-wal"),
        db.with_name(db.name + "-shm"),
        settings.directory / ".env",
        *([settings.dkim_key_file] if settings.dkim_key_file else []),
    ]
    shared = [path for path in candidates if path.is_file() and shared_with_others(path)]
    if shared:
        names = " ".join(str(path) for path in shared)
        return Check(
            "Permissions",
            "warning",
            f"other users can read {names}: run `chmod 600 {names}`",
        )
    return Check("Permissions", "ok", "the database, .env and DKIM key are owner-only")


def check_bounces(settings: Settings, *, login: bool) -> Check:
    """Bounces and complaints come back to a mailbox `newsletter bounces` reads (#13), or by a
    relay service's API (#22)."""
    if settings.transport == "postmark":
        return Check(
            "Bounces",
            "ok",
            "Postmark keeps them: `newsletter bounces --from postmark` reads them (or its "
            "webhook, on `serve`)",
        )
    if settings.transport == "ses" and settings.ses_queue_url and not settings.bounce_address:
        return Check(
            "Bounces", "ok", "SES reports them to the SQS queue `bounces --from ses` reads"
        )
    if not settings.bounce_address:
        return Check(
            "Bounces",
            "missing" if login else "warning",
            "NEWSLETTER_BOUNCE_ADDRESS is not set: bounce reports and complaints go to the From "
            "address and nothing reads them; dead addresses stay on the list",
        )
    if not login:
        where = settings.imap_host or "no NEWSLETTER_IMAP_HOST yet"
        return Check(
            "Bounces",
            "ok",
            f"come back to {settings.bounce_address} ({where}); `doctor --imap` logs in",
        )
    from .bounces import check_login  # imapclient only for those who ask

    try:
        return Check("Bounces", "ok", check_login(settings))
    except NewsletterError as e:
        return Check("Bounces", "missing", str(e))


def _aligned(dkim_domain: str, from_domain: str) -> bool:
    """DMARC's relaxed alignment, short of a public suffix list: the same domain, or one a
    subdomain of the other (siblings such as mail. and news. of one domain are not seen)."""
    return (
        from_domain == dkim_domain
        or from_domain.endswith("." + dkim_domain)
        or dkim_domain.endswith("." + from_domain)
    )


def _is_mailbox_provider(domain: str) -> bool:
    # yahoo.co.uk, hotmail.fr and the like share the policy of their .com.
    return domain in MAILBOX_PROVIDER_DOMAINS or domain.split(".")[0] in (
        "yahoo",
        "hotmail",
        "outlook",
    )


def _is_local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


def check_posts(settings: Settings) -> list[Check]:
    """A warning for each post file that cannot be read, each missing local image, and CSS
    premailer cannot parse; nothing when all is well (or there are no posts yet)."""
    from .posts import missing_images, read_posts
    from .render import check_css

    checks = []
    try:
        check_css(settings.templates_dir / "email.css")
    except NewsletterError as e:
        checks.append(Check("Email CSS", "warning", str(e)))
    if not settings.posts_dir.is_dir():
        return checks
    found = read_posts(settings.posts_dir, settings.timezone)
    checks += [Check("Post", "warning", f"{b.error}; it is skipped") for b in found.broken]
    for post in found.posts:
        for image, problem in missing_images(post):
            checks.append(
                Check(
                    "Post image",
                    "warning",
                    f"{post.path.name} shows {image.source}, but readers would not see it "
                    f"({problem}): `send` refuses the post",
                )
            )
    return checks
