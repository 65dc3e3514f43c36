from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.errors import ConfigError

from .conftest import write_env


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    assert settings.db_path == tmp_path.resolve() / "newsletter.db"
    assert settings.posts_dir == tmp_path.resolve() / "posts"
    assert settings.outbox == tmp_path.resolve() / "outbox"
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.from_address is None
    assert settings.smtp_host is None and not settings.uses_smtp
    assert settings.secret_keys == ()


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path) -> None:
    write_env(tmp_path, TITLE="From file", DB="other.db", BASE_URL="https://a.example.org/")
    settings = load_settings(tmp_path, environ={"NEWSLETTER_TITLE": "From environment"})
    assert settings.title == "From environment"
    assert settings.db_path == tmp_path.resolve() / "other.db"
    assert settings.base_url == "https://a.example.org"  # no trailing slash


def test_from_address_and_title_fallback(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path, environ={"NEWSLETTER_FROM": "Jane Author <Jane@Example.ORG>"}
    )
    assert settings.sender.addr_spec == "Jane@example.org"
    assert settings.sender.display_name == "Jane Author"
    assert settings.title == "Jane Author"


def test_port_defaults_follow_the_security_mode(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={"NEWSLETTER_SMTP_SECURITY": "ssl"}).smtp_port == 465
    assert load_settings(tmp_path, environ={}).smtp_port == 587


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SMTP_PORT",
            "twenty-five",
            "NEWSLETTER_SMTP_PORT must be a port number (1-65535), not 'twenty-five'",
        ),
        ("SMTP_PORT", "70000", "NEWSLETTER_SMTP_PORT must be a port number (1-65535), not '70000'"),
        (
            "SMTP_SECURITY",
            "tls",
            "NEWSLETTER_SMTP_SECURITY must be one of starttls, ssl, none, not 'tls'",
        ),
        ("BASE_URL", "news.example.org", "NEWSLETTER_BASE_URL must be an http(s) URL"),
        ("BASE_URL", "ftp://x.example.org", "NEWSLETTER_BASE_URL must be an http(s) URL"),
        ("FROM", "not an address", "NEWSLETTER_FROM must be an address like"),
        (
            "SMTP_CONNECTIONS",
            "0",
            "NEWSLETTER_SMTP_CONNECTIONS must be a whole number from 1 to 1000",
        ),
        ("SMTP_RATE", "-3", "NEWSLETTER_SMTP_RATE must be messages per second"),
        (
            "TITLE",
            "News\r\nBcc: x@example.org",
            "NEWSLETTER_TITLE must be one line without control characters",
        ),
        ("POSTAL_ADDRESS", "1 High St\nLeeds", "NEWSLETTER_POSTAL_ADDRESS must be one line"),
        ("BASE_URL", "https://bücher.example.org", "NEWSLETTER_BASE_URL must be an http(s) URL"),
        ("BASE_URL", "https://example.org/news", "NEWSLETTER_BASE_URL must be the root of a site"),
    ],
)
def test_bad_values_are_one_line_errors(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path, environ={f"NEWSLETTER_{name}": value})
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_missing_from_is_reported_when_needed(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    with pytest.raises(ConfigError, match="NEWSLETTER_FROM is not set"):
        settings.sender  # noqa: B018


def test_repr_hides_secrets(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path, environ={"NEWSLETTER_SMTP_PASSWORD": "hunter2", "NEWSLETTER_SECRET_KEY": "k1,k2"}
    )
    assert settings.secret_keys == ("k1", "k2")
    assert "hunter2" not in repr(settings) and "k1" not in repr(settings)


def test_post_settings_zone_typography_and_logo(tmp_path: Path) -> None:
    defaults = load_settings(tmp_path, environ={})
    assert (str(defaults.timezone), defaults.typographer, defaults.logo_url) == ("UTC", True, None)
    settings = load_settings(
        tmp_path,
        environ={
            "NEWSLETTER_TIMEZONE": "Europe/London",
            "NEWSLETTER_TYPOGRAPHER": "off",
            "NEWSLETTER_LOGO_URL": "https://cdn.example.org/logo.png",
        },
    )
    assert str(settings.timezone) == "Europe/London"
    assert settings.typographer is False
    assert settings.logo_url == "https://cdn.example.org/logo.png"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "TIMEZONE",
            "Mars/Olympus",
            "NEWSLETTER_TIMEZONE must be a time zone such as UTC or Europe/London, not 'Mars/Olympus'",
        ),
        (
            "TYPOGRAPHER",
            "sometimes",
            "NEWSLETTER_TYPOGRAPHER must be true or false, not 'sometimes'",
        ),
        (
            "LOGO_URL",
            "logo.png",
            "NEWSLETTER_LOGO_URL must be an http(s) URL of an image, not 'logo.png'",
        ),
    ],
)
def test_bad_post_settings_are_one_line_errors(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path, environ={f"NEWSLETTER_{name}": value})
    assert str(error.value) == message


def test_every_setting_is_documented_in_env_example() -> None:
    """Each NEWSLETTER_* name load_settings reads has its line in .env.example."""
    import re

    from .conftest import REPO

    source = (REPO / "newsletter" / "config.py").read_text()
    names = set(re.findall(r'(?:get|parse|values\.get)\(\s*(?:PREFIX \+ )?"([A-Z0-9_]+)"', source))
    assert {"TRANSPORT", "SES_SECRET_ACCESS_KEY", "POSTMARK_TOKEN", "SMTP_RATE"} <= names
    example = (REPO / ".env.example").read_text()
    assert [n for n in sorted(names) if f"NEWSLETTER_{n}=" not in example] == []
