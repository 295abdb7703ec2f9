"""The ``bedside-gateway`` command.

Exit status: 0 success; 1 runtime failure (cannot listen, a core task died); 2 unusable
input (configuration, settings, capture file, command line). ``status``: 0 healthy, 1
degraded (something needs a technician), 2 cannot reach the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from pydantic import ValidationError

from drivers import registry
from drivers.capture import CaptureError, decode, read_capture, read_raw, reading_to_json
from drivers.clock import SystemClock
from drivers.device import SerialDeviceModel
from drivers.readings import Reading
from gateway import __version__
from gateway.config import Config, ConfigError, load
from gateway.instance import DataDirInUse, InstanceLock
from gateway.twin.crypto import KeyProblem
from gateway.twin.errors import StoreError
from gateway.twin.keys import KeySource, init_key, load_keyring, rotate, status
from gateway.twin.vocabulary import Patient

if TYPE_CHECKING:
    from gateway.health import Verdict
    from gateway.twin.store import TwinStore

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: `status` only: the daemon did not answer (or not as a bedside-gateway).
EXIT_UNREACHABLE = 2
DEFAULT_CONFIG = Path(os.environ.get("BEDSIDE_GATEWAY_CONFIG", "config.toml"))

DESCRIPTION = """\
bedside-gateway: edge gateway for bedside medical devices.

Reads pulse oximeters (and, as the project grows, ECG sources and infusion pumps) over
their real wire protocols, keeps a live picture of every bed, and serves it to nurses on
a page (http://127.0.0.1:8080 by default) and to tools as JSON (/api/beds).
"""

EPILOG = """\
commands:
  run           start the daemon on a config file (the shipped config.toml runs a
                simulated ward of 4 beds); stop it with Ctrl-C or SIGTERM
  check-config  validate a config file; prints every problem, one per line, exit 2
  decode        turn a capture file of device traffic into JSON lines of readings
  status        ask a running daemon for a summary of its beds and devices
  keys          create (init), rotate or inspect (status) the encryption key
  admit         bind a patient to a bed (starts an admission with its own data key)
  discharge     end a bed's admission (its data is destroyed after retention)
  export        decrypt a bed's stored data to csv, json, WFDB, or HL7/FHIR payloads
  scan          list serial ports; --probe recognises the protocol on each;
                --modbus / --modbus-serial list the pumps that answer and their profile
  capture       record a port's raw traffic (or a Modbus pump's polls) for decode
  users         add, remove or list the people who may log in to the page
  ecg analyze   run a WFDB record through the ECG analysis to beats/events CSV

