"""What comes back after a send, through a real Postfix and Dovecot (tests/mail_system.py):
real bounce reports for readers at another domain, complaints (ARF, RFC 5965), emails to the
mailto unsubscribe address and auto-replies, read by `newsletter bounces` over IMAP."""

from __future__ import annotations

import json
import re
import smtplib
from email import policy
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import make_msgid
from pathlib import Path

import pytest

from newsletter import db as store
from newsletter.config import load_settings

from .conftest import Cli, write_env
from .mail_system import MailSystem, mail_system  # noqa: F401 - the fixture

SLUG = "ofsted-joint-inspections"
pytestmark = pytest.mark.slow


def mailing(project: Path, mail: MailSystem, box: str) -> str:
    """Send through the real Postfix, bounces coming back to `box`@ the mail system's domain."""
    bounce_address = f"{box}@{mail.domain}"
    write_env(
        project,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=mail.smtp_port,
        SMTP_SECURITY="none",
        SMTP_TIMEOUT="10",
        BOUNCE_ADDRESS=bounce_address,
        IMAP_HOST="127.0.0.1",
        IMAP_PORT=mail.imap_port,
        IMAP_SECURITY="none",
        IMAP_PASSWORD=mail.password,
    )
    return bounce_address


def statuses(project: Path) -> dict[str, tuple[str, str | None]]:
    database = store.open_db(project / "newsletter.db")
    try:
        return {s.email: (s.status, s.status_reason) for s in store.iter_subscribers(database)}
    finally:
        database.close()


def store_public_id(project: Path, address: str) -> str:
    database = store.open_db(project / "newsletter.db")
    try:
        return store.get_subscriber(database, address).public_id
    finally:
        database.close()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_real_bounce_reports_mark_exactly_those_readers_bounced(
    project: Path,
    cli: Cli,
    mail_system: MailSystem,  # noqa: F811
) -> None:
    bounces = mailing(project, mail_system, "dsn")
    here = [f"{name}.dsn@{mail_system.domain}" for name in ("ann", "bob", "cat")]
    away = ["dan.dsn@elsewhere.example.org", "eve.dsn@elsewhere.example.org"]
    for address in here + away:
        cli("subscribers", "add", address)
    cli("send", SLUG, "--yes")

    # The readers at the mail system's domain got it, with our VERP Return-Path and mailto.
    [received] = mail_system.wait_for_mail(here[0], 1)
    return_path = received["Return-Path"].strip("<>")
    assert re.fullmatch(rf"dsn\+[0-9a-f]{{38}}@{re.escape(mail_system.domain)}", return_path)
    assert "<mailto:dsn+unsubscribe-" in received["List-Unsubscribe"]
    assert received["List-Unsubscribe"].startswith("<https://news.example.org/unsubscribe/")
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # Postfix bounces the other domain's two to the VERP address: real DSNs, in one mailbox.
    reports = mail_system.wait_for_mail(bounces, 2)
    assert {r.get_content_type() for r in reports} == {"multipart/report"}

    dry = cli("bounces", "--dry-run", "--json")
    assert {o["email"] for o in json_lines(dry.stdout)} == set(away)
    assert all(
        s == ("active", None) for s in statuses(project).values()
    )  # a dry run changes nothing

    result = cli("bounces", "--json")
    outcomes = json_lines(result.stdout)
    assert sorted((o["email"], o["action"], o["matched_by"], o["slug"]) for o in outcomes) == [
        (away[0], "bounced", "token", SLUG),
        (away[1], "bounced", "token", SLUG),
    ]
    assert all(o["status"] == "5.1.1" and "mailbox unknown" in o["detail"] for o in outcomes)
    after = statuses(project)
    assert {a for a, (status, _) in after.items() if status == "bounced"} == set(away)
    assert {after[a] for a in away} == {("bounced", "bounce")}
    assert {after[a] for a in here} == {("active", None)}

    # The report's own words, in the send log and the reader's JSON.
    log = cli("log", SLUG).stdout
    assert re.search(rf"{re.escape(away[0])}\s+bounced .*bounce report: .*5\.1\.1", log)
    listed = json_lines(cli("subscribers", "list", "--status", "bounced", "--json").stdout)
    assert {r["email"] for r in listed} == set(away)
    assert all(r["events"][0]["status"] == "5.1.1" for r in listed)
    assert "mailbox unknown" in listed[0]["events"][0]["detail"]

    # Handled messages moved to the done folder: a second run changes nothing.
    assert mail_system.mailbox(bounces) == []
    assert mail_system.folder_count(bounces, "Processed") == 2
    again = cli("bounces")
    assert again.stdout.strip() == "Handled 0 of 0 messages; 0 left in the mailbox"
    assert statuses(project) == after


