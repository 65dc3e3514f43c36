"""Amazon SES: send each reader's finished message through SES v2 `SendEmail` (raw content),
pull its bounce and complaint notifications from an SQS queue and its account suppression list.

The message goes byte for byte as SMTP would send it (DKIM signature and headers included);
the VERP bounce address becomes the feedback-forwarding address, SES's Return-Path being its
own. Credentials come from NEWSLETTER_SES_ACCESS_KEY_ID / NEWSLETTER_SES_SECRET_ACCESS_KEY, else
from boto3's usual chain (AWS_* variables, ~/.aws, an instance role).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from ..config import Settings
from ..envelope import Envelope, ServiceReply
from ..errors import ConfigError, DeliveryRefused, RelayError, TransportError
from ..returned import Failure, ReturnedMail
from . import Finding, RelayReport, one_line, sender_refused, throttled, unavailable

SERVICE = "SES"
_THROTTLED = {
    "TooManyRequestsException",
    "Throttling",
    "ThrottlingException",
    "LimitExceededException",
}
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AccessDeniedException",
    "AccessDenied",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "IncompleteSignature",
}
_ACCOUNT_STOPPED = {
    "AccountSuspendedException": "Amazon SES has suspended sending for this account",
    "SendingPausedException": "sending is paused for this account or its configuration set",
    "MailFromDomainNotVerifiedException": "the custom MAIL FROM domain is not verified",
    "NotFoundException": "SES does not know a name this send uses",
}
_NETWORK_ERRORS = (
    ConnectTimeoutError,
    ReadTimeoutError,
    EndpointConnectionError,
    ConnectionClosedError,
)
RECEIVE_BATCH = 10  # SQS's most per ReceiveMessage


def client(settings: Settings, service: str) -> Any:
    """A boto3 client for `service` with the newsletter's credentials and region.

    Retries are the delivery's (with its back-off and the send log), so boto3 makes one try.
    AWS_ENDPOINT_URL (boto3's own setting) points it at an emulator.
    """
    session = boto3.session.Session(
        aws_access_key_id=settings.ses_access_key_id,
        aws_secret_access_key=settings.ses_secret_access_key,
        region_name=settings.ses_region,
    )
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.smtp_timeout,
        read_timeout=settings.smtp_timeout,
    )
    try:
        return session.client(service, config=config)
    except NoRegionError as e:
        raise ConfigError(
            "NEWSLETTER_SES_REGION is not set (nor AWS_REGION): set it to the region of your "
            "SES account, e.g. eu-west-1"
        ) from e


class SESTransport:
    """SES v2 SendEmail with the raw message; one boto3 client per connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.from_address = settings.sender.addr_spec
        self._client = client(settings, "sesv2")

    def send(self, envelope: Envelope) -> str:
        request: dict[str, Any] = {
            "FromEmailAddress": self.from_address,
            "Destination": {"ToAddresses": [envelope.recipient]},
            "Content": {"Raw": {"Data": envelope.data}},
        }
        if envelope.sender != self.from_address:  # the VERP address: SES mails reports to it
            request["FeedbackForwardingEmailAddress"] = envelope.sender
        if self.settings.ses_configuration_set:
            request["ConfigurationSetName"] = self.settings.ses_configuration_set
        try:
            response = self._client.send_email(**request)
        except ClientError as e:
            raise _refusal(self.settings, e) from e
        except _NETWORK_ERRORS as e:
            raise DeliveryRefused(
                f"connection lost: {SERVICE}: {_quoted(self.settings, e)}", permanent=False
            ) from e
        except NoCredentialsError as e:
            raise TransportError(_NO_CREDENTIALS) from e
        except BotoCoreError as e:
            raise DeliveryRefused(f"{SERVICE}: {_quoted(self.settings, e)}", permanent=False) from e
        message_id = str(response["MessageId"])
        return ServiceReply(f"250 {SERVICE} accepted {message_id}", message_id)

    def close(self) -> None:
        self._client.close()


def _quoted(settings: Settings, e: BaseException) -> str:
    """boto3's words for a failure, on one line and without the credentials."""
    return one_line(e, (settings.ses_secret_access_key, settings.ses_access_key_id))


_NO_CREDENTIALS = (
    "no AWS credentials for Amazon SES: set NEWSLETTER_SES_ACCESS_KEY_ID and "
    "NEWSLETTER_SES_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID, ~/.aws, an instance role)"
)


_XML_ERROR = re.compile(r"<Code>([^<]*)</Code>\s*<Message>([^<]*)</Message>")


def _error(settings: Settings, e: ClientError) -> tuple[str, str, int]:
    """SES's error code, its message (without any credential) and the HTTP status."""
    error = e.response.get("Error", {})
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    # An AWS front end that refuses the signature may answer a JSON API in XML: botocore then
    # gives the HTTP status as the code and the whole document as the message.
    if (found := _XML_ERROR.search(message)) is not None:
        code, message = html.unescape(found.group(1)), html.unescape(found.group(2))
    secrets = (settings.ses_secret_access_key, settings.ses_access_key_id)
    return code, one_line(message, secrets), status


def _refusal(settings: Settings, e: ClientError) -> DeliveryRefused | TransportError:
    """SES's error as what an SMTP server's reply would have meant."""
    code, message, status = _error(settings, e)
    detail = f"{code}: {message}" if message else code
    if code in _THROTTLED or status == 429:
        if "daily" in message.lower():  # the 24-hour quota: no retry helps today
            return TransportError(
                f"Amazon SES: the daily sending quota is used up ({detail}); the rest stay "
                "pending for the next run (ask AWS for a higher quota)"
            )
        return throttled(SERVICE, detail)
    if code in ("AccessDenied", "AccessDeniedException"):
        return TransportError(
            f"Amazon SES: the key is not allowed this ({detail}); give its IAM user that "
            "permission (a send needs ses:SendEmail; .env.example lists the rest)"
        )
    if code in _BAD_CREDENTIALS or status in (401, 403):
        return TransportError(
            f"Amazon SES refused the credentials ({detail}); check "
            "NEWSLETTER_SES_ACCESS_KEY_ID, NEWSLETTER_SES_SECRET_ACCESS_KEY and "
            "NEWSLETTER_SES_REGION"
        )
    if code in _ACCOUNT_STOPPED:
        return TransportError(
            f"{_ACCOUNT_STOPPED[code]} ({detail}); see the SES console's account dashboard; "
            "no reader was marked bounced"
        )
    if status >= 500 or code in ("InternalFailure", "ServiceUnavailable"):
        return unavailable(SERVICE, detail)
    if code == "MessageRejected" and "not verified" in message.lower():
        # In the sandbox, SES sends only to verified addresses: the account's limit, not the
        # reader's fault.
        return sender_refused(SERVICE, "5.7.1", f"{detail} (is the account in the sandbox?)")
    return sender_refused(SERVICE, "5.7.1" if code == "MessageRejected" else "5.6.0", detail)


# --- what comes back -------------------------------------------------------------------------


def reports(settings: Settings, *, dry_run: bool = False) -> Iterator[RelayReport]:
    """Each SES report in the queue, then on the suppression list; the caller applies it and
    calls `done()` on the queue's ones it applied (or found applied), which deletes them. A
    dry run deletes nothing, not even the notifications that carry no report."""
    if not settings.ses_queue_url:
        raise ConfigError(
            "NEWSLETTER_SES_QUEUE_URL is not set: set it to the SQS queue subscribed to the SNS "
            "topic your SES identity sends bounces and complaints to"
        )
    sqs = client(settings, "sqs")
    try:
        yield from _queue_reports(settings, sqs, dry_run=dry_run)
        yield from _suppressed(settings)
    except ClientError as e:
        code, message, status = _error(settings, e)
        if code in _BAD_CREDENTIALS or status in (401, 403):
            raise RelayError(str(_refusal(settings, e))) from e
        raise RelayError(f"Amazon SES: {code}: {message}") from e
    except NoCredentialsError as e:
        raise RelayError(_NO_CREDENTIALS) from e
    except BotoCoreError as e:
        raise RelayError(f"Amazon SES: {_quoted(settings, e)}") from e
    finally:
        sqs.close()


def _queue_reports(settings: Settings, sqs: Any, *, dry_run: bool) -> Iterator[RelayReport]:
    """The queue's notifications, each hidden from other readers while this run looks at it;
    those not applied (a dry run, a report naming no delivery of ours) are shown again at the
    end, and the applied ones deleted as they are applied."""
    seen: set[str] = set()
    kept: dict[str, str] = {}  # receipt handle -> message id, not deleted
    queue = settings.ses_queue_url

    def deleter(handle: str) -> Callable[[], None]:
        def delete() -> None:
            try:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=handle)
            except (ClientError, BotoCoreError) as e:  # applied, and remembered as applied
                raise RelayError(
                    f"Amazon SES: cannot delete from the queue: {_quoted(settings, e)}"
                ) from e
            kept.pop(handle, None)

        return delete

    try:
        while True:
            answer = sqs.receive_message(
                QueueUrl=queue,
                MaxNumberOfMessages=RECEIVE_BATCH,
                WaitTimeSeconds=0,
                VisibilityTimeout=300,
            )
            fresh = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
            if not fresh:
                return
            for message in fresh:
                seen.add(message["MessageId"])
                handle = message["ReceiptHandle"]
                kept[handle] = message["MessageId"]
                found = list(_notification_reports(message["Body"], deleter(handle)))
                if not found and not dry_run:  # a delivery notification, or not SES's
                    deleter(handle)()
                yield from found
    finally:
        for handle in list(kept):
            sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=handle, VisibilityTimeout=0)


