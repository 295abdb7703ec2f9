"""The ``bedside-gateway`` command.

Exit status: 0 success; 1 runtime failure (cannot listen, a core task died, daemon
unreachable); 2 unusable input (configuration, settings, capture file, command line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from drivers import registry
from drivers.capture import CaptureError, decode, read_capture, read_raw, reading_to_json
from gateway import __version__
from gateway.config import Config, ConfigError, load

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
        asyncio.run(Gateway(config).run())
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
    return EXIT_OK


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
        f"http://{config.listen_host}:{config.listen_port}/, data in {config.data_dir}"
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
    model = spec.make_model("capture", settings)
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


# -- status ---------------------------------------------------------------------------------
def _cmd_status(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        config = _load_or_report(args.config)
        if config is None:
            return EXIT_USAGE
        host = "127.0.0.1" if config.listen_host in ("0.0.0.0", "::") else config.listen_host
        url = f"http://{host}:{config.listen_port}"
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
    print(_format_status(health, beds))
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
