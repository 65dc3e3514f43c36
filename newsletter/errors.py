"""The project's own exceptions: the CLI and the web app turn these into a clean message."""


class NewsletterError(Exception):
    """Something the author can fix; the message says what, in one line."""


class ConfigError(NewsletterError):
    """A setting is missing or has a value that cannot be used."""


class DatabaseError(NewsletterError):
    """The database file cannot be opened, read or migrated."""


class PostError(NewsletterError):
    """A post in posts/ cannot be read: bad front matter, encoding or date."""


class TemplateError(NewsletterError):
    """A template has a syntax error or uses a variable that does not exist."""


class SubscriberError(NewsletterError):
    """An address is invalid, already on the list, or not on it."""


class ImportFileError(NewsletterError):
    """A CSV file cannot be imported at all (no email column, not text)."""


class KeyFileError(NewsletterError):
    """A DKIM key cannot be written: the file exists already or the folder is not writable."""


class BadToken(NewsletterError):
    """A signed link was tampered with, expired, or made with another key."""


class TransportError(NewsletterError):
    """The mail server cannot be reached or refused the login: nothing can be sent.

    `temporary` marks a failure to connect that may pass (the server is restarting), as
    opposed to one that will not (a refused login, a TLS setting the server does not offer).
    """

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class SendError(NewsletterError):
    """A send cannot start or had to stop early (another send runs, too many failures)."""


class DeliveryRefused(NewsletterError):
    """The server did not take one message; `permanent` says whether trying again can help.

    `stage` is the SMTP step that failed; `refusals.classify_refusal` says whose fault it is.
    """

    def __init__(self, reply: str, *, permanent: bool, code: int = 0, stage: str = "") -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent
        self.code = code
        self.stage = stage


class NotOnList(SubscriberError):
    """A reader's link names nobody on the list: a test copy's link (id 0) or an erased reader."""


class MailboxError(NewsletterError):
    """The bounce mailbox cannot be reached over IMAP, or refused the login."""