def _notification_reports(body: str, delete: Callable[[], None]) -> Iterator[RelayReport]:
    """The reports in one SQS message: an SNS envelope around SES's notification, or SES's
    notification itself (SNS's raw message delivery)."""
    try:
        outer = json.loads(body)
        notice = json.loads(outer["Message"]) if outer.get("Type") == "Notification" else outer
    except (ValueError, KeyError, TypeError):
        return
    if not isinstance(notice, dict):
        return
    kind = notice.get("notificationType") or notice.get("eventType")
    message_id = str(notice.get("mail", {}).get("messageId") or "") or None
    if kind == "Bounce":
        bounce = notice.get("bounce", {})
        permanent = bounce.get("bounceType") == "Permanent"
        what = f"SES {bounce.get('bounceType')} bounce ({bounce.get('bounceSubType')})"
        recipients = bounce.get("bouncedRecipients", [])
        for index, recipient in enumerate(recipients):
            email = recipient.get("emailAddress")
            detail = one_line(recipient.get("diagnosticCode") or what)
            failure = Failure(email, recipient.get("status") or None, permanent, detail)
            mail = ReturnedMail("bounce report", (), failures=(failure,), detail=what)
            last = index == len(recipients) - 1
            yield RelayReport(
                f"{bounce.get('feedbackId')}:{email}",
                mail,
                message_id=message_id,
                finish=delete if last else None,
            )
    elif kind == "Complaint":
        complaint = notice.get("complaint", {})
        if complaint.get("complaintFeedbackType") == "not-spam":
            return
        feedback = complaint.get("complaintFeedbackType") or "abuse"
        recipients = complaint.get("complainedRecipients", [])
        for index, recipient in enumerate(recipients):
            email = recipient.get("emailAddress")
            mail = ReturnedMail(
                "complaint", (), detail=f"SES complaint ({feedback})", recipient=email
            )
            last = index == len(recipients) - 1
            yield RelayReport(
                f"{complaint.get('feedbackId')}:{email}",
                mail,
                message_id=message_id,
                finish=delete if last else None,
            )


