"""A real MLLP receiver for tests, built on hl7apy (a library independent of the one the
gateway builds messages with): it parses every message it gets and answers as scripted."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message


@dataclass
class PeerState:
    #: Answers to give, in order: "AA", "AE", "AR", "none" (no answer; the connection is
    #: held until ``release``) or "wrong-id"; when empty, "AA".
    script: list[str] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)  # hl7apy Message objects
    raw: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set to let a scripted "none" stop holding its connection (teardown sets it).
    release: threading.Event = field(default_factory=threading.Event)

    def next_answer(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else "AA"


class _Handler(AbstractHandler):  # type: ignore[misc]
    def __init__(self, message: str, state: PeerState) -> None:
        super().__init__(message)
        self.state = state

    def reply(self) -> str:
        text = self.incoming_message
        parsed = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True)
        answer = self.state.next_answer()
        with self.state.lock:
            self.state.raw.append(text)
            self.state.messages.append(parsed)
        if answer == "none":
            # Hold the connection without answering, as a hung interface engine does.
            self.state.release.wait(30)
            raise RuntimeError("scripted silence")  # the server then closes, unanswered
        control = parsed.msh.msh_10.value
        if answer == "wrong-id":
            answer, control = "AA", "not-" + control
        ack = (
            f"MSH|^~\\&|PEER|HOSP|||20260101000000||ACK^R01^ACK|ACK{len(self.state.raw)}|P|2.6\r"
            f"MSA|{answer}|{control}|{f'scripted {answer} for Lee^Ann' if answer != 'AA' else ''}"
        )
        if answer != "AA":
            ack += "\rERR||PID^1^5|101^Required field missing^HL70357|E"
        return f"\x0b{ack}\x1c\x0d"


class _TlsServer(MLLPServer):  # type: ignore[misc]
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, address


@contextmanager
def hl7_peer(
    *, tls: ssl.SSLContext | None = None, port: int = 0
) -> Iterator[tuple[PeerState, int]]:
    state = PeerState()
    handlers = {
        "ORU^R01^ORU_R01": (_Handler, state),
        "ORU^R40^ORU_R40": (_Handler, state),
    }
    server = _TlsServer("127.0.0.1", port, handlers, timeout=5)
    server.tls = tls
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state, server.server_address[1]
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
