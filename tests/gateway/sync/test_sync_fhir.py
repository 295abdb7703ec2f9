"""FHIR R4 over HTTPS with mutual TLS against a real receiver (aiohttp) that validates
every Bundle with an independent FHIR library; status handling per entry and request."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from drivers.clock import ManualClock
from gateway.sync.delivery import Batch, DestinationUnavailable
from gateway.sync.fhir import FhirContext, batch_bundle, entry_statuses
from gateway.sync.https import FhirDestination
from gateway.twin.store import OutboxItem
from tests.support.fhir_server import fhir_server
from tests.support.sync import PATIENT, T0
from tests.support.tls import Pki, make_pki

CONTEXT = FhirContext("gw-ward3", mrn_system="urn:oid:1.2.3.4")


def numerics(n: int, start: int = 1, value: float | None = 96.0) -> tuple[OutboxItem, ...]:
    return tuple(
        OutboxItem(
            r,
            "numeric",
            r,
            0,
            T0,
            "bed-1",
            1,
            "ox-1/MDC_PULS_OXIM_SAT_O2",
            r,
            T0 + r,
            {"value": value, "unit": "%", "status": [] if value else ["unavailable"]},
        )
        for r in range(start, start + n)
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def destination(url: str, pki: Pki, clock: ManualClock, **kw: object) -> FhirDestination:
    return FhirDestination(
        "ehr", base_url=url, context=CONTEXT, clock=clock, tls=pki.client_context(), **kw
    )  # type: ignore[arg-type]


async def test_a_batch_arrives_as_valid_r4_with_pocd_content(pki: Pki) -> None:
    clock = ManualClock()
    async with fhir_server(pki.server_context()) as (server, url):
        dest = destination(url, pki, clock)
        items = numerics(2) + numerics(1, start=3, value=None)
        delivery = await dest.send(Batch(items, {1: PATIENT}))
        await dest.close()
    assert [i.row_id for i in delivery.accepted] == [1, 2, 3]
    bundle = server.bundles[0]
    assert bundle.type == "batch"
    resources = [e.resource for e in bundle.entry]
    assert isinstance(resources[0], Device)
    observations = [r for r in resources if isinstance(r, Observation)]
    assert len(observations) == 3
    first = observations[0]
    assert first.code.coding[0].system == "urn:iso:std:iso:11073:10101"
    assert first.code.coding[0].code == "150456"
    assert first.code.coding[1].code == "59408-5"  # LOINC for the vital-signs profile
    assert first.valueQuantity.value == 96 and first.valueQuantity.code == "%"
    assert first.valueQuantity.system == "http://unitsofmeasure.org"
    assert first.subject.identifier.value == "MRN-0042"
    assert first.device.reference == f"Device/{CONTEXT.device_id('ox-1')}"
    missing = observations[2]
    assert missing.valueQuantity is None and missing.dataAbsentReason is not None
    assert missing.interpretation[0].coding[0].code == "unavailable"
    # Every entry is an idempotent PUT to a deterministic id.
    requests = [(e.request.method, e.request.url) for e in bundle.entry]
    assert all(method == "PUT" for method, _ in requests)
    assert requests[1][1] == f"Observation/{CONTEXT.resource_id('numeric', '1')}"


async def test_resending_uses_the_same_resource_ids(pki: Pki) -> None:
    clock = ManualClock()
    async with fhir_server(pki.server_context()) as (server, url):
        dest = destination(url, pki, clock)
        await dest.send(Batch(numerics(2)))
        await dest.send(Batch(numerics(2)))
        await dest.close()
    urls = [[e["request"]["url"] for e in raw["entry"]] for raw in server.raw]
    assert urls[0] == urls[1]


async def test_server_errors_retry_and_bad_requests_dead_letter(pki: Pki) -> None:
    clock = ManualClock()
    async with fhir_server(pki.server_context()) as (server, url):
        server.script = ["500", "401", "400", "entry-422"]
        dest = destination(url, pki, clock)
        with pytest.raises(DestinationUnavailable, match="HTTP 500"):
            await dest.send(Batch(numerics(2)))
        with pytest.raises(DestinationUnavailable, match="HTTP 401"):
            await dest.send(Batch(numerics(2)))
        refused = await dest.send(Batch(numerics(2)))
        partly = await dest.send(Batch(numerics(3)))
        await dest.close()
    assert refused.accepted == () and "HTTP 400" in refused.refused[0].reason
    assert [i.row_id for i in partly.accepted] == [1, 2]
    assert [i.row_id for r in partly.refused for i in r.items] == [3]


async def test_a_server_that_does_not_answer_times_out_on_the_clock(pki: Pki) -> None:
    clock = ManualClock()
    async with fhir_server(pki.server_context()) as (server, url):
        server.script = ["hold"]
        dest = destination(url, pki, clock, timeout=15.0)
        sending = asyncio.create_task(dest.send(Batch(numerics(1))))
        for _ in range(2000):
            if server.raw and clock.sleepers:
                break
            await asyncio.sleep(0.002)  # the request reaches the server
        await clock.advance(16.0)
        with pytest.raises(DestinationUnavailable, match="no answer within 15 s"):
            await sending
        await dest.close()


async def test_certificates_are_always_verified(tmp_path: Path, pki: Pki) -> None:
    clock = ManualClock()
    rogue = make_pki(tmp_path / "rogue", ca_name="rogue")
    async with fhir_server(rogue.server_context(require_client=False)) as (server, url):
        dest = destination(url, pki, clock)
        with pytest.raises(DestinationUnavailable, match=r"TLS|certificate"):
            await dest.send(Batch(numerics(1)))
        await dest.close()
    assert server.raw == []
    with pytest.raises(ValueError, match="https"):
        destination("http://localhost/fhir", pki, clock)


async def test_a_client_without_the_required_certificate_is_turned_away(pki: Pki) -> None:
    clock = ManualClock()
    bare = ssl.create_default_context(cafile=str(pki.ca))  # trusts the server, no client cert
    async with fhir_server(pki.server_context()) as (server, url):
        dest = FhirDestination("ehr", base_url=url, context=CONTEXT, clock=clock, tls=bare)
        with pytest.raises(DestinationUnavailable):
            await dest.send(Batch(numerics(1)))
        await dest.close()
    assert server.raw == []


def test_batch_responses_are_read_strictly() -> None:
    ok = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [{"response": {"status": "200 OK"}}, {"response": {"status": "404"}}],
    }
    assert entry_statuses(ok) == [200, 404]
    with pytest.raises(ValueError):
        entry_statuses({"resourceType": "OperationOutcome"})
    with pytest.raises(ValueError):
        entry_statuses(
            {
                "resourceType": "Bundle",
                "type": "batch-response",
                "entry": [{"response": {"status": "fine"}}],
            }
        )


@pytest.mark.parametrize(
    "answer",
    [
        [],
        "Bundle",
        {"resourceType": "Bundle", "type": "batch-response", "entry": {"response": "200"}},
        {"resourceType": "Bundle", "type": "batch-response", "entry": ["200 OK"]},
        {"resourceType": "Bundle", "type": "batch-response", "entry": [{"response": "200"}]},
    ],
)
def test_an_oddly_shaped_answer_is_a_value_error_not_a_crash(answer: object) -> None:
    # The destination maps ValueError to "retry later"; anything else would be a bug.
    with pytest.raises(ValueError):
        entry_statuses(answer)


def test_unitless_and_non_finite_values_stay_valid_r4() -> None:
    def item(row: int, value: float) -> OutboxItem:
        record = {"value": value, "unit": "", "status": []}
        stream = "ox-1/MDC_PULS_OXIM_PERF_REL"
        return OutboxItem(row, "numeric", row, 0, T0, "bed-1", 1, stream, row, T0, record)

    values = [2.0, float("nan"), float("inf"), float("-inf")]
    bundle, _ = batch_bundle([item(r, v) for r, v in enumerate(values, 1)], {}, CONTEXT)
    # Strict JSON (no NaN) and valid R4: an empty unit string would fail the validator.
    text = json.dumps(bundle, allow_nan=False)
    parsed = Bundle.model_validate(json.loads(text))
    observations = [e.resource for e in parsed.entry if isinstance(e.resource, Observation)]
    assert observations[0].valueQuantity.value == 2 and observations[0].valueQuantity.unit is None
    reasons = [o.dataAbsentReason.coding[0].code for o in observations[1:]]
    assert reasons == ["not-a-number", "positive-infinity", "negative-infinity"]
    assert all(o.valueQuantity is None for o in observations[1:])


async def test_a_batch_too_large_for_the_server_goes_in_halves_not_to_dead_letters(
    pki: Pki,
) -> None:
    # The receiver is aiohttp with its default 1 MiB body limit (nginx's default is 1 MB
    # too): ~2,500 observations are over it, so it answers 413 for the whole batch.
    clock = ManualClock()
    async with fhir_server(pki.server_context()) as (server, url):
        dest = destination(url, pki, clock)
        delivery = await dest.send(Batch(numerics(2500), {1: PATIENT}))
        await dest.close()
    assert delivery.refused == () and delivery.retry == ()
    assert [i.row_id for i in delivery.accepted] == list(range(1, 2501))
    delivered = [e.request.url for b in server.bundles for e in b.entry if "Obs" in e.request.url]
    assert len(delivered) == 2500 and len(server.bundles) >= 2