Run 'bedside-gateway COMMAND --help' for a command's options.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bedside-gateway",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bedside-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="start the daemon",
        description="Start the gateway: devices, live twin, and the page with its API.",
    )
    _config_option(run)
    run.add_argument(
        "--data-dir", type=Path, help="directory for state (overrides [gateway] data_dir)"
    )
    run.add_argument(
        "--log-format",
        choices=("json", "console"),
        default="json",
        help="json lines for journald (default) or console text for people",
    )
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(handler=_cmd_run)

    check = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate a config file. Exit 0 if usable, 2 with one line per problem.",
    )
    _config_option(check)
    check.add_argument(
        "--user",
        help="check port access for this user (default: bedside-gateway if it exists, else you)",
    )
    check.set_defaults(handler=_cmd_check_config)

    dec = sub.add_parser(
        "decode",
        help="decode a capture file to JSON lines",
        description=(
            "Replay recorded device traffic through a driver's codec and print one JSON "
            "object per reading: type (numeric, waveform, event, identity), code (MDC "
            "reference id), value, unit (UCUM), t (UTC seconds); events add condition and "
            'active. Input is a capture (JSON lines of {"t": seconds, "rx": "hex"}) '
            "or, with --raw, the bytes as received."
        ),
    )
    dec.add_argument("--driver", required=True, help=f"driver name: {', '.join(registry.names())}")
    dec.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="driver setting, e.g. --set data_format=2 (repeatable)",
    )
    dec.add_argument("--raw", action="store_true", help="FILE is raw binary, not a capture")
    dec.add_argument(
        "--profile",
        help="register-map profile of a Modbus pump (same as --set profile=NAME); a Modbus "
        'capture is JSON lines of {"t", "unit", "fc", "address", "rx"}',
    )
    dec.add_argument("file", type=Path, metavar="FILE")
    dec.set_defaults(handler=_cmd_decode)

    keys = sub.add_parser(
        "keys",
        help="create, rotate or inspect the encryption key",
        description=(
            "Manage the key-encryption key that protects every admission's data key. "
            "init creates it (mode 0600); rotate re-wraps every data key under a new one "
            "without rewriting data; status says which key is in use and which the store needs."
        ),
    )
    keys.add_argument("action", choices=("init", "rotate", "status"))
    _config_option(keys)
    keys.add_argument("--data-dir", type=Path, help="overrides [gateway] data_dir")
    keys.add_argument("--key-file", type=Path, help="key file (default: from the config)")
    keys.add_argument("--json", action="store_true", help="status as JSON")
    keys.set_defaults(handler=_cmd_keys)

    admit = sub.add_parser(
        "admit",
        help="bind a patient to a bed",
        description=(
            "Start a new admission at a bed (ending any open one). The patient's identifiers "
            "are read from standard input (name=, mrn=, birth_date=YYYY-MM-DD lines, or "
            "prompts at a terminal), never from the command line, which other users can see."
        ),
    )
    _config_option(admit)
    admit.add_argument("--data-dir", type=Path, help="overrides [gateway] data_dir")
    admit.add_argument("--bed", required=True)
    admit.set_defaults(handler=_cmd_admit)

    discharge = sub.add_parser(
        "discharge",
        help="end a bed's admission",
        description=(
            "End the open admission at a bed. Its data stays for the configured retention "
            "and until synced; then its data key is destroyed and the data is unrecoverable."
        ),
    )
    _config_option(discharge)
    discharge.add_argument("--data-dir", type=Path, help="overrides [gateway] data_dir")
    discharge.add_argument("--bed", required=True)
    discharge.set_defaults(handler=_cmd_discharge)

    export = sub.add_parser(
        "export",
        help="decrypt and export a bed's stored data",
        description=(
            "Decrypt a bed's stored data and write it out: numerics, device events and alarms "
            "as csv or json, waveforms as a WFDB record, or the HL7 v2 or FHIR payloads sync "
            "sends. Needs the key; every export is "
            "written to the audit log."
        ),
    )
    _config_option(export)
    export.add_argument("--data-dir", type=Path, help="overrides [gateway] data_dir")
    export.add_argument("--bed", required=True)
    export.add_argument("--from", dest="t_from", help="start time, ISO 8601 (UTC if no zone)")
    export.add_argument("--to", dest="t_to", help="end time, ISO 8601 (UTC if no zone)")
    export.add_argument(
        "--format",
        required=True,
        choices=("csv", "json", "wfdb", "hl7", "fhir"),
        help="csv/json/wfdb: the stored data; hl7/fhir: the payloads sync sends",
    )
    export.add_argument(
        "--out", required=True, type=Path, help="output file (csv, json) or directory (wfdb)"
    )
    export.set_defaults(handler=_cmd_export)

    scan = sub.add_parser(
        "scan",
        help="list serial ports and recognise what speaks on them",
        description=(
            "List serial ports with their USB vendor/product ids, serial numbers and "
            "/dev/serial/by-id names, and the driver each known adapter suggests. With "
            "--probe, listen on each port (never sending anything) at every line setting the "
            "drivers use and report which protocol it recognises."
        ),
    )
    scan.add_argument("--serial", action="store_true", help="serial ports (the default)")
    scan.add_argument(
        "--ble",
        action="store_true",
        help="Bluetooth LE devices advertising a supported service, for --seconds (default 5), "
        "on the config's [ble] backend and adapter",
    )
    _config_option(scan)
    scan.add_argument("--probe", action="store_true", help="listen and recognise protocols")
    scan.add_argument(
        "--port", action="append", default=[], help="probe this port (repeatable; default: all)"
    )
    scan.add_argument(
        "--seconds", type=float, default=5.0, help="listening time per line setting (default 5)"
    )
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.add_argument(
        "--udev-rule",
        metavar="NAME",
        help="print a udev rule naming the adapter on --port /dev/bedside/NAME "
        "(for /etc/udev/rules.d/99-bedside-serial.rules)",
    )
    _modbus_options(scan)
    scan.add_argument(
        "--units", default="1-247", help="Modbus unit ids to probe, e.g. 1-247 or 1,2,5 (default)"
    )
    scan.add_argument(
        "--timeout",
        type=float,
        default=0.1,
        help="seconds to wait for each Modbus unit (default 0.1: 247 ids in at most 25 s)",
    )
    scan.add_argument("--modbus-baud", type=int, default=19200, help="RTU line speed")
    scan.add_argument("--modbus-parity", choices=("N", "E", "O"), default="E")
    scan.set_defaults(handler=_cmd_scan)

    ecg = sub.add_parser("ecg", help="offline ECG tools", description="Offline ECG tools.")
    ecg_sub = ecg.add_subparsers(dest="ecg_command", metavar="ECG_COMMAND", required=True)
    analyze = ecg_sub.add_parser(
        "analyze",
        help="run a WFDB record through the streaming ECG analysis",
        description=(
            "Feed a WFDB record through the live ECG pipeline in 0.25 s chunks and write "
            "DIR/<name>.beats.csv (sample,time_s,label) and DIR/<name>.events.csv "
            "(onset_s,end_s,kind)."
        ),
    )
    analyze.add_argument("record", type=Path, help="record path without extension, e.g. data/100")
    analyze.add_argument(
        "--channel", type=int, default=None, help="signal index (default: MLII if present, else 0)"
    )
    analyze.add_argument("--out", type=Path, required=True, help="directory for the CSV files")
    analyze.add_argument(
        "--mains", type=float, choices=(50.0, 60.0), default=60.0, help="mains Hz (default 60)"
    )
    analyze.set_defaults(handler=_cmd_ecg_analyze)

    capture = sub.add_parser(
        "capture",
        help="record a port's raw traffic to a capture file",
        description=(
            'Record what a serial port receives, as JSON lines of {"t": seconds, "rx": '
            "\"hex\"}, for 'decode' or for a replayed device (replay = FILE in config.toml). "
            "Only listens: nothing is sent to the device."
        ),
    )
    capture.add_argument("--port", help="device path or pyserial URL")
    capture.add_argument(
        "--ble",
        metavar="ADDRESS",
        help='a Bluetooth LE device (with --driver); lines carry {"t", "char", "rx"}',
    )
    capture.add_argument("--driver", help="BLE driver whose characteristics to record")
    _config_option(capture)
    _modbus_options(capture)
    capture.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    capture.add_argument("--profile", default="generic", help="Modbus register-map profile")
    capture.add_argument(
        "--interval", type=float, default=1.0, help="seconds between Modbus polls (default 1)"
    )
    capture.add_argument("--baud", type=int, default=9600)
    capture.add_argument("--parity", choices=("N", "E", "O", "M", "S"), default="N")
    capture.add_argument("--bytesize", type=int, choices=(5, 6, 7, 8), default=8)
    capture.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    capture.add_argument("--seconds", type=float, required=True)
    capture.add_argument("--out", type=Path, required=True)
    capture.set_defaults(handler=_cmd_capture)

    status = sub.add_parser(
        "status",
        help="summarise a running daemon",
        description="Read the running daemon's API and print its beds, vitals and devices.",
    )
    _config_option(status)
    status.add_argument("--url", help="base URL of the daemon (default: from the config file)")
    status.add_argument("--json", action="store_true", help="print the raw API JSON instead")
    status.set_defaults(handler=_cmd_status)

    users = sub.add_parser(
        "users",
        help="add, remove or list page users",
        description=(
            "Manage who may log in to the nurse page ([web] users_file, default "
            "data_dir/users.json, mode 0600). 'add' reads the password from standard input "
            "(asked twice at a terminal; otherwise the first line), never from the command "
            "line; adding an existing name replaces its role and password. Roles: viewer, "
            "nurse, technician. Works while the gateway runs."
        ),
    )
    users.add_argument("action", choices=("add", "remove", "list"))
    users.add_argument("name", nargs="?", help="user name (add, remove)")
    users.add_argument("--role", choices=("viewer", "nurse", "technician"), help="for add")
    _config_option(users)
    users.set_defaults(handler=_cmd_users)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="config file (default: $BEDSIDE_GATEWAY_CONFIG or ./config.toml)",
    )


