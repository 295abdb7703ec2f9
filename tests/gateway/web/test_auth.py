"""Page authentication: hashes, the users file, sessions on a ManualClock, CSRF, roles and
failed-login limits, through the real page server over loopback HTTP, with a real store's
audit log."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from drivers.clock import ManualClock
from gateway.twin.state import BedSpec, Twin
from gateway.web import auth
from gateway.web.auth import (
    ANONYMOUS,
    CSRF_HEADER,
    SESSION_COOKIE,
    Auth,
    LoginThrottle,
    PasswordHash,
    Sessions,
    User,
    UserFile,
    UserFileError,
    hash_password,
    role_allows,
    verify_password,
)
from gateway.web.server import WebServer

#: Cheap scrypt cost for the many hashes tests make; one test checks the real cost.
TEST_N = 2**10
PASSWORD = "correct horse battery"


# -- hashes -----------------------------------------------------------------------------------


def test_a_hash_uses_scrypt_with_a_fresh_salt_and_round_trips_as_text() -> None:
    one = hash_password(PASSWORD)
    two = hash_password(PASSWORD)
    assert (one.n, one.r, one.p) == (auth.SCRYPT_N, auth.SCRYPT_R, auth.SCRYPT_P)
    assert one.n >= 2**14  # memory-hard: at least 16 MiB per check
    assert len(one.salt) == 16 and one.salt != two.salt and one.digest != two.digest
    text = one.to_text()
    assert text.startswith(f"scrypt${auth.SCRYPT_N}$8$1$") and PASSWORD not in text
    assert PasswordHash.from_text(text) == one
    assert verify_password(PASSWORD, PasswordHash.from_text(text))
    assert not verify_password(PASSWORD + "x", one)
    assert not verify_password("", one)


@pytest.mark.parametrize(
    "text", ["", "bcrypt$1$2$3$AA==$AA==", "scrypt$1000$8$1$AA==$AA==", "scrypt$1024$8$1$AA=="]
)
def test_a_damaged_hash_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        PasswordHash.from_text(text)


# -- the users file ---------------------------------------------------------------------------


def test_users_file_is_private_holds_no_password_and_is_reread_when_changed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.json"
    users = UserFile(path)
    assert users.get("alice") is None  # no file: no users
    assert users.add("alice", "nurse", PASSWORD, n=TEST_N) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD not in path.read_text()
    record = users.get("alice")
    assert record is not None and record.role == "nurse"
    assert verify_password(PASSWORD, record.password)

    # Another process (the CLI) changes the file while the gateway runs.
    UserFile(path).add("alice", "technician", "another password", n=TEST_N)
    UserFile(path).add("bob", "viewer", "bob's password", n=TEST_N)
    changed = users.get("alice")
    assert changed is not None and changed.role == "technician"
    assert users.names() == ["alice", "bob"]
    assert users.remove("bob") is True and users.remove("bob") is False
    assert users.names() == ["alice"]


def test_users_file_refuses_bad_names_roles_and_short_passwords(tmp_path: Path) -> None:
    users = UserFile(tmp_path / "users.json")
    with pytest.raises(UserFileError, match="role"):
        users.add("alice", "admin", PASSWORD, n=TEST_N)
    with pytest.raises(UserFileError, match="too short"):
        users.add("alice", "nurse", "1234567", n=TEST_N)
    with pytest.raises(UserFileError, match="not allowed"):
        users.add("alice smith", "nurse", PASSWORD, n=TEST_N)
    assert not (tmp_path / "users.json").exists()


def test_a_damaged_users_file_keeps_the_users_last_read(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    users = UserFile(path)
    users.add("alice", "nurse", PASSWORD, n=TEST_N)
    assert users.get("alice") is not None
    path.write_text('{"version": 1, "users": {"alice": {"role": "god"}}}')
    assert users.get("alice") is not None  # still the last good state
    with pytest.raises(UserFileError, match="fix or remove"):
        users.add("bob", "nurse", PASSWORD, n=TEST_N)


# -- roles, sessions and throttle (pure, on a ManualClock) ------------------------------------


def test_roles_are_ranked() -> None:
    assert role_allows("technician", "nurse") and role_allows("nurse", "nurse")
    assert role_allows("nurse", "viewer") and not role_allows("viewer", "nurse")
    assert not role_allows("nurse", "technician") and not role_allows("admin", "viewer")
    with pytest.raises(ValueError):
        role_allows("nurse", "admin")


async def test_a_session_ends_when_idle_and_at_its_lifetime() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, lifetime=3600.0, idle_timeout=600.0)
    session = sessions.create(User("alice", "nurse"))
    assert len(session.token) >= 40 and session.token != session.csrf
    assert sessions.expires_in(session) == 600.0

    await clock.advance(599.0)
    assert sessions.get(session.token) is session  # used: idle time starts again
    await clock.advance(599.0)
    assert sessions.get(session.token, touch=False) is session  # looked at, not used
    await clock.advance(1.0)
    assert sessions.get(session.token) is None  # 600 s idle: gone
    assert len(sessions) == 0

    kept = sessions.create(User("bob", "nurse"))
    for _ in range(6):
        await clock.advance(590.0)
        assert sessions.get(kept.token) is kept
    await clock.advance(60.0)  # 3600 s since login, though used 60 s ago
    assert sessions.get(kept.token) is None
    assert sessions.get("made-up") is None and sessions.get(None) is None


async def test_failed_logins_lock_a_key_out_for_a_while() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(clock, max_failures=3, window=60.0, lockout=120.0)
    keys = ("name:alice", "addr:10.0.0.9")
    throttle.failed(keys)
    await clock.advance(61.0)  # outside the window: forgotten
    throttle.failed(keys)
    throttle.failed(keys)
    assert throttle.retry_after(keys) == 0.0
    throttle.failed(keys)
    assert throttle.retry_after(keys) == 120.0
    assert throttle.retry_after(["addr:10.0.0.9"]) == 120.0
    assert throttle.retry_after(["name:bob"]) == 0.0
    await clock.advance(119.0)
    assert throttle.retry_after(keys) == 1.0
    await clock.advance(1.0)
    assert throttle.retry_after(keys) == 0.0


# -- over HTTP --------------------------------------------------------------------------------


@dataclass
class Site:
    clock: ManualClock
    auth: Auth
    server: WebServer
    users: UserFile
    audit: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    clock = ManualClock()
    users = UserFile(tmp_path / "users.json")
    users.add("alice", "nurse", PASSWORD, n=TEST_N)
    users.add("tess", "technician", "tess password", n=TEST_N)
    users.add("val", "viewer", "val password", n=TEST_N)
    entries: list[tuple[str, str, str]] = []

    async def audit(actor: str, action: str, detail: str) -> None:
        entries.append((actor, action, detail))

    authority = Auth(
        users,
        clock,
        audit=audit,
        session_lifetime=3600.0,
        idle_timeout=600.0,
        max_failures=3,
        failure_window=60.0,
        lockout=120.0,
    )
    twin = Twin([BedSpec("bed-1", "Bed 1")], clock, 5.0)
    server = WebServer(
        host="127.0.0.1",
        port=0,
        beds=twin.snapshot,
        health=lambda: {"gateway": "ward-7"},
        version=lambda: twin.version,
        wait_changed=twin.wait_changed,
        clock=clock,
        auth=authority,
    )
    # An action route as the alarm handlers use it: module-level require, a role.
    await server.start()
    try:
        yield Site(clock, authority, server, users, entries)
    finally:
        await server.stop()


def client() -> aiohttp.ClientSession:
    # The cookie jar must accept cookies from an IP address (127.0.0.1).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(
    http: aiohttp.ClientSession, site: Site, name: str, password: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        site.base + "/api/login", json={"name": name, "password": password}
    ) as response:
        return response.status, await response.json()


async def test_login_sets_a_strict_httponly_cookie_and_returns_the_csrf_token(site: Site) -> None:
    async with client() as http:
        async with http.post(
            site.base + "/api/login", json={"name": "alice", "password": PASSWORD}
        ) as response:
            assert response.status == 200
            body = await response.json()
            cookie_header = response.headers["Set-Cookie"]
        assert body["user"] == {"name": "alice", "role": "nurse"}
        assert isinstance(body["csrf"], str) and len(body["csrf"]) >= 40
        assert body["expires_in"] == 600.0
        assert SESSION_COOKIE in cookie_header
        assert "HttpOnly" in cookie_header and "SameSite=Strict" in cookie_header
        assert body["csrf"] not in cookie_header

        async with http.get(site.base + "/api/session") as response:
            assert (await response.json())["user"] == {"name": "alice", "role": "nurse"}

        async with http.post(site.base + "/api/logout") as response:
            assert response.status == 403  # no CSRF token: not even a logout
        async with http.post(
            site.base + "/api/logout", headers={CSRF_HEADER: body["csrf"]}
        ) as response:
            assert response.status == 200
        async with http.get(site.base + "/api/session") as response:
            assert (await response.json())["user"] is None
    assert [(a, b) for a, b, _ in site.audit] == [("alice", "login"), ("alice", "logout")]
    assert all(PASSWORD not in detail for _, _, detail in site.audit)
    assert "127.0.0.1" in site.audit[0][2]


async def test_wrong_passwords_are_audited_without_secrets_then_rate_limited(site: Site) -> None:
    async with client() as http:
        assert (await login(http, site, "alice", "wrong one"))[0] == 401
        # A name nobody has may be a password typed in the wrong field: not recorded.
        status, body = await login(http, site, PASSWORD, PASSWORD)
        assert status == 401 and body["error"] == "wrong name or password"
        assert (await login(http, site, "alice", "wrong two"))[0] == 401
        # Third failure from this address: locked out, even with the right password.
        async with http.post(
            site.base + "/api/login", json={"name": "alice", "password": PASSWORD}
        ) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "121"
        await site.clock.advance(121.0)
        assert (await login(http, site, "alice", PASSWORD))[0] == 200

    actions = [(actor, action) for actor, action, _ in site.audit]
    assert actions == [
        ("alice", "login_failed"),
        ("(unknown user)", "login_failed"),
        ("alice", "login_failed"),
        ("alice", "login_refused"),
        ("alice", "login"),
    ]
    text = json.dumps(site.audit)
    assert PASSWORD not in text and "wrong one" not in text and "wrong two" not in text


async def test_require_checks_login_role_and_csrf(site: Site) -> None:
    seen: list[User] = []

    async def act(request: web.Request) -> web.Response:
        seen.append(await auth.require(request, request.match_info["role"]))
        return web.json_response({"ok": True})

    # Routes a handler module would add; installed on a second app sharing the Auth.
    app = web.Application()
    site.auth.install(app)
    app.router.add_post("/act/{role}", act)
    app.router.add_get("/look/{role}", act)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with client() as http:
            async with http.get(base + "/look/viewer") as response:
                assert response.status == 200  # viewing needs no login by default
            assert seen == [ANONYMOUS]
            async with http.post(base + "/act/nurse") as response:
                assert response.status == 401
                assert "log in" in (await response.json())["error"]
            async with http.post(
                base + "/api/login", json={"name": "val", "password": "val password"}
            ) as response:
                viewer_csrf = (await response.json())["csrf"]
            async with http.post(base + "/act/nurse", headers={CSRF_HEADER: viewer_csrf}) as r:
                assert r.status == 403  # a viewer may not act

            async with http.post(
                base + "/api/login", json={"name": "alice", "password": PASSWORD}
            ) as response:
                csrf = (await response.json())["csrf"]
            assert csrf != viewer_csrf
            async with http.post(base + "/act/nurse") as response:
                assert response.status == 403  # no token
            async with http.post(base + "/act/nurse", headers={CSRF_HEADER: viewer_csrf}) as r:
                assert r.status == 403  # the old session's token
            async with http.post(
                base + "/act/nurse", headers={CSRF_HEADER: csrf, "Origin": "http://evil.test"}
            ) as response:
                assert response.status == 403
            async with http.post(base + "/act/nurse", headers={CSRF_HEADER: csrf}) as response:
                assert response.status == 200
            async with http.post(base + "/act/technician", headers={CSRF_HEADER: csrf}) as response:
                assert response.status == 403  # a nurse is not a technician
            assert seen[-1] == User("alice", "nurse")

            # Demoted while logged in: logged out at the next request.
            site.users.add("alice", "viewer", PASSWORD, n=TEST_N)
            async with http.post(base + "/act/nurse", headers={CSRF_HEADER: csrf}) as response:
                assert response.status == 401
            assert site.audit[-1][:2] == ("alice", "logout")
            site.users.add("alice", "nurse", PASSWORD, n=TEST_N)
            async with http.post(
                base + "/api/login", json={"name": "alice", "password": PASSWORD}
            ) as response:
                csrf = (await response.json())["csrf"]

            # Idle for longer than the timeout: the session is gone, 401 again.
            await site.clock.advance(601.0)
            async with http.post(base + "/act/nurse", headers={CSRF_HEADER: csrf}) as response:
                assert response.status == 401
    finally:
        await runner.cleanup()


async def test_viewing_can_require_a_login(site: Site) -> None:
    site.auth.require_login_to_view = True
    async with client() as http:
        for path in ("/api/beds", "/api/health", "/api/stream", "/api/beds/bed-1/waveforms"):
            async with http.get(site.base + path) as response:
                assert response.status == 401, path
        async with http.get(site.base + "/") as response:
            assert response.status == 200  # the page itself, to show the login form
        assert (await login(http, site, "val", "val password"))[0] == 200
        async with http.get(site.base + "/api/beds") as response:
            assert response.status == 200
            assert [b["id"] for b in await response.json()] == ["bed-1"]


async def test_bad_login_requests_are_refused_clearly(site: Site) -> None:
    async with client() as http:
        async with http.post(site.base + "/api/login", data=b"not json") as response:
            assert response.status == 400
        async with http.post(site.base + "/api/login", json={"name": "alice"}) as response:
            assert response.status == 400
        async with http.post(
            site.base + "/api/login",
            json={"name": "alice", "password": PASSWORD},
            headers={"Origin": "http://evil.test"},
        ) as response:
            assert response.status == 403
    assert site.audit == []


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_adds_a_user_with_the_password_from_stdin_never_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway import cli

    config = tmp_path / "config.toml"
    config.write_text('[gateway]\nid = "t"\ndata_dir = "var"\n\n[[beds]]\nid = "bed-1"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["users", "add", "alice", "--role", "nurse", "--config", str(config)]) == 0
    users = UserFile(tmp_path / "var" / "users.json")
    record = users.get("alice")
    assert record is not None and record.role == "nurse"
    assert verify_password(PASSWORD, record.password)
    assert PASSWORD not in capsys.readouterr().out

    assert cli.main(["users", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "alice\tnurse\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["users", "add", "bob", "--role", "nurse", "--config", str(config)]) == 2
    assert "too short" in capsys.readouterr().err
    assert cli.main(["users", "add", "bob", "--config", str(config)]) == 2
    assert cli.main(["users", "remove", "alice", "--config", str(config)]) == 0
    assert users.names() == []
