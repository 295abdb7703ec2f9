"""The store's side of sync: pending entries come out decrypted, in priority then commit
order; unreadable rows are dead-lettered, not returned and not left to block the queue."""

from __future__ import annotations

from pathlib import Path

from drivers.codes import PERCENT, SPO2
from drivers.readings import Condition, DeviceEvent, Numeric
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import Destination, TwinStore
from tests.support.sync import PATIENT, T0

ALL = Destination("all", frozenset({"alarm", "audit", "event", "numeric"}))


def test_a_batch_is_decrypted_and_ordered_by_priority_then_commit(tmp_path: Path) -> None:
    with TwinStore(tmp_path / "t.sqlite", KeyRing(generate_kek()), destinations=[ALL]) as store:
        store.admit("bed-1", PATIENT, T0)
        store.write([("bed-1", Numeric("ox-1", SPO2, 97.0, PERCENT, T0 + 1))], T0 + 1)
        store.write(
            [("bed-1", DeviceEvent("ox-1", Condition.SENSOR_OFF, True, T0 + 2, "probe"))], T0 + 2
        )
        store.write([("bed-1", Numeric("ox-1", SPO2, 96.0, PERCENT, T0 + 3))], T0 + 3)
        store.write_alarm("bed-1", "ox-1", {"alarm": "a1", "change": "raised"}, T0 + 4, T0 + 4)
        store.audit("rn-kim", "acknowledge", bed_id="bed-1", detail="a1", now=T0 + 5)

        items = store.outbox_batch("all", T0 + 10)
        assert [i.kind for i in items] == ["alarm", "audit", "event", "numeric", "numeric"]
        assert items[0].record == {"alarm": "a1", "change": "raised"}
        assert items[1].record["actor"] == "rn-kim" and items[1].admission is None
        assert items[2].record["condition"] == "sensor_off" and items[2].record["active"]
        assert [i.record["value"] for i in items[3:]] == [97.0, 96.0]
        assert all(i.bed_id == "bed-1" for i in items)
        assert items[3].stream == "ox-1/MDC_PULS_OXIM_SAT_O2"
        assert store.backlog("all")["numeric"]["count"] == 2

        store.ack([i.outbox_id for i in items[:2]], T0 + 11)
        assert [i.kind for i in store.outbox_batch("all", T0 + 12, limit=2)] == [
            "event",
            "numeric",
        ]


def test_an_unreadable_row_is_dead_lettered_and_reported(tmp_path: Path) -> None:
    with TwinStore(tmp_path / "t.sqlite", KeyRing(generate_kek()), destinations=[ALL]) as store:
        store.admit("bed-1", PATIENT, T0)
        store.write(
            [("bed-1", Numeric("ox-1", SPO2, float(v), PERCENT, T0 + v)) for v in (90, 91, 92)],
            T0 + 5,
        )
        # Tamper with the middle row's ciphertext, as a damaged sector would.
        row = store.db.conn.execute("SELECT id FROM numerics ORDER BY id LIMIT 1 OFFSET 1")
        (row_id,) = row.fetchone()
        store.db.conn.execute(
            "UPDATE numerics SET sealed = zeroblob(length(sealed)) WHERE id = ?", (row_id,)
        )
        failures: list[str] = []
        items = store.outbox_batch("all", T0 + 10, failures=failures)
        assert [i.record["value"] for i in items] == [90.0, 92.0]
        assert len(failures) == 1
        letters = store.dead_letters("all")
        assert [(d["kind"], d["row_id"]) for d in letters] == [("numeric", row_id)]
        assert letters[0]["reason"] == "row does not authenticate"
        assert store.backlog("all")["numeric"]["count"] == 2