def _suppressed(settings: Settings) -> Iterator[RelayReport]:
    """The account suppression list: addresses SES will not send to (it bounced or complained
    there, also for another sender of the account)."""
    sesv2 = client(settings, "sesv2")
    try:
        token: str | None = None
        while True:
            page = sesv2.list_suppressed_destinations(
                **({"NextToken": token} if token else {}), PageSize=100
            )
            for entry in page.get("SuppressedDestinationSummaries", []):
                email = str(entry["EmailAddress"])
                reason = str(entry.get("Reason", "BOUNCE"))
                since = str(entry.get("LastUpdateTime", ""))
                detail = f"on the SES account suppression list ({reason.lower()}, {since})"
                mail = (
                    ReturnedMail("complaint", (), detail=detail, recipient=email)
                    if reason == "COMPLAINT"
                    else ReturnedMail(
                        "bounce report",
                        (),
                        failures=(Failure(email, None, True, detail),),
                        detail=detail,
                    )
                )
                yield RelayReport(
                    f"suppressed:{email.lower()}:{reason}:{since}",
                    mail,
                    message_id=None,
                    by_address=True,
                )
            token = page.get("NextToken")
            if not token:
                return
    finally:
        sesv2.close()


# --- doctor ----------------------------------------------------------------------------------


