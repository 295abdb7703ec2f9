"""The cached time formats and the UUID-5 shortcut give exactly the library's text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sync.fhir import name_uuid
from gateway.sync.instant import fhir_instant, hl7_timestamp, split_milliseconds

# 1970 to 2100, with fractions that include the rounding edges (x.9995, x.9999995 ...).
instants = st.one_of(
    st.floats(min_value=0.0, max_value=4_102_444_800.0, allow_nan=False),
    st.integers(min_value=0, max_value=4_102_444_799).flatmap(
        lambda s: st.sampled_from([s + 0.0005, s + 0.9995, s + 0.9999995, s + 0.999999, s + 1e-7])
    ),
)


def reference_hl7(t: float) -> str:
    moment = datetime.fromtimestamp(t, UTC)
    return moment.strftime("%Y%m%d%H%M%S.") + f"{moment.microsecond // 1000:03d}+0000"


@settings(max_examples=2000, deadline=None)
@given(t=instants)
def test_formats_equal_datetime(t: float) -> None:
    assert hl7_timestamp(t) == reference_hl7(t)
    assert fhir_instant(t) == datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def test_examples() -> None:
    t = 1_767_225_600.25  # 2026-01-01T00:00:00.250Z
    assert hl7_timestamp(t) == "20260101000000.250+0000"
    assert fhir_instant(t) == "2026-01-01T00:00:00.250+00:00"
    # Half a microsecond below the next second rounds up into it, as datetime does.
    assert split_milliseconds(1_767_225_599.9999996) == (1_767_225_600, 0)
    assert split_milliseconds(1_767_225_599.9995) == (1_767_225_599, 999)


@settings(max_examples=1000, deadline=None)
@given(name=st.text(max_size=80))
def test_name_uuid_is_uuid5(name: str) -> None:
    try:
        expected = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    except UnicodeEncodeError:  # a lone surrogate: refused the same way
        with pytest.raises(UnicodeEncodeError):
            name_uuid(name)
        return
    assert name_uuid(name) == expected
