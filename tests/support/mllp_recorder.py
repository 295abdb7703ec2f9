"""A minimal HL7 interface engine in its own process: records every message, answers AA.

For long runs (``bench/soak.py``) where the receiver must keep up with a whole ward and be
stopped and started like a real one: it does not parse (``hl7_peer.py`` does, with hl7apy,
which costs a tenth of a second a message on a loaded box), keeps each connection open for
as many messages as the sender sends, and writes each message's MLLP block to ``--out``
before acknowledging it, so whatever the gateway saw acknowledged is in the file even if
the process is killed a moment later. A block cut short by a kill has no end marker and no
acknowledgement: :func:`read_messages` leaves it out, and the gateway sends it again.

    python tests/support/mllp_recorder.py --port PORT --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

START, END = b"\x0b", b"\x1c\r"


def ack_for(block: bytes) -> bytes:
    """An AA acknowledgement carrying the message's control id (MSH-10)."""
    msh = block.lstrip(START).split(b"\r", 1)[0].split(b"|")
    control = msh[9] if len(msh) > 9 else b""
    return START + b"MSH|^~\\&|RECORDER||||||ACK|A|P|2.6\rMSA|AA|" + control + END


async def serve(port: int, out: Path) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                block = await reader.readuntil(END)
                os.write(fd, block)  # in the kernel before the sender hears AA
                writer.write(ack_for(block))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=64 * 1024 * 1024)
    async with server:
        await server.serve_forever()


def read_messages(path: Path) -> Iterator[str]:
    """Every whole message recorded in ``path`` (a cut-off last block is left out)."""
    data = path.read_bytes() if path.exists() else b""
    blocks = data.split(END)
    for block in blocks[:-1]:  # after the last END: nothing, or a block a kill cut short
        yield block.lstrip(START).decode("utf-8", "replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.out))


if __name__ == "__main__":
    main()
