"""The ``bedside-gateway`` command.

Exit status: 0 success; 1 runtime failure (cannot listen, a core task died, daemon
unreachable); 2 unusable input (configuration, settings, capture file, command line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from pydantic import ValidationError

from drivers import registry
from drivers.capture import CaptureError, decode, read_capture, read_raw, reading_to_json
from drivers.clock import SystemClock
from drivers.device import SerialDeviceModel
from gateway import __version__
from gateway.config import Config, ConfigError, load
from gateway.instance import DataDirInUse, InstanceLock
from gateway.twin.crypto import KeyProblem
from gateway.twin.errors import StoreError
from gateway.twin.keys import KeySource, init_key, load_keyring, rotate, status
from gateway.twin.vocabulary import Patient

if TYPE_CHECKING:
    from gateway.twin.store import TwinStore

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
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
  export        decrypt a bed's stored data to csv, json or a WFDB record
  scan          list serial ports; --probe recognises the protocol on each
  capture       record a port's raw traffic for decode or replay

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
            "as csv or json, or waveforms as a WFDB record. Needs the key; every export is "
            "written to the audit log."
        ),
    )
    _config_option(export)
    export.add_argument("--data-dir", type=Path, help="overrides [gateway] data_dir")
    export.add_argument("--bed", required=True)
    export.add_argument("--from", dest="t_from", help="start time, ISO 8601 (UTC if no zone)")
    export.add_argument("--to", dest="t_to", help="end time, ISO 8601 (UTC if no zone)")
    export.add_argument("--format", required=True, choices=("csv", "json", "wfdb"))
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
    scan.add_argument("--probe", action="store_true", help="listen and recognise protocols")
    scan.add_argument(
        "--port", action="append", default=[], help="probe this port (repeatable; default: all)"
    )
    scan.add_argument(
        "--seconds", type=float, default=5.0, help="listening time per line setting (default 5)"
    )
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.set_defaults(handler=_cmd_scan)

    capture = sub.add_parser(
        "capture",
        help="record a port's raw traffic to a capture file",
        description=(
            'Record what a serial port receives, as JSON lines of {"t": seconds, "rx": '
            "\"hex\"}, for 'decode' or for a replayed device (replay = FILE in config.toml). "
            "Only listens: nothing is sent to the device."
        ),
    )
    capture.add_argument("--port", required=True, help="device path or pyserial URL")
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
        asyncio.run(Gateway(config, store=store).run())
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


def _key_source(config: Config) -> KeySource:
    return KeySource(config.store.key_file, config.store.credential)


def _open_store(config: Config, *, create_key: bool = False) -> TwinStore:
    from gateway.twin.store import TwinStore  # heavy (SQLite tooling): only when needed

    ring = load_keyring(_key_source(config), create_if_missing=create_key)
    return TwinStore(config.store.path, ring, max_bytes=config.store.quota_bytes)


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


# -- check-config ---------------------------------------------------------------------------
def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
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
    try:
        settings = spec.settings.model_validate(values)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            print(f"decode: --set {key}: {err['msg']}", file=sys.stderr)
        return EXIT_USAGE
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
    chunks = read_raw(args.file, baud / 10) if args.raw else read_capture(args.file)
    out = sys.stdout
    try:
        for reading in decode(model, chunks):
            out.write(json.dumps(reading_to_json(reading)) + "\n")
    except CaptureError as exc:
        print(f"decode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    counters = model.counters.as_dict()
    print(f"decode: {json.dumps(counters)}", file=sys.stderr)
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

    ports = list_serial_ports()
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


# -- status ---------------------------------------------------------------------------------
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
        reason = getattr(exc, "reason", exc)
        print(
            f"status: no gateway answering at {url} ({reason}); is it running? "
            "(systemctl status bedside-gateway, or start it with 'make run')",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if args.json:
        print(json.dumps({"health": health, "beds": beds}, indent=2))
        return EXIT_OK
    try:
        print(_format_status(health, beds))
    except (KeyError, TypeError, AttributeError, ValueError):
        print(f"status: {url} answers, but not as a bedside-gateway API", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


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


if __name__ == "__main__":
    sys.exit(main())