def check_account(settings: Settings, *, readers: int | None = None) -> list[Finding]:
    """The account's sending status (GetAccount) against a send to `readers`, the From
    identity and the report queue."""
    try:
        return _check_account(settings, readers)
    except ConfigError as e:
        return [Finding("missing", str(e))]
    except NoCredentialsError:
        return [Finding("missing", _NO_CREDENTIALS)]
    except ClientError as e:
        code, message, _ = _error(settings, e)
        refusal = _refusal(settings, e)
        return [
            Finding("missing", str(refusal) if code in _BAD_CREDENTIALS else f"{code}: {message}")
        ]
    except BotoCoreError as e:
        return [Finding("missing", f"Amazon SES cannot be reached: {_quoted(settings, e)}")]


def _check_account(settings: Settings, readers: int | None) -> list[Finding]:
    sesv2 = client(settings, "sesv2")
    try:
        account = sesv2.get_account()
        findings = _account_findings(settings, account, readers)
        findings.append(_identity_finding(settings, sesv2))
    finally:
        sesv2.close()
    findings.append(_queue_finding(settings))
    return findings


def _account_findings(
    settings: Settings, account: dict[str, Any], readers: int | None
) -> list[Finding]:
    quota = account.get("SendQuota", {})
    rate = float(quota.get("MaxSendRate", 0) or 0)
    daily = int(float(quota.get("Max24HourSend", 0) or 0))
    sent = int(float(quota.get("SentLast24Hours", 0) or 0))
    region = settings.ses_region or "the default region"
    findings = []
    if not account.get("SendingEnabled", True):
        findings.append(
            Finding("missing", "SES sending is paused for this account: resume it in the console")
        )
    status = account.get("EnforcementStatus", "HEALTHY")
    if status == "SHUTDOWN":
        findings.append(Finding("missing", "SES has shut down sending for this account"))
    elif status == "PROBATION":
        findings.append(
            Finding("warning", "the SES account is on probation: bring bounces and complaints down")
        )
    if account.get("ProductionAccessEnabled"):
        findings.append(
            Finding(
                "ok",
                f"SES in {region}: production, {sent} of {daily} sent in 24 hours, "
                f"at most {rate:g} messages a second",
            )
        )
    else:
        findings.append(
            Finding(
                "warning",
                f"SES in {region} is in the sandbox: it sends only to verified addresses "
                f"({daily} a day, {rate:g} a second); request production access in the console",
            )
        )
    left = max(daily - sent, 0)
    if daily and readers is not None and readers > left:
        findings.append(
            Finding(
                "warning",
                f"{readers} active readers, but only {left} of SES's {daily} messages a day are "
                "left: a send stops when they run out (the rest stay pending for the next run); "
                "ask AWS for a higher quota",
            )
        )
    if rate and (settings.smtp_rate is None or settings.smtp_rate > rate):
        findings.append(
            Finding(
                "warning",
                f"set NEWSLETTER_SMTP_RATE={rate:g} (SES's maximum send rate) so that a send is "
                "not throttled",
            )
        )
    return findings


def _identity_finding(settings: Settings, sesv2: Any) -> Finding:
    address = settings.sender.addr_spec
    for identity in (address, address.rsplit("@", 1)[1]):
        try:
            answer = sesv2.get_email_identity(EmailIdentity=identity)
        except ClientError as e:
            if _error(settings, e)[0] == "NotFoundException":
                continue
            raise
        if answer.get("VerifiedForSendingStatus"):
            return Finding("ok", f"SES may send as {address} (identity {identity} verified)")
        return Finding(
            "missing", f"the SES identity {identity} is not verified yet: finish its DNS records"
        )
    return Finding(
        "missing",
        f"SES has no identity for {address}: verify its domain in the SES console",
    )


def _queue_finding(settings: Settings) -> Finding:
    if not settings.ses_queue_url:
        return Finding(
            "warning",
            "NEWSLETTER_SES_QUEUE_URL is not set: SES's bounces and complaints are not read",
        )
    sqs = client(settings, "sqs")
    try:
        attributes = sqs.get_queue_attributes(
            QueueUrl=settings.ses_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
    except ClientError as e:  # its own line: the account's findings above still stand
        code, message, _ = _error(settings, e)
        return Finding(
            "missing",
            f"the SES report queue NEWSLETTER_SES_QUEUE_URL cannot be read ({code}: {message}): "
            "check its URL and that the key may sqs:GetQueueAttributes on it",
        )
    finally:
        sqs.close()
    waiting = attributes.get("ApproximateNumberOfMessages", "0")
    return Finding("ok", f"the SES report queue holds {waiting} notifications")