def _load_or_report(path: Path, data_dir: Path | None = None) -> Config | None:
    try:
        return load(path, data_dir=data_dir)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None


# -- run ------------------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    import logging

    from gateway import logs
    from gateway.daemon import Gateway
    from gateway.supervisor import EssentialTaskFailed
    from gateway.web.server import WebBindError

    config = _load_or_report(args.config, args.data_dir)
    if config is None:
        return EXIT_USAGE
    logs.configure(args.log_format, getattr(logging, args.log_level.upper()))
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"bedside-gateway: cannot use data directory {config.data_dir} ({exc.strerror}); "
            "fix [gateway] data_dir or --data-dir",
            file=sys.stderr,
        )
        return EXIT_USAGE
    lock = InstanceLock(config.data_dir)
    try:
        lock.acquire()
    except DataDirInUse as exc:
        print(f"bedside-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        store = _open_store(config, create_key=config.simulation)
    except (KeyProblem, StoreError) as exc:
        lock.release()
        print(f"bedside-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, KeyProblem) else EXIT_FAILURE
    try:
        asyncio.run(_serve(Gateway(config, store=store), args.config, args.data_dir))
    except WebBindError as exc:
        print(f"bedside-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ExceptionGroup as group:
        failed = group.subgroup(EssentialTaskFailed)
        if failed is None:
            raise
        names = ", ".join(str(e) for e in failed.exceptions)
        print(f"bedside-gateway: core task failed ({names}); see the log", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        store.close()
        lock.release()
    return EXIT_OK


async def _serve(gateway: Any, path: Path, data_dir: Path | None) -> None:
    """Run ``gateway``; SIGHUP re-reads and validates ``path`` without applying it."""
    import signal

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _check_reload, gateway.config, path, data_dir)
    try:
        await gateway.run()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def _check_reload(running: Config, path: Path, data_dir: Path | None) -> None:
    """SIGHUP: validate the config file again and say what would happen. Devices, beds and
    the store are wired at start, so a valid change is applied only by a restart; a bad
    file never touches the running gateway (it keeps its configuration)."""
    import structlog

    log = structlog.get_logger("gateway.reload")
    try:
        new = load(path, data_dir=data_dir)
    except ConfigError as exc:
        log.error("config reload refused; the running configuration stays", problems=exc.problems)
        return
    if new == running:
        log.info("config reload: file unchanged")
    else:
        log.warning("config file changed and is valid; restart the gateway to apply it")


def _key_source(config: Config) -> KeySource:
    return KeySource(config.store.key_file, config.store.credential)


def _open_store(config: Config, *, create_key: bool = False) -> TwinStore:
    from gateway.twin.store import (
        Destination,
        TwinStore,  # heavy (SQLite tooling): only when needed
    )

    ring = load_keyring(_key_source(config), create_if_missing=create_key)
    destinations = [Destination(d.name, d.carries) for d in config.destinations]
    store = TwinStore(
        config.store.path, ring, max_bytes=config.store.quota_bytes, destinations=destinations
    )
    # A store whose data keys need a KEK this gateway lacks (a lost key replaced by a new
    # one, a demo key made over a real store) would run with every store write failing.
    unknown = sorted(k for k in store.kek_ids() if k not in ring)
    if unknown:
        store.close()
        raise KeyProblem(
            f"the store {config.store.path} needs key-encryption key {', '.join(unknown)}, "
            f"which this gateway does not have (it has {ring.current.id}); restore the key "
            f"file {config.store.key_file} or the credential from your backup"
        )
    return store


# -- keys -----------------------------------------------------------------------------------
def _cmd_keys(args: argparse.Namespace) -> int:
    config: Config | None = None
    if args.key_file is not None and args.action == "init":
        source = KeySource(args.key_file, "bedside-gateway-kek")
        store_path = None
    else:
        config = _load_or_report(args.config, args.data_dir)
        if config is None:
            return EXIT_USAGE
        source = _key_source(config)
        if args.key_file is not None:
            source = KeySource(args.key_file, source.credential)
        store_path = config.store.path
    try:
        if args.action == "init":
            kek = init_key(source)
            print(
                f"created key-encryption key {kek.id} in {source.key_file} (mode 0600); "
                "back it up somewhere safe: without it the stored data cannot be read"
            )
        elif args.action == "rotate":
            assert store_path is not None and config is not None
            if not _not_running(config, "keys rotate"):
                return EXIT_FAILURE
            old, new, count = rotate(source, store_path)
            print(
                f"rotated key-encryption key {old.id} -> {new.id}; "
                f"{count} data keys re-wrapped, no data rewritten"
            )
        else:
            assert store_path is not None
            report = status(source, store_path)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                for key, value in report.items():
                    print(f"{key}: {value}")
            return EXIT_OK if report["ok"] else EXIT_FAILURE
    except KeyProblem as exc:
        print(f"keys {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"keys {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


# -- admissions -----------------------------------------------------------------------------
def _bed_command_config(args: argparse.Namespace, command: str) -> Config | None:
    """The config for a command about one bed; None (reported) if unusable or no such bed."""
    config = _load_or_report(args.config, args.data_dir)
    if config is not None and args.bed not in {b.id for b in config.beds}:
        print(f"{command}: no bed {args.bed!r} in {args.config}", file=sys.stderr)
        return None
    return config


def _cmd_admit(args: argparse.Namespace) -> int:
    config = _bed_command_config(args, "admit")
    if config is None or not _not_running(config, "admit"):
        return EXIT_USAGE if config is None else EXIT_FAILURE
    try:
        patient = _read_patient(sys.stdin)
    except ValueError as exc:
        print(f"admit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _open_store(config) as store:
            admission = store.admit(args.bed, patient, time.time())
            store.audit(
                _actor(), "admit", bed_id=args.bed, detail=f"admission {admission}", now=time.time()
            )
    except KeyProblem as exc:
        print(f"admit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"admit: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"bed {args.bed}: admission {admission} started")
    return EXIT_OK


def _read_patient(stream: TextIO) -> Patient:
    """Identifiers from standard input, never the command line (which every local user
    can read in /proc and which shells keep in their history).

    At a terminal it asks for each; otherwise it reads ``name=...``, ``mrn=...`` and
    ``birth_date=YYYY-MM-DD`` lines.
    """
    fields: dict[str, str] = {}
    if stream.isatty():
        for key, prompt in (("name", "Name"), ("mrn", "MRN"), ("birth_date", "Birth date")):
            fields[key] = input(f"{prompt}: ").strip()
    else:
        for line in stream:
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() in ("name", "mrn", "birth_date"):
                fields[key.strip()] = value.strip()
    missing = [k for k in ("name", "mrn", "birth_date") if not fields.get(k)]
    if missing:
        raise ValueError(
            f"missing {', '.join(missing)}: give name=, mrn= and birth_date= lines on standard "
            "input (or run at a terminal to be asked)"
        )
    try:
        birth = date.fromisoformat(fields["birth_date"]).isoformat()
    except ValueError:
        raise ValueError("birth_date must be YYYY-MM-DD") from None
    return Patient(fields["name"], fields["mrn"], birth)


def _not_running(config: Config, command: str) -> bool:
    """False (and says why) when a daemon holds the data directory."""
    try:
        with InstanceLock(config.data_dir):
            return True
    except DataDirInUse as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return False


def _cmd_discharge(args: argparse.Namespace) -> int:
    config = _bed_command_config(args, "discharge")
    if config is None or not _not_running(config, "discharge"):
        return EXIT_USAGE if config is None else EXIT_FAILURE
    try:
        with _open_store(config) as store:
            admission = store.discharge(args.bed, time.time())
            if admission is not None:
                store.audit(
                    _actor(),
                    "discharge",
                    bed_id=args.bed,
                    detail=f"admission {admission}",
                    now=time.time(),
                )
    except (KeyProblem, StoreError) as exc:
        print(f"discharge: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if admission is None:
        print(f"discharge: bed {args.bed!r} has no open admission", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"bed {args.bed}: admission {admission} ended; its data is kept for the configured "
        "retention, then its key is destroyed"
    )
    return EXIT_OK


# -- export ---------------------------------------------------------------------------------
def _cmd_export(args: argparse.Namespace) -> int:
    from gateway.twin.export import ExportError, export

    config = _bed_command_config(args, "export")
    if config is None:
        return EXIT_USAGE
    try:
        t_from = _parse_time(args.t_from)
        t_to = _parse_time(args.t_to)
    except ValueError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _open_store(config) as store:
            if args.format in ("hl7", "fhir"):
                from gateway.sync.export import export_payloads

                report = export_payloads(
                    store,
                    args.bed,
                    args.format,
                    args.out,
                    gateway_id=config.gateway_id,
                    facility=next(
                        (d.facility for d in config.destinations if d.protocol == "hl7-mllp"), ""
                    ),
                    now=time.time(),
                    t_from=t_from,
                    t_to=t_to,
                )
            else:
                report = export(store, args.bed, args.format, args.out, t_from=t_from, t_to=t_to)
            store.audit(
                _actor(),
                "export",
                bed_id=args.bed,
                detail=f"format={args.format} rows={report.rows} out={args.out}",
                now=time.time(),
            )
    except (KeyProblem, StoreError, ExportError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for problem in report.failures:
        print(f"export: {problem}", file=sys.stderr)
    print(f"exported {report.rows} rows of bed {args.bed} to {args.out}")
    return EXIT_FAILURE if report.failures else EXIT_OK


def _parse_time(text: str | None) -> float | None:
    """UTC seconds from an ISO 8601 time (naive means UTC) or a number of seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; use ISO 8601 (2026-01-01T08:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _actor() -> str:
    """Who ran the command, for the audit log (the login name, or the uid)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


# -- users ----------------------------------------------------------------------------------
def _cmd_users(args: argparse.Namespace) -> int:
    from gateway.web.auth import UserFile, UserFileError

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    if config.web.users_file is None:
        print("users: no [web] users_file configured", file=sys.stderr)
        return EXIT_USAGE
    users = UserFile(config.web.users_file)
    if args.action == "list":
        for record in users.records():
            print(f"{record.name}\t{record.role}")
        return EXIT_OK
    if not args.name:
        print(f"users {args.action}: give a user name", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.action == "remove":
            if not users.remove(args.name):
                print(f"users remove: no user {args.name!r}", file=sys.stderr)
                return EXIT_USAGE
            print(f"user {args.name} removed")
            return EXIT_OK
        if args.role is None:
            print("users add: give --role viewer, nurse or technician", file=sys.stderr)
            return EXIT_USAGE
        password = _read_password(sys.stdin)
        new = users.add(args.name, args.role, password)
    except (UserFileError, ValueError) as exc:
        print(f"users {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"user {args.name} {'added' if new else 'updated'} ({args.role}) in {users.path}")
    return EXIT_OK


def _read_password(stream: TextIO) -> str:
    """A password from standard input, never argv (readable by every local user in /proc)."""
    if stream.isatty():
        import getpass

        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    line = stream.readline().rstrip("\r\n")
    if not line:
        raise ValueError("no password on standard input (give it as the first line)")
    return line


# -- check-config ---------------------------------------------------------------------------
def _cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.ports import check_config_ports, service_account

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        user = service_account(args.user)
    except KeyError:
        print(f"check-config: --user {args.user}: no such user", file=sys.stderr)
        return EXIT_USAGE
    findings = check_config_ports(config, user)
    for finding in findings:
        print(f"{'' if finding.error else 'warning: '}{finding}", file=sys.stderr)
    if any(f.error for f in findings):
        return EXIT_USAGE
    devices = len(config.devices)
    simulated = sum(1 for _, d in config.devices if d.simulate)
    print(
        f"{args.config}: OK: gateway {config.gateway_id!r}, {len(config.beds)} beds, "
        f"{devices} devices ({simulated} simulated), page on "
        f"{config.page_url()}, data in {config.data_dir}"
    )
    return EXIT_OK


# -- decode ---------------------------------------------------------------------------------
def _cmd_decode(args: argparse.Namespace) -> int:
    try:
        spec = registry.get(args.driver)
    except KeyError:
        print(
            f"decode: unknown driver {args.driver!r}; use one of: {', '.join(registry.names())}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    values: dict[str, Any] = {}
    for item in args.settings:
        key, sep, text = item.partition("=")
        if not sep or not key:
            print(f"decode: --set {item!r}: expected KEY=VALUE", file=sys.stderr)
            return EXIT_USAGE
        values[key.strip()] = _setting_value(text)
    if args.profile is not None:
        values["profile"] = args.profile
    try:
        settings = spec.settings.model_validate(values)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            print(f"decode: --set {key}: {err['msg']}", file=sys.stderr)
        return EXIT_USAGE
    if spec.transport in ("modbus-tcp", "modbus-rtu"):
        return _decode_modbus(args, spec.make_model("capture", settings))
    if spec.transport == "ble":
        return _decode_ble(args, spec.make_model("capture", settings))
    if spec.transport != "serial":
        print(
            f"decode: {args.driver} is a {spec.transport} driver; not decodable yet",
            file=sys.stderr,
        )
        return EXIT_USAGE
    model = cast(SerialDeviceModel, spec.make_model("capture", settings))
    if not args.file.is_file():
        print(f"decode: {args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    baud = getattr(settings, "baudrate", 9600)
    file = args.file
    return _print_readings(
        model, lambda: decode(model, read_raw(file, baud / 10) if args.raw else read_capture(file))
    )


def _print_readings(model: Any, readings: Callable[[], Iterable[Reading]]) -> int:
    """``decode``'s output for every transport: one JSON line per reading on stdout, then
    the codec's counters on stderr; a bad capture line is a usage error (exit 2)."""
    try:
        for reading in readings():
            sys.stdout.write(json.dumps(reading_to_json(reading)) + "\n")
    except CaptureError as exc:
        print(f"decode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    print(f"decode: {json.dumps(model.counters.as_dict())}", file=sys.stderr)
    return EXIT_OK


def _setting_value(text: str) -> Any:
    """Parse VALUE as a TOML value (7, 2.5, true, "x"); fall back to the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# -- scan and capture -----------------------------------------------------------------------
def _cmd_scan(args: argparse.Namespace) -> int:
    from drivers.probe import probe_port
    from drivers.transport.serial import list_serial_ports

    if args.modbus or args.modbus_serial:
        return _cmd_scan_modbus(args)
    if args.ble:
        return _cmd_scan_ble(args)

    ports = list_serial_ports()
    if args.udev_rule is not None:
        return _print_udev_rule(args.udev_rule, args.port, ports)
    listed = []
    for info in ports:
        what, drivers = registry.suggest(info.vid, info.pid)
        usb = "" if info.vid is None else f"{info.vid:04x}:{info.pid or 0:04x}"
        listed.append(
            {
                "port": info.device,
                "by_id": list(info.by_id),
                "usb": usb,
                "serial_number": info.serial_number,
                "description": info.description,
                "adapter": what,
                "drivers": drivers,
            }
        )
    report: dict[str, Any] = {"ports": listed}
    if args.probe:
        targets = args.port or [p.device for p in ports]
        report["probe"] = [
            {**_vars_of(r), "recognised": r.recognised}
            for port in targets
            for r in asyncio.run(probe_port(port, SystemClock(), seconds=args.seconds))
        ]
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(_format_scan(report))
    return EXIT_OK


def _print_udev_rule(name: str, wanted: list[str], ports: Sequence[Any]) -> int:
    from gateway.udev import RuleError, rule_for

    if len(wanted) != 1:
        print("scan --udev-rule: give the adapter's port once with --port", file=sys.stderr)
        return EXIT_USAGE
    target = os.path.realpath(wanted[0])
    port = next((p for p in ports if os.path.realpath(p.device) == target), None)
    if port is None:
        print(
            f"scan --udev-rule: no serial port {wanted[0]} (plugged in? see: bedside-gateway scan)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        print(rule_for(name, port))
    except RuleError as exc:
        print(f"scan --udev-rule: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _vars_of(result: Any) -> dict[str, Any]:
    return {name: getattr(result, name) for name in result.__slots__}


def _format_scan(report: dict[str, Any]) -> str:
    lines = [] if report["ports"] else ["no serial ports found"]
    for port in report["ports"]:
        head = f"{port['port']}"
        if port["usb"]:
            head += f"  usb {port['usb']}"
        if port["serial_number"]:
            head += f"  serial {port['serial_number']}"
        lines.append(head + (f"  ({port['description']})" if port["description"] else ""))
        for alias in port["by_id"]:
            lines.append(f"    by-id: {alias}  <- use this in config.toml")
        if port["adapter"]:
            lines.append(f"    adapter: {port['adapter']}")
        if port["drivers"]:
            lines.append(f"    driver: {', '.join(port['drivers'])}")
    for result in report.get("probe", []):
        variant = ", ".join(f"{k}={v}" for k, v in result["variant"].items())
        name = result["driver"] + (f" ({variant})" if variant else "")
        if result["error"]:
            verdict = f"cannot listen: {result['error']}"
        elif result["recognised"]:
            verdict = "RECOGNISED"
        else:
            verdict = "no"
        lines.append(
            f"probe {result['port']} at {result['line']}: {name}: {verdict} "
            f"({result['frames_decoded']} frames, {result['bytes_dropped']} of "
            f"{result['bytes_received']} bytes dropped)"
        )
    return "\n".join(lines)


def _cmd_capture(args: argparse.Namespace) -> int:
    from drivers.capture import record
    from drivers.device import DeviceError
    from drivers.transport.serial import SerialTransport

    if args.seconds <= 0:
        print("capture: --seconds must be positive", file=sys.stderr)
        return EXIT_USAGE
    if args.modbus or args.modbus_serial:
        return _cmd_capture_modbus(args)
    if args.ble:
        return _cmd_capture_ble(args)
    if not args.port:
        print("capture: give --port, --ble, --modbus or --modbus-serial", file=sys.stderr)
        return EXIT_USAGE
    transport = SerialTransport(
        args.port,
        baudrate=args.baud,
        bytesize=args.bytesize,
        parity=args.parity,
        stopbits=args.stopbits,
    )
    try:
        with args.out.open("w", encoding="utf-8") as out:
            recorded = asyncio.run(record(transport, SystemClock(), args.seconds, out))
    except OSError as exc:
        print(f"capture: cannot write {args.out} ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE
    except DeviceError as exc:
        print(f"capture: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"capture: {recorded} bytes from {args.port} in {args.out}")
    return EXIT_OK


# -- Bluetooth LE: scan, capture, decode (logic in drivers/ble_scan.py and ble_capture.py) ---
@contextlib.asynccontextmanager
async def _simulated_ble(config: Config, clock: SystemClock) -> AsyncIterator[None]:
    """On the virtual radio, play the config's simulated BLE devices for the command's
    duration: the radio lives in this process, so a scan of the demo ward finds them."""
    tasks: list[asyncio.Task[None]] = []
    if config.ble.backend == "virtual":
        for _, device in config.devices:
            spec = registry.get(device.driver)
            if spec.transport == "ble" and device.simulate and spec.make_simulator:
                simulator = spec.make_simulator(device.settings, device.simulate, clock, device.id)
                tasks.append(asyncio.create_task(simulator.run()))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _cmd_scan_ble(args: argparse.Namespace) -> int:
    from drivers.ble_scan import scan_ble
    from drivers.device import DeviceError
    from drivers.transport.ble import BleBackend

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    if args.seconds <= 0:
        print("scan: --seconds must be positive", file=sys.stderr)
        return EXIT_USAGE
    clock = SystemClock()

    async def scan() -> list[Any]:
        async with _simulated_ble(config, clock):
            backend = BleBackend.named(config.ble.backend)
            return await scan_ble(backend, clock, args.seconds, adapter=config.ble.adapter)

    try:
        found = asyncio.run(scan())
    except DeviceError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    listed = [
        {
            "address": d.address,
            "name": d.name,
            "rssi": d.rssi,
            "services": d.services(),
            "drivers": list(d.drivers),
        }
        for d in found
    ]
    if args.json:
        print(json.dumps({"ble": listed}, indent=2))
        return EXIT_OK
    where = f"{config.ble.adapter} ({config.ble.backend})"
    if not listed:
        print(f"no BLE device advertising a supported service heard on {where}")
    for device in listed:
        print(
            f"{device['address']}  {device['name'] or '(no name)'}  rssi {device['rssi']}  "
            f"services: {', '.join(device['services'])}"
        )
        print(
            f"    driver: {', '.join(device['drivers'])}  "
            f'<- driver = "{device["drivers"][0]}", address = "{device["address"]}"'
        )
    return EXIT_OK


def _cmd_capture_ble(args: argparse.Namespace) -> int:
    from drivers.ble_capture import record_ble
    from drivers.device import BleDeviceModel, DeviceError
    from drivers.transport.ble import BleBackend, BleTarget, BleTransport

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        spec = registry.get(args.driver or "")
    except KeyError:
        ble = [n for n in registry.names() if registry.get(n).transport == "ble"]
        print(f"capture: --ble needs --driver, one of: {', '.join(ble)}", file=sys.stderr)
        return EXIT_USAGE
    if spec.transport != "ble":
        print(f"capture: {args.driver} is not a BLE driver", file=sys.stderr)
        return EXIT_USAGE
    model = cast(BleDeviceModel, spec.make_model("capture", spec.settings()))
    clock = SystemClock()

    async def capture(out: TextIO) -> int:
        async with _simulated_ble(config, clock):
            transport = BleTransport(
                BleTarget(address=args.ble),
                backend=BleBackend.named(config.ble.backend),
                clock=clock,
                adapter=config.ble.adapter,
            )
            return await record_ble(transport, model, clock, args.seconds, out)

    try:
        with args.out.open("w", encoding="utf-8") as out:
            recorded = asyncio.run(capture(out))
    except OSError as exc:
        print(f"capture: cannot write {args.out} ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE
    except DeviceError as exc:
        print(f"capture: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"capture: {recorded} notifications from {args.ble} in {args.out}")
    return EXIT_OK


def _decode_ble(args: argparse.Namespace, model: Any) -> int:
    from drivers.ble_capture import decode_ble, read_ble_capture

    if args.raw:
        print("decode: BLE captures are JSON lines; --raw is for serial dumps", file=sys.stderr)
        return EXIT_USAGE
    if not args.file.is_file():
        print(f"decode: {args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    return _print_readings(model, lambda: decode_ble(model, read_ble_capture(args.file)))


# -- Modbus: scan, capture, decode (logic in drivers/infusion/scan.py and capture.py) ---------
def _modbus_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--modbus", metavar="HOST[:PORT]", help="a Modbus TCP device or gateway")
    where.add_argument("--modbus-serial", metavar="PORT", help="an RS-485 port (Modbus RTU)")
    parser.add_argument("--profile-dir", type=Path, help="folder of site register-map profiles")


def _modbus_line(args: argparse.Namespace, baud: int, parity: str) -> Any:
    from drivers.transport.modbus import RtuLine, TcpLine

    if args.modbus_serial:
        return RtuLine(args.modbus_serial, baud, 8, parity, 1)
    host, sep, port = str(args.modbus).rpartition(":")
    if not sep or not port.isdigit() or "]" in port:
        host, port = str(args.modbus), "502"
    return TcpLine(host.strip("[]"), int(port))


def _cmd_scan_modbus(args: argparse.Namespace) -> int:
    from drivers.device import DeviceError
    from drivers.infusion.profile import ProfileError, load_profile, shipped_profiles
    from drivers.infusion.scan import scan_bound, scan_line
    from drivers.transport.modbus import ModbusTransport

    try:
        units = _unit_list(args.units)
        names = shipped_profiles()
        if args.profile_dir is not None:
            names += sorted(p.stem for p in args.profile_dir.glob("*.toml"))
        profiles = [load_profile(n, args.profile_dir) for n in dict.fromkeys(names)]
    except (ValueError, ProfileError) as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    line = _modbus_line(args, args.modbus_baud, args.modbus_parity)

    async def scan() -> Any:
        transport = ModbusTransport(line, SystemClock())
        try:
            return await scan_line(transport, profiles, units, answer_within=args.timeout)
        finally:
            await transport.close()

    bound = scan_bound(units, args.timeout)
    if not args.json:
        print(f"scan: {len(units)} unit ids on {line}, at most {bound:.0f} s", file=sys.stderr)
    try:
        found = asyncio.run(scan())
    except DeviceError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    report = [{"unit": f.unit, "fits": list(f.fits), "exceptions": f.exceptions} for f in found]
    if args.json:
        print(json.dumps({"line": str(line), "units": report}, indent=2))
        return EXIT_OK
    if not found:
        print(f"no unit answered on {line}")
    for f in found:
        fits = ", ".join(f.fits) or "no shipped or site profile fits"
        print(f"unit {f.unit}: answers; profile: {fits}")
    return EXIT_OK


def _unit_list(text: str) -> list[int]:
    units: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        first, last = int(lo), int(hi) if sep else int(lo)
        if not 1 <= first <= last <= 247:
            raise ValueError(f"--units {text!r}: unit ids are 1-247")
        units.extend(range(first, last + 1))
    return sorted(set(units))


def _cmd_capture_modbus(args: argparse.Namespace) -> int:
    from drivers.device import DeviceError
    from drivers.infusion.capture import record
    from drivers.infusion.profile import ProfileError, load_profile
    from drivers.infusion.pump import InfusionPump
    from drivers.transport.modbus import ModbusTransport

    try:
        model = InfusionPump("capture", load_profile(args.profile, args.profile_dir))
    except ProfileError as exc:
        print(f"capture: {exc}", file=sys.stderr)
        return EXIT_USAGE
    line = _modbus_line(args, args.baud, args.parity)
    transport = ModbusTransport(line, SystemClock())
    try:
        with args.out.open("w", encoding="utf-8") as out:
            polls = asyncio.run(
                record(
                    transport,
                    SystemClock(),
                    args.unit,
                    model,
                    seconds=args.seconds,
                    interval=args.interval,
                    out=out,
                )
            )
    except OSError as exc:
        print(f"capture: cannot write {args.out} ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE
    except DeviceError as exc:
        print(f"capture: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"capture: {polls} polls of unit {args.unit} on {line} in {args.out} (reads only)")
    return EXIT_OK


def _decode_modbus(args: argparse.Namespace, model: Any) -> int:
    from drivers.infusion.capture import decode as decode_polls
    from drivers.infusion.capture import read_modbus_capture

    if not args.file.is_file():
        print(f"decode: {args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    return _print_readings(model, lambda: decode_polls(model, read_modbus_capture(args.file)))


# -- status ---------------------------------------------------------------------------------
def _cmd_ecg_analyze(args: argparse.Namespace) -> int:
    from gateway.analysis.offline import RecordError, analyze_record

    try:
        result = analyze_record(args.record, args.out, channel=args.channel, mains_hz=args.mains)
    except RecordError as exc:
        print(f"bedside-gateway ecg analyze: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"bedside-gateway ecg analyze: cannot write to {args.out}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"{result.beats} beats, {result.episodes} episodes from channel {result.channel} "
        f"({result.channel_name or 'unnamed'}): {result.beats_csv}, {result.events_csv}"
    )
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        config = _load_or_report(args.config)
        if config is None:
            return EXIT_USAGE
        url = config.page_url()
    url = url.rstrip("/")
    try:
        health = _get_json(f"{url}/api/health")
        beds = _get_json(f"{url}/api/beds")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, urllib.error.HTTPError) and exc.code == 401:
            return _status_from_healthz(url, args.json)
        reason = getattr(exc, "reason", exc)
        print(
            f"status: no gateway answering at {url} ({reason}); is it running? "
            "(systemctl status bedside-gateway, or start it with 'make run')",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    from gateway.health import verdict

    try:
        result = verdict(health, beds)
        if args.json:
            print(json.dumps({"health": health, "beds": beds, "verdict": result.as_dict()}))
        else:
            print(_format_status(health, beds))
            print(_format_verdict(health, result))
    except (KeyError, TypeError, AttributeError, ValueError):
        print(f"status: {url} answers, but not as a bedside-gateway API", file=sys.stderr)
        return EXIT_UNREACHABLE
    # 0 healthy; 1 degraded (failing, or a device or warning needing a technician).
    return EXIT_OK if result.healthy and not result.degraded else EXIT_FAILURE


def _status_from_healthz(url: str, as_json: bool) -> int:
    """When the page wants a login even to view ([web] require_login_to_view), the beds are
    not ours to read: report /healthz, which is open to probes and carries no patient data."""
    try:
        try:
            body = _get_json(f"{url}/healthz")
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
            body = json.load(exc)
        checks = body["checks"]
        devices = body["devices"]
        warnings = [w for check in checks.values() for w in check["warnings"]]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"status: {url}/healthz answers not as a bedside-gateway ({exc})", file=sys.stderr)
        return EXIT_UNREACHABLE
    if as_json:
        print(json.dumps({"verdict": body}))
    else:
        lines = [
            f"gateway {body.get('gateway')} v{body.get('version')} (the page requires a login to "
            "view beds; health only)",
            "health: " + ("OK" if body["status"] == "ok" else "FAILING"),
        ]
        for name, check in checks.items():
            lines.append(f"  {name}: {'ok' if check['ok'] else 'FAILING'}: {check['detail']}")
            lines.extend(f"    warning: {w}" for w in check["warnings"])
        lines.extend(f"  device {d['id']}: {d['reason']}" for d in devices)
        print("\n".join(lines))
    return EXIT_OK if body["status"] == "ok" and not devices and not warnings else EXIT_FAILURE


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


_SHOWN = (("MDC_PULS_OXIM_SAT_O2", "SpO2"), ("MDC_PULS_OXIM_PULS_RATE", "PR"))


def _format_status(health: dict[str, Any], beds: list[dict[str, Any]]) -> str:
    lines = [
        f"gateway {health.get('gateway')} v{health.get('version')}, "
        f"up {health.get('uptime', 0):.0f} s, {len(beds)} beds"
    ]
    for bed in beds:
        shown = []
        for refid, label in _SHOWN:
            vital = bed["vitals"].get(refid)
            if vital is None:
                shown.append(f"{label} --")
                continue
            value = "--" if vital["value"] is None else f"{vital['value']:g}"
            stale = f" (stale, {vital['age']:.0f} s old)" if vital["stale"] else ""
            shown.append(f"{label} {value} {vital['unit']}{stale}")
        lines.append(f"  {bed['label']} [{bed['id']}]: " + ", ".join(shown))
        for dev in bed["devices"]:
            conditions = ", ".join(dev.get("conditions", [])) or "no conditions"
            lines.append(
                f"    {dev['id']} ({dev['driver']}): {dev['state']}; "
                f"{dev.get('frames_decoded', 0)} frames, {dev.get('bytes_dropped', 0)} bytes "
                f"dropped, {dev.get('restarts', 0)} restarts; {conditions}"
                + (f"; last error: {dev['last_error']}" if dev.get("last_error") else "")
            )
    return "\n".join(lines)


def _format_verdict(health: dict[str, Any], result: Verdict) -> str:
    """The technician's summary under the beds: what fails, why, and where to look."""
    checks = (("loop", result.loop), ("store", result.store), ("alarm path", result.alarm_path))
    lines = ["health: " + ("OK" if result.healthy else "FAILING")]
    for name, check in checks:
        lines.append(f"  {name}: {'ok' if check.ok else 'FAILING'}: {check.detail}")
        lines.extend(f"    warning: {w}" for w in check.warnings)
    key = health.get("key")
    if isinstance(key, dict):
        lines.append(f"  key: {key.get('source')}")
    for device, reason in result.devices:
        lines.append(f"  device {device}: {reason}")
    destinations = health.get("sync")
    for dest in destinations if isinstance(destinations, list) else []:
        if isinstance(dest, dict):
            backlog = dest.get("backlog") or {}
            waiting = sum(backlog.values()) if isinstance(backlog, dict) else backlog
            error = f"; last error: {dest['last_error']}" if dest.get("last_error") else ""
            lines.append(
                f"  sync {dest.get('name')} ({dest.get('protocol')}): {dest.get('state')}, "
                f"{waiting} waiting{error}"
            )
    if not result.healthy:
        lines.append("  see: journalctl -u bedside-gateway, and docs/TECHNICIAN.md")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
