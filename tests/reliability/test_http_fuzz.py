"""Property test of the page's HTTP API: whatever a client sends, the answer is a 2xx or a 4xx
with a reason, never a 5xx, and the gateway keeps serving.

A real gateway (simulated Nonin on a pty, store, alarms, page) runs on its own event loop in
a thread; hypothesis sends requests from the test's thread as a logged-in nurse (session
cookie and CSRF token), so the bodies reach the handlers behind the login: acknowledging
alarms by arbitrary ids, pausing audio of arbitrary beds, putting arbitrary limit documents,
confirming arbitrary page versions, reading waveforms with arbitrary query strings, and
logging in with arbitrary bodies.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.clock import ManualClock
from gateway.config import load
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import TwinStore
from gateway.web.auth import UserFile

CONFIG = """
[gateway]
id = "ward-http-fuzz"
data_dir = "state"
listen = "127.0.0.1:8080"

[web]
users_file = "users.json"

[[beds]]
id = "bed-1"
  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  simulate = "normal"
"""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
limit_docs = st.dictionaries(
    st.sampled_from(["spo2", "pulse_rate", "heart_rate", "profile", "x", ""]),
    st.dictionaries(
        st.sampled_from(["low", "high", "extreme_low", "extreme_high", "delay", "on"]),
        json_values,
        max_size=4,
    )
    | json_values,
    max_size=4,
)
segment = st.text(max_size=30).map(lambda s: urllib.parse.quote(s, safe="")) | st.sampled_from(
    ["bed-1", "_gateway", "..", "%00", "bed-1%2F..", "a" * 200]
)
bodies = st.one_of(json_values.map(json.dumps), st.binary(max_size=200), limit_docs.map(json.dumps))


class Server:
    def __init__(self, tmp: Path) -> None:
        (tmp / "config.toml").write_text(textwrap.dedent(CONFIG))
        self.config = load(tmp / "config.toml")
        users = self.config.web.users_file
        assert users is not None
        users.parent.mkdir(parents=True, exist_ok=True)
        UserFile(users).add("nurse1", "nurse", "correct horse battery", n=2**4)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))
        self.thread.start()
        assert self.ready.wait(60), "gateway did not start"
        self.base = f"http://127.0.0.1:{self.gateway.web.port}"
        self.http = requests.Session()
        login = self.http.post(
            f"{self.base}/api/login",
            json={"name": "nurse1", "password": "correct horse battery"},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        self.http.headers["X-CSRF-Token"] = login.json()["csrf"]

    async def _run(self) -> None:
        self.store = TwinStore(self.config.store.path, KeyRing(generate_kek()))
        self.gateway = Gateway(
            self.config, clock=ManualClock(), notify=SdNotify(), listen_port=0, store=self.store
        )
        self.runner = asyncio.create_task(self.gateway.run(handle_signals=False))
        await self.gateway.supervisor.ready.wait()
        self.ready.set()
        await self.runner

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.gateway.supervisor.stop)
        self.thread.join(30)
        self.store.close()

    def send(self, method: str, path: str, body: str | bytes | None = None) -> requests.Response:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return self.http.request(method, self.base + path, data=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("http-fuzz"))
    yield s
    s.close()


REQUESTS = st.one_of(
    st.tuples(st.just("POST"), segment.map("/api/alarms/{}/acknowledge".format), bodies),
    st.tuples(st.just("POST"), segment.map("/api/beds/{}/audio-pause".format), bodies),
    st.tuples(st.just("PUT"), segment.map("/api/beds/{}/limits".format), bodies),
    st.tuples(st.just("GET"), segment.map("/api/beds/{}/limits".format), st.none()),
    st.tuples(st.just("POST"), st.just("/api/alarm-path/confirm"), bodies),
    st.tuples(
        st.just("GET"),
        st.tuples(segment, st.text(max_size=40)).map(
            lambda p: f"/api/beds/{p[0]}/waveforms?" + urllib.parse.quote(p[1], safe="=&")
        ),
        st.none(),
    ),
    st.tuples(st.just("GET"), st.text(max_size=40).map(lambda q: "/api/alarms?" + q), st.none()),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(REQUESTS)
def test_api_answers_every_request_without_a_server_error(
    server: Server, request_: tuple[str, str, Any]
) -> None:
    method, path, body = request_
    response = server.send(method, path, body)
    assert response.status_code < 500, (method, path, body, response.status_code, response.text)
    if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith(
        "application/json"
    ):
        assert response.json(), "an error without a reason"
    assert server.send("GET", "/api/beds").status_code == 200
