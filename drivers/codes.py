"""IEEE 11073-10101 (MDC) nomenclature and UCUM units used by the drivers and the gateway.

Context-free codes are partition * 65536 + term code (see ``protocols.md`` section 7.1);
the values here follow the IHE PCD Technical Framework tables quoted in section 7.2.
Only codes the project uses or is about to use (ECG, from the ECG issue) belong here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit of measure: its UCUM string and its MDC dimension code."""

    ucum: str
    mdc_refid: str
    mdc_code: int


@dataclass(frozen=True, slots=True)
class Code:
    """An MDC term: reference id (``MDC_PULS_OXIM_SAT_O2``) and context-free code (150456)."""

    refid: str
    cf_code: int

    @property
    def partition(self) -> int:
        return self.cf_code >> 16

    @property
    def term(self) -> int:
        return self.cf_code & 0xFFFF


# --- units (MDC partition 4) --------------------------------------------------------------
PERCENT = Unit("%", "MDC_DIM_PERCENT", 262688)
BEATS_PER_MINUTE = Unit("/min", "MDC_DIM_BEAT_PER_MIN", 264864)
DIMENSIONLESS = Unit("1", "MDC_DIM_DIMLESS", 262656)
MILLIVOLT = Unit("mV", "MDC_DIM_MILLI_VOLT", 266418)

# --- metrics (partition 2, SCADA) ----------------------------------------------------------
SPO2 = Code("MDC_PULS_OXIM_SAT_O2", 150456)
PULSE_RATE = Code("MDC_PULS_OXIM_PULS_RATE", 149530)
PLETH = Code("MDC_PULS_OXIM_PLETH", 150452)
PERFUSION_INDEX = Code("MDC_PULS_OXIM_PERF_REL", 150448)
ECG_HEART_RATE = Code("MDC_ECG_HEART_RATE", 147842)
ECG_LEAD_II = Code("MDC_ECG_ELEC_POTL_II", 131330)

# --- devices (partition 1) -----------------------------------------------------------------
DEV_SAT_O2_VMD = Code("MDC_DEV_ANALY_SAT_O2_VMD", 69642)

#: Every code above by reference id, for lookups from config, captures and the API.
BY_REFID: dict[str, Code] = {
    c.refid: c for c in (SPO2, PULSE_RATE, PLETH, PERFUSION_INDEX, ECG_HEART_RATE, ECG_LEAD_II)
}


def code_named(refid: str) -> Code | None:
    """The code with reference id ``refid`` among every :class:`Code` in this module."""
    found = BY_REFID.get(refid)
    if found is None:
        found = next(
            (v for v in globals().values() if isinstance(v, Code) and v.refid == refid), None
        )
    return found


def unit_for_ucum(ucum: str) -> Unit | None:
    """The unit whose UCUM string is ``ucum`` among every :class:`Unit` in this module."""
    return next((v for v in globals().values() if isinstance(v, Unit) and v.ucum == ucum), None)


# --- Masimo ASCII 1 metrics (drivers/oximetry/masimo.py) -----------------------------------
# [U] protocols.md (4c, 7.2) gives no MDC code for SpCO, SpMet, PVI, the desaturation index or
# PI delta, and no standard code for them was verified. Until they are checked against
# ISO/IEEE 11073-10101 (NIST RTMMS, IHE PCD Rosetta) they use term codes from partition 2's
# private range (0xF000-0xFBFF; that this range is private is itself [U]) under refids marked
# PRIV, so nothing downstream takes them for standard terms. Replace the numbers once verified.
SPCO = Code("MDC_PRIV_MASIMO_SAT_CO", 192768)  # 2::0xF100, carboxyhaemoglobin SpCO, %
SPMET = Code("MDC_PRIV_MASIMO_SAT_MET", 192772)  # 2::0xF104, methaemoglobin SpMet, %
PVI = Code("MDC_PRIV_MASIMO_PLETH_VAR_INDEX", 192776)  # 2::0xF108, pleth variability, %
DESAT_INDEX = Code("MDC_PRIV_MASIMO_DESAT_INDEX", 192780)  # 2::0xF10C, desaturation count
PI_DELTA = Code("MDC_PRIV_MASIMO_PERF_REL_DELTA", 192784)  # 2::0xF110, PI change, % [U]
BY_REFID.update({c.refid: c for c in (SPCO, SPMET, PVI, DESAT_INDEX, PI_DELTA)})

# --- ECG limb leads I and III (drivers/ecg/openbci.py) -------------------------------------
# protocols.md 7.2, ECG lead II row: lead I 131329, lead III 131389 (HL7 uv-pocd ECG example).
ECG_LEAD_I = Code("MDC_ECG_ELEC_POTL_I", 131329)
ECG_LEAD_III = Code("MDC_ECG_ELEC_POTL_III", 131389)
BY_REFID.update({c.refid: c for c in (ECG_LEAD_I, ECG_LEAD_III)})