def feedback_report(original: EmailMessage, *, to: str) -> EmailMessage:
    """An abuse report as a mailbox provider's feedback loop sends it (RFC 5965)."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "feedback@fbl.example.com"
    report["To"] = to
    report["Subject"] = "FW: " + str(original["Subject"])
    report["Message-ID"] = make_msgid(domain="fbl.example.com")
    report["MIME-Version"] = "1.0"
    report.attach(MIMEText("This is an email abuse report for an email message received.\n"))
    fields = MIMEText("", "feedback-report")
    del fields["Content-Type"]
    fields.set_payload(
        "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: {original['Return-Path']}\r\n"
        f"Original-Rcpt-To: <{original['To'].addresses[0].addr_spec}>\r\n"
        "Arrival-Date: Thu, 8 Mar 2025 14:00:00 EDT\r\n"
    )
    fields["Content-Type"] = "message/feedback-report"
    report.attach(fields)
    attached = MIMEText("", "rfc822")
    del attached["Content-Type"]
    del attached["Content-Transfer-Encoding"]
    attached["Content-Type"] = "message/rfc822"
    attached.set_payload(original.as_bytes(policy=policy.SMTP).decode("utf-8", "replace"))
    report.attach(attached)
    return report  # type: ignore[return-value]


def test_complaints_unsubscribe_and_forged_or_auto_replies_change_nothing(
    project: Path,
    cli: Cli,
    mail_system: MailSystem,  # noqa: F811
) -> None:
    bounces = mailing(project, mail_system, "fbl")
    ann, bob, cat, dot = (f"{n}.fbl@{mail_system.domain}" for n in ("ann", "bob", "cat", "dot"))
    for address in (ann, bob, cat, dot):
        cli("subscribers", "add", address)
    cli("send", SLUG, "--yes")
    original = {a: mail_system.wait_for_mail(a, 1)[0] for a in (ann, bob, cat, dot)}

    # Ann's provider reports her complaint; the report comes to the plain bounce address.
    mail_system.send(feedback_report(original[ann], to=bounces), mail_from="", to=bounces)
    # A forged report about Bob: his real message, its VERP token altered.
    forged = original[bob]
    token = forged["Return-Path"].split("+", 1)[1].split("@")[0]
    forged.replace_header("Return-Path", forged["Return-Path"].replace(token, token[::-1]))
    mail_system.send(feedback_report(forged, to=bounces), mail_from="", to=bounces)
    # Cat writes to the mailto address of her List-Unsubscribe.
    mailto = re.search(r"<mailto:([^>]+)>", original[cat]["List-Unsubscribe"]).group(1)
    leave = EmailMessage()
    leave["From"], leave["To"], leave["Subject"] = cat, mailto, "unsubscribe"
    leave.set_content("Please take me off the list.")
    mail_system.send(leave, mail_from=cat, to=mailto)
    # Dot is on holiday: her auto-reply goes to the envelope sender, our VERP address.
    verp = original[dot]["Return-Path"].strip("<>")
    away = EmailMessage()
    away["From"], away["To"], away["Subject"] = dot, verp, "Out of office: back Monday"
    away["Auto-Submitted"] = "auto-replied"
    away.set_content("I am away until Monday.")
    mail_system.send(away, mail_from="", to=verp)
    mail_system.wait_for_mail(bounces, 4)

    outcomes = json_lines(cli("bounces", "--json").stdout)
    assert sorted((o["kind"], o["action"], o["email"]) for o in outcomes) == [
        ("auto-reply", "left alone", None),
        ("complaint", "left alone", None),  # the forgery
        ("complaint", "unsubscribed", ann),
        ("unsubscribe", "unsubscribed", cat),
    ]
    [forgery] = [o for o in outcomes if o["kind"] == "complaint" and o["email"] is None]
    assert forgery["detail"].startswith("the address token is not one we signed")
    after = statuses(project)
    assert after[ann] == ("unsubscribed", "complaint")
    assert after[cat] == ("unsubscribed", "email")
    assert after[bob] == ("active", None)  # the forged report changed nothing
    assert after[dot] == ("active", None)  # nor did the auto-reply
    # What was not handled stays for the author to read: the forgery and the auto-reply.
    left = mail_system.mailbox(bounces)
    assert sorted(str(m["Subject"]) for m in left) == sorted(
        ["FW: " + str(forged["Subject"]), "Out of office: back Monday"]
    )
    assert statuses(project) == after
    again = json_lines(cli("bounces", "--json").stdout)
    assert [o["action"] for o in again] == ["left alone", "left alone"]
    assert statuses(project) == after

    stats = json.loads(cli("stats", "--json").stdout)
    [post] = stats["posts"]
    assert (post["slug"], post["sent"], post["complaints"], post["unsubscribes"]) == (
        SLUG,
        4,
        1,
        1,
    )


def test_bounces_needs_the_bounce_address_and_a_working_login(
    project: Path,
    cli: Cli,
    mail_system: MailSystem,  # noqa: F811
) -> None:
    result = cli("bounces", ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: NEWSLETTER_BOUNCE_ADDRESS is not set")
    mailing(project, mail_system, "login")
    write_env(project, IMAP_PASSWORD="Wrong-pass-never-shown")
    result = cli("bounces", ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"Error: the IMAP server 127.0.0.1:{mail_system.imap_port} refused the login for "
        f"login@{mail_system.domain}"
    )
    assert "Wrong-pass" not in result.output
    doctor = cli("doctor", "--imap", ok=False).stdout
    assert "missing  Bounces" in doctor and "refused the login" in doctor
    write_env(project, IMAP_PASSWORD=mail_system.password)
    doctor = cli("doctor", "--imap", ok=False).stdout
    assert re.search(
        rf"ok\s+Bounces\s+logged in to 127.0.0.1:{mail_system.imap_port} as login@", doctor
    )
    settings = load_settings(project, environ={})
    assert settings.imap_username == f"login@{mail_system.domain}"


def test_a_bounce_report_without_our_verp_address_matches_by_message_id(
    project: Path,
    cli: Cli,
    mail_system: MailSystem,  # noqa: F811
) -> None:
    """Sent before NEWSLETTER_BOUNCE_ADDRESS was set, bounces went to the From mailbox with no
    token; the original Message-ID in the report still names the delivery."""
    author = f"jane.mid@{mail_system.domain}"
    write_env(
        project,
        FROM=author,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=mail_system.smtp_port,
        SMTP_SECURITY="none",
    )
    away = "gus.mid@elsewhere.example.org"
    cli("subscribers", "add", f"amy.mid@{mail_system.domain}")
    cli("subscribers", "add", away)
    cli("send", SLUG, "--yes")
    [report] = mail_system.wait_for_mail(author, 1)
    assert "+" not in report["Delivered-To"]
    mailing(project, mail_system, "jane.mid")  # now read that mailbox as the bounce mailbox
    [outcome] = json_lines(cli("bounces", "--json").stdout)
    assert (outcome["email"], outcome["action"], outcome["matched_by"], outcome["slug"]) == (
        away,
        "bounced",
        "message-id",
        SLUG,
    )
    assert statuses(project)[away] == ("bounced", "bounce")


def test_a_bounce_address_without_room_for_the_token_is_refused(project: Path, cli: Cli) -> None:
    write_env(project, BOUNCE_ADDRESS="newsletter-bounces@news.example.org")
    result = cli("send", "--yes", ok=False)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: NEWSLETTER_BOUNCE_ADDRESS newsletter-bounces@news.example.org: its local part "
        "must be ASCII, without '+', and at most 13 characters, so that "
        "newsletter-bounces+unsubscribe-TOKEN fits the 64 an address allows\n"
    )


def delivery_report(to: str, recipient: str, action: str, status: str, diagnostic: str) -> bytes:
    """A bounce report (RFC 3464) as a receiving server writes one, built with the email package."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.elsewhere.example.org"
    report["To"] = to
    report["Subject"] = "Delivery Status Notification"
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText(f"Your message to {recipient} was {action}.\n"))
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; mx.elsewhere.example.org"
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = f"smtp; {diagnostic}"
    status_part = MIMEBase("message", "delivery-status")
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    return report.as_bytes()


