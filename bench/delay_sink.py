"""A loopback SMTP sink that answers each message after a delay given in milliseconds.

Postfix's `smtp-sink -w` delays whole seconds only; a relay service answers in tens to hundreds
of milliseconds. This answers EHLO (with PIPELINING), MAIL, RCPT and DATA at once, reads the
message, waits the delay, then says 250; it keeps nothing. Run by the bench, not by the tests:

    python bench/delay_sink.py PORT DELAY_MS
"""

from __future__ import annotations

import asyncio
import sys


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    writer.write(b"220 delay-sink ESMTP\r\n")
    try:
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-delay-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                await reader.readuntil(b"\r\n.\r\n")
                await asyncio.sleep(delay)
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            else:  # MAIL, RCPT, RSET, NOOP
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(port: int, delay_ms: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: session(r, w, delay_ms / 1000), "127.0.0.1", port, backlog=2048
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
