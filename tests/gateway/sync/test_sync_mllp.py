"""HL7 over MLLP against a real receiver (hl7apy's MLLP server), plain and over TLS with
certificates the test makes: acknowledgements, refusals, silence, wrong answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.clock import ManualClock
from gateway.sync.delivery import Batch, DestinationUnavailable
from gateway.sync.hl7 import Sender
from gateway.sync.mllp import MllpDestination
from gateway.twin.store import OutboxItem
from tests.support.hl7_peer import hl7_peer
from tests.support.net import free_port
from tests.support.sync import PATIENT, T0
from tests.support.tls import make_pki

SENDER = Sender("gw-ward3", facility="WARD3")


def numerics(n: int, *, admission: int = 1, start: int = 1) -> list[OutboxItem]:
    return [
        OutboxItem(
            r,
            "numeric",
            r,
            0,
            T0,
            "bed-1",
            admission,
            "ox-1/MDC_PULS_OXIM_SAT_O2",
            r,
            T0 + r,
            {"value": 90.0 + r % 10, "unit": "%", "status": []},
        )
        for r in range(start, start + n)
    ]


def alarm(row: int) -> OutboxItem:
    record = {
        "alarm": f"bed-1/ox-1/spo2_low/{row}",
        "change": "raised",
        "state": "active",
        "condition": "spo2_low",
        "alarm_kind": "physiological",
        "priority": "medium",
        "code": "MDC_PULS_OXIM_SAT_O2",
        "value": 85.0,
        "low": 90,
        "high": 100,
        "unit": "%",
        "message": "SpO2 low",
    }
    return OutboxItem(row, "alarm", row, 0, T0, "bed-1", 1, "alarms/bed-1", row, T0 + row, record)


def destination(port: int, clock: ManualClock, **kw: object) -> MllpDestination:
    return MllpDestination(
        "hie", host="127.0.0.1", port=port, sender=SENDER, clock=clock, per_message=2, **kw
    )  # type: ignore[arg-type]


async def test_every_message_acknowledged_aa_is_accepted_in_order() -> None:
    clock = ManualClock()
    with hl7_peer() as (peer, port):
        dest = destination(port, clock)
        items = [alarm(100), *numerics(5)]
        delivery = await dest.send(Batch(tuple(items), {1: PATIENT}))
        await dest.close()
    assert [i.row_id for i in delivery.accepted] == [100, 1, 2, 3, 4, 5]
    assert not delivery.refused and not delivery.retry
    assert delivery.sent_bytes == sum(len(t) for t in peer.raw)
    types = [m.msh.msh_9.to_er7() for m in peer.messages]
    assert types == ["ORU^R40^ORU_R40"] + ["ORU^R01^ORU_R01"] * 3
    assert [m.msh.msh_10.to_er7() for m in peer.messages] == ["A100", "N1x2", "N3x2", "N5"]
    assert all("MRN-0042" in raw for raw in peer.raw)


async def test_ae_and_ar_dead_letter_that_message_only() -> None:
    clock = ManualClock()
    with hl7_peer() as (peer, port):
        peer.script = ["AA", "AE", "AR"]
        dest = destination(port, clock)
        delivery = await dest.send(Batch(tuple(numerics(8))))
        await dest.close()
    assert [i.row_id for i in delivery.accepted] == [1, 2, 7, 8]
    assert [[i.row_id for i in r.items] for r in delivery.refused] == [[3, 4], [5, 6]]
    first = delivery.refused[0].reason
    assert first == "AE at PID^1^5 101^Required field missing^HL70357"
    assert "Lee" not in first  # free text that may echo patient data is not kept
    assert delivery.refused[1].reason.startswith("AR")


async def test_a_silent_receiver_times_out_on_the_injected_clock() -> None:
    clock = ManualClock()
    with hl7_peer() as (peer, port):
        peer.script = ["none"]
        dest = destination(port, clock, timeout=10.0)
        sending = asyncio.create_task(dest.send(Batch(tuple(numerics(2)))))
        for _ in range(2000):
            if peer.raw and clock.sleepers:
                break
            await asyncio.sleep(0.002)  # the peer's thread receives the message
        await clock.advance(9.0)
        assert not sending.done()
        await clock.advance(1.5)
        with pytest.raises(DestinationUnavailable, match="no acknowledgement within 10 s"):
            await sending
        await dest.close()


async def test_part_delivered_then_silence_returns_what_was_confirmed() -> None:
    clock = ManualClock()
    with hl7_peer() as (peer, port):
        peer.script = ["AA", "none"]
        dest = destination(port, clock, timeout=5.0)
        sending = asyncio.create_task(dest.send(Batch(tuple(numerics(6)))))
        for _ in range(2000):
            if len(peer.raw) == 2 and clock.sleepers:
                break
            await asyncio.sleep(0.002)
        await clock.advance(6.0)
        delivery = await sending
        await dest.close()
    assert [i.row_id for i in delivery.accepted] == [1, 2]
    assert [i.row_id for i in delivery.retry] == [3, 4, 5, 6]
    assert "no acknowledgement" in delivery.retry_reason


async def test_an_ack_for_another_message_is_not_taken_as_confirmation() -> None:
    clock = ManualClock()
    with hl7_peer() as (peer, port):
        peer.script = ["wrong-id", "wrong-id"]
        dest = destination(port, clock)
        with pytest.raises(DestinationUnavailable, match="expected 'N1x2'"):
            await dest.send(Batch(tuple(numerics(2))))
        await dest.close()


async def test_nobody_listening_is_unavailable_with_the_target_named() -> None:
    clock = ManualClock()
    dest = destination(free_port(), clock)
    with pytest.raises(DestinationUnavailable, match=r"cannot connect to mllp://127\.0\.0\.1"):
        await dest.send(Batch(tuple(numerics(1))))


async def test_mutual_tls_delivers_and_a_server_from_another_ca_is_refused(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    good, other = make_pki(tmp_path / "good"), make_pki(tmp_path / "other", ca_name="rogue")
    with hl7_peer(tls=good.server_context()) as (peer, port):
        dest = destination(port, clock, tls=good.client_context(), server_hostname="localhost")
        delivery = await dest.send(Batch(tuple(numerics(2))))
        await dest.close()
    assert [i.row_id for i in delivery.accepted] == [1, 2] and len(peer.raw) == 1
    assert dest.info.target.startswith("mllps://")

    with hl7_peer(tls=other.server_context()) as (peer, port):
        dest = destination(port, clock, tls=good.client_context(), server_hostname="localhost")
        with pytest.raises(DestinationUnavailable, match="TLS"):
            await dest.send(Batch(tuple(numerics(2))))
        await dest.close()
    assert peer.raw == []


async def test_a_receiver_answering_without_mllp_framing_is_unavailable_not_a_crash() -> None:
    """A port that is not an MLLP listener (here: an HTTP server's answer) gives a block
    python-hl7 calls invalid; that is the receiver's trouble, to retry, not a bug."""

    async def not_mllp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n\x1c\x0d")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_mllp, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dest = destination(port, ManualClock())
    try:
        with pytest.raises(DestinationUnavailable, match="connection lost"):
            await dest.send(Batch(tuple(numerics(1))))
    finally:
        await dest.close()
        server.close()
        await server.wait_closed()
