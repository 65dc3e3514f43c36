"""Benchmark: messages a second through the SES transport (boto3, SES v2 raw SendEmail) against
moto on loopback, beside SMTP to Postfix's smtp-sink, same machine, same run (issue #22).

Run by hand, not in CI:

    .venv/bin/python bench/bench_relays.py                 # 2,000 readers
    .venv/bin/python bench/bench_relays.py --readers 5000

Each send is `newsletter send` in its own process; moto runs in a process of its own
(`moto_server`), as smtp-sink does, so neither shares the sender's interpreter. Each
configuration runs twice in turn; the faster counts. The figures say what the transport costs
on this machine (signing an AWS request, JSON over HTTP, one request a message); the real
service's ceiling is the account's MaxSendRate (`doctor --smtp` shows it), 14 a second for a
new production account, and its latency over the internet, which more connections overlap.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_send import (
    Lists,
    Measured,
    Sink,
    free_port,
    make_project,
    send,
    table,
    wait_for_port,
)

REGION = "eu-west-1"


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return moto, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=2000)
    readers = parser.parse_args().readers
    # The send's processes reach moto through boto3's own settings, with fake credentials.
    moto, url = start_moto()
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_EC2_METADATA_DISABLED="true",
    )
    import boto3

    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity="example.org")
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            lists = Lists(root)
            rows: list[Measured] = []
            for connections in (1, 4):
                smtp = make_project(
                    root, f"smtp-{connections}", sink.port, smtp_connections=connections
                )
                ses = make_project(
                    root,
                    f"ses-{connections}",
                    sink.port,
                    smtp_connections=connections,
                    transport="ses",
                    ses_region=REGION,
                )
                best: dict[str, Measured] = {}
                for _ in range(2):
                    for label, project in (
                        (f"SMTP to smtp-sink, {connections} conn.", smtp),
                        (f"SES API to moto, {connections} conn.", ses),
                    ):
                        result = send(project, lists, readers, label)
                        if label not in best or result.rate > best[label].rate:
                            best[label] = result
                rows.extend(best.values())
            print(f"\n{readers} readers, unsigned, {os.cpu_count()} cores; faster of two runs")
            table(rows, base=rows[0], note="ratio: against SMTP over 1 connection")
    finally:
        sink.stop()
        moto.kill()
        moto.wait()


if __name__ == "__main__":
    main()