# --- infusion pumps (drivers/infusion/) ----------------------------------------------------
# protocols.md 6.3 and 7.2 (IHE PCD TF Vol 3 Table 7.1.2-1); CF codes are partition * 65536
# + term. MDC_DIM_MIN is term 2208 (4::2208), as in the IEEE 11073-20601 nomenclature headers.
MILLILITRE = Unit("mL", "MDC_DIM_MILLI_L", 263762)
MILLILITRE_PER_HOUR = Unit("mL/h", "MDC_DIM_MILLI_L_PER_HR", 265266)
MINUTE = Unit("min", "MDC_DIM_MIN", 264352)
PUMP_RATE = Code("MDC_FLOW_FLUID_PUMP", 157784)  # 2::26712, current rate, mL/h
PUMP_VOLUME_INFUSED = Code("MDC_VOL_FLUID_DELIV", 157864)  # 2::26792, this program, mL
PUMP_VTBI = Code("MDC_VOL_FLUID_TBI", 157884)  # programmed volume to be infused, mL
PUMP_VTBI_REMAINING = Code("MDC_VOL_FLUID_TBI_REMAIN", 157872)  # 2::26800, mL
#: Time to end of infusion, min. Derived by the gateway (VTBI remaining / rate), not read.
PUMP_TIME_REMAINING = Code("MDC_TIME_PD_REMAIN", 157916)  # 2::26844
#: Operational state; value = drivers.infusion.profile.PumpState (0 off .. 9 priming), 1.
PUMP_STATUS = Code("MDC_PUMP_STAT", 184508)  # 2::53436
# [U] No verified MDC terms for battery charge or drug concentration, nor a verified unit
# code for mg/mL: private-range codes, marked PRIV like the Masimo ones above.
PUMP_BATTERY = Code("MDC_PRIV_PUMP_BATT_CHARGE", 193024)  # 2::0xF200, %
PUMP_CONCENTRATION = Code("MDC_PRIV_PUMP_DRUG_CONC", 193028)  # 2::0xF204, mg/mL
MILLIGRAM_PER_MILLILITRE = Unit("mg/mL", "MDC_PRIV_DIM_MILLI_G_PER_ML", 323584)  # 4::0xF000
BY_REFID.update(
    {
        c.refid: c
        for c in (
            PUMP_RATE,
            PUMP_VOLUME_INFUSED,
            PUMP_VTBI,
            PUMP_VTBI_REMAINING,
            PUMP_TIME_REMAINING,
            PUMP_STATUS,
            PUMP_BATTERY,
            PUMP_CONCENTRATION,
        )
    }
)

# --- Bluetooth LE drivers (drivers/ecg/heart_rate.py, drivers/ecg/polar_h10.py) ------------
# RR interval: MDC_ECG_TIME_PD_RR_GL, term 16168 in partition 2 (2 * 65536 + 16168 = 147240),
# the code the HL7 Germany MII cardiology IG uses for RR in ms; not in protocols.md 7.2, so
# [U] until checked against NIST RTMMS. Milliseconds: MDC_DIM_MILLI_SEC 4::2194 (seconds
# 2176 plus the milli offset 18, as mV is volts 4256 plus 18).
# Single-lead chest ECG (Polar H10): protocols.md 7.2 gives the lead-group code
# MDC_ECG_ELEC_POTL 131328, used for a lead that is not one of the standard limb leads.
MILLISECOND = Unit("ms", "MDC_DIM_MILLI_SEC", 264338)
ECG_RR_INTERVAL = Code("MDC_ECG_TIME_PD_RR_GL", 147240)
ECG_LEAD_UNSPECIFIED = Code("MDC_ECG_ELEC_POTL", 131328)
BY_REFID.update({c.refid: c for c in (ECG_RR_INTERVAL, ECG_LEAD_UNSPECIFIED)})

# --- ECG analysis (gateway/analysis/service.py) --------------------------------------------
# PVCs per minute derived by the gateway's rhythm analysis. protocols.md gives no code; the
# standard term (MDC_ECG_V_P_C_RATE) was not verified, so [U]: a private partition-2 term
# (0xF200, next to the Masimo block) under a PRIV refid, in /min. Replace once verified.
ECG_PVC_RATE = Code("MDC_PRIV_ECG_V_P_C_RATE", 193024)  # 2::0xF200
BY_REFID.update({ECG_PVC_RATE.refid: ECG_PVC_RATE})