def test_delays_are_noted_and_the_senders_fault_leaves_the_reader(
    project: Path,
    cli: Cli,
    mail_system: MailSystem,  # noqa: F811
) -> None:
    mailing(project, mail_system, "delay")
    write_env(project, BOUNCE_LIMIT=2)
    # At the mail system's own domain, so that only the reports sent here come back.
    slow, blocked = (f"{n}.delay@{mail_system.domain}" for n in ("slow", "blocked"))
    here = f"amy.delay@{mail_system.domain}"
    for address in (here, slow, blocked):
        cli("subscribers", "add", address)
    cli("send", SLUG, "--yes")
    [original] = mail_system.wait_for_mail(here, 1)
    database = store.open_db(project / "newsletter.db")
    settings = load_settings(project, environ={})
    from newsletter.keys import reader_tokens
    from newsletter.verp import Verp

    verp = Verp(settings.bounce_address, reader_tokens(settings, database))
    public = {a: store.get_subscriber(database, a).public_id for a in (slow, blocked)}
    database.close()
    sends = [
        (slow, "delayed", "4.2.2", "452 4.2.2 mailbox over quota, still trying"),
        (slow, "delayed", "4.2.2", "452 4.2.2 mailbox over quota, still trying"),
        (blocked, "failed", "5.7.1", "550 5.7.1 message rejected as spam by policy"),
    ]
    for recipient, action, status, diagnostic in sends:
        to = verp.return_path(public[recipient], SLUG)
        data = delivery_report(to, recipient, action, status, diagnostic)
        with smtplib.SMTP("127.0.0.1", mail_system.smtp_port) as smtp:
            smtp.sendmail("", [to], data)
    mail_system.wait_for_mail(f"delay@{mail_system.domain}", 3)
    outcomes = json_lines(cli("bounces", "--json").stdout)
    assert sorted((o["email"], o["action"], o["status"]) for o in outcomes) == [
        (blocked, "noted", "5.7.1"),
        (slow, "noted", "4.2.2"),  # a delay is never a write-off, however many come
        (slow, "noted", "4.2.2"),
    ]
    assert [r["permanent"] for o in outcomes for r in o["readers"] if r["email"] == slow] == [
        False,
        False,
    ]
    after = statuses(project)
    assert after[slow] == ("active", None)
    assert after[blocked] == ("active", None)  # 5.7.x is the sender's fault
    assert after[here] == ("active", None)
    assert original["Return-Path"].strip("<>") == verp.return_path(
        store_public_id(project, here), SLUG
    )
