"""A real MQTT broker for tests: mosquitto (Debian package, installed by .ci/run) started
with a config file the test writes, on 127.0.0.1, plain or TLS with client certificates."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.net import free_port
from tests.support.tls import Pki

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@contextmanager
def mosquitto(folder: Path, pki: Pki | None = None, port: int = 0) -> Iterator[int]:
    """Run a broker until the block ends; yields its port."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    # Run as whoever runs the tests: as root, mosquitto would otherwise switch to its own
    # user and could not read certificates in the test's private temporary folder.
    lines = [
        f"user {getpass.getuser()}",
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
    ]
    if pki is not None:
        lines += [
            f"cafile {pki.ca}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            "require_certificate true",
        ]
    conf = folder / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        # Readiness: the listening socket accepts (bounded; a broker that cannot start
        # has exited and says why on stderr).
        for _ in range(500):
            if proc.poll() is not None:
                why = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"mosquitto exited: {why}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.01)
        else:
            raise RuntimeError("mosquitto did not start listening")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
