import pytest
from itsdangerous import URLSafeSerializer

from newsletter.errors import BadToken
from newsletter.tokens import MAIL_TOKEN_LENGTH, ReaderTokens, UnsubscribeLink

PUBLIC_ID = "0a1b2c3d4e5f6789"


def test_unsubscribe_token_is_signed_and_names_the_public_id_and_post() -> None:
    tokens = ReaderTokens(["key"])
    token = tokens.unsubscribe(PUBLIC_ID, "a-post")
    assert tokens.read_unsubscribe(token) == UnsubscribeLink(PUBLIC_ID, "a-post")
    assert URLSafeSerializer("key", salt="newsletter.unsubscribe").loads(token) == [
        PUBLIC_ID,
        "a-post",
    ]
    assert tokens.unsubscribe("ffffffffffffffff", "a-post") != token
    assert "@" not in token


def test_an_old_link_with_the_sequential_id_still_reads() -> None:
    old = URLSafeSerializer("key", salt="newsletter.unsubscribe").dumps(42)
    assert ReaderTokens(["key"]).read_unsubscribe(old) == UnsubscribeLink(42, None)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: "MQ" + t[2:],
        lambda t: "",
        lambda t: "not-a-token",
    ],
)
def test_tampered_tokens_are_refused(mangle) -> None:
    tokens = ReaderTokens(["key"])
    with pytest.raises(BadToken, match="this unsubscribe link is not valid"):
        tokens.read_unsubscribe(mangle(tokens.unsubscribe(PUBLIC_ID)))


def test_key_rotation_keeps_old_links_working() -> None:
    old_link = ReaderTokens(["old"]).unsubscribe(PUBLIC_ID)
    rotated = ReaderTokens(["old", "new"])
    assert rotated.read_unsubscribe(old_link).reader == PUBLIC_ID
    assert (
        ReaderTokens(["new"]).read_unsubscribe(rotated.unsubscribe(PUBLIC_ID)).reader == PUBLIC_ID
    )  # signs with the newest
    with pytest.raises(BadToken):
        ReaderTokens(["other"]).read_unsubscribe(old_link)


def test_purposes_do_not_mix() -> None:
    tokens = ReaderTokens(["key"])
    with pytest.raises(BadToken):
        tokens.read_confirm(tokens.unsubscribe(PUBLIC_ID))
    with pytest.raises(BadToken):
        tokens.read_unsubscribe(tokens.confirm(PUBLIC_ID))


def test_confirm_links_expire() -> None:
    tokens = ReaderTokens(["key"])
    token = tokens.confirm(PUBLIC_ID)
    assert tokens.read_confirm(token) == PUBLIC_ID
    with pytest.raises(BadToken, match="expired"):
        tokens.read_confirm(token, max_age=-1)


def test_mail_tokens_are_short_lower_case_signed_and_purpose_bound() -> None:
    tokens = ReaderTokens(["old", "new"])
    token = tokens.mail_token("bounce", PUBLIC_ID, "a-post")
    assert len(token) == MAIL_TOKEN_LENGTH and token == token.lower() and token.isalnum()
    read = tokens.read_mail_token("bounce", token.upper().lower())
    assert read.public_id == PUBLIC_ID
    assert ReaderTokens(["new"]).read_mail_token("bounce", token) == read  # signed by the newest
    for forged in (
        token[:-2] + ("aa" if token[-2:] != "aa" else "bb"),
        ReaderTokens(["other"]).mail_token("bounce", PUBLIC_ID, "a-post"),
        "not-a-token",
        "",
    ):
        with pytest.raises(BadToken):
            tokens.read_mail_token("bounce", forged)
    with pytest.raises(BadToken):  # a Return-Path token is no unsubscribe token
        tokens.read_mail_token("unsubscribe", token)
