"""Who may act on the nurse page: users, password hashes, sessions, CSRF and roles.

Viewing the ward needs no login on the local box unless ``[web] require_login_to_view`` is
set; every action that changes something (acknowledge, audio pause, limit changes) does.

* **Users** live in a JSON file (default ``<data_dir>/users.json``, mode 0600), managed with
  ``bedside-gateway users add NAME --role ROLE`` (password from standard input, never the
  command line). Passwords are stored as scrypt hashes (memory-hard: about 32 MiB per check)
  with a random 16-byte salt each; checks compare in constant time. The file is re-read when
  it changes, so users can be added while the gateway runs.
* **Roles** are ranked ``viewer`` < ``nurse`` < ``technician``: a technician may do what a
  nurse may. Which role an action needs is decided where the action is handled.
* **Sessions** are random 256-bit tokens in an ``HttpOnly``, ``SameSite=Strict`` cookie, kept
  in memory only (a restart logs everyone out). A session ends ``session_lifetime`` seconds
  after login or ``idle_timeout`` seconds after its last authenticated request, whichever is
  first. Time is the injected :class:`~drivers.clock.Clock`.
* **CSRF**: every state-changing request (anything but GET/HEAD/OPTIONS) must carry the
  session's token in the ``X-CSRF-Token`` header, and its ``Origin``, when the browser sends
  one, must be this server. The page gets the token from ``POST /api/login`` or
  ``GET /api/session``; another site cannot read either (no CORS).
* **Failed logins** are limited per user name and per client address: after
  ``max_failures`` within ``failure_window`` seconds, logins for that name or from that
  address are refused for ``lockout`` seconds (HTTP 429 with ``Retry-After``).
* **Audit**: logins, logouts, failed and refused logins go to the audit sink (the store's
  ``audit_log``) with the client address; never a password, and never a name that matches
  no user (it may be a password typed in the wrong field).

Routes (installed by :meth:`Auth.install`)::

    POST /api/login    {"name", "password"} -> {"user": {"name", "role"}, "csrf", ...}
    POST /api/logout   (CSRF token needed) -> {"user": null}
    GET  /api/session  -> {"user": {...} | null, "csrf": str | null, "require_login_to_view"}
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from drivers.clock import Clock

log = structlog.get_logger(__name__)

#: Roles, least to most trusted; a role may do everything the ones before it may.
ROLES: tuple[str, ...] = ("viewer", "nurse", "technician")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

#: scrypt cost: N=2^15, r=8 takes 128 * N * r = 32 MiB and tens of milliseconds per check
#: on a Pi-class CPU; enough to make guessing offline expensive, cheap enough for a ward.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
DIGEST_BYTES = 32
#: Passwords shorter than this are refused when a user is added.
MIN_PASSWORD_LENGTH = 8
#: Longer input is refused before hashing (a megabyte password would only cost CPU).
MAX_PASSWORD_LENGTH = 1024
USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

SESSION_COOKIE = "bg_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

DEFAULT_SESSION_LIFETIME = 12 * 3600.0
DEFAULT_IDLE_TIMEOUT = 30 * 60.0
DEFAULT_MAX_FAILURES = 5
DEFAULT_FAILURE_WINDOW = 5 * 60.0
DEFAULT_LOCKOUT = 5 * 60.0
#: Sessions kept at most; the least recently used goes first (a page that logs in in a
#: loop must not use up the box's memory).
MAX_SESSIONS = 256

#: ``await audit(actor, action, detail)``: commit one audit entry (the daemon runs
#: ``TwinStore.audit`` in the store's writer thread). A failure is logged, never fatal.
AuditSink = Callable[[str, str, str], Awaitable[object]]
#: Seconds a login or logout waits for its audit entry before going ahead without it: a
#: failing disk must not lock nurses out (the store's own alarm says the disk is failing).
AUDIT_TIMEOUT = 2.0


class UserFileError(Exception):
    """The users file cannot be read or written, or a user cannot be added as asked."""


@dataclass(frozen=True)
class User:
    """Someone acting on the page: ``role`` is one of :data:`ROLES`."""

    name: str
    role: str


#: Who views when viewing needs no login; never allowed to change anything.
ANONYMOUS = User("anonymous", "viewer")


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (unknown roles may do nothing)."""
    if needed not in _RANK:
        raise ValueError(f"unknown role {needed!r}; use one of {', '.join(ROLES)}")
    return role in _RANK and _RANK[role] >= _RANK[needed]


# -- password hashes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """An scrypt digest with its salt and cost, as stored: ``scrypt$N$r$p$salt$digest``."""

    salt: bytes
    digest: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def to_text(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"scrypt${self.n}${self.r}${self.p}${salt}${digest}"

    @classmethod
    def from_text(cls, text: str) -> PasswordHash:
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("not an scrypt password hash")
        n, r, p = (int(x) for x in parts[1:4])
        if n < 2 or n & (n - 1) or not (1 <= r <= 64) or not (1 <= p <= 16):
            raise ValueError("scrypt parameters out of range")
        return cls(base64.b64decode(parts[4]), base64.b64decode(parts[5]), n, r, p)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r,  # twice what it needs: OpenSSL's own limit is 32 MiB
        dklen=DIGEST_BYTES,
    )


def hash_password(password: str, *, n: int = SCRYPT_N) -> PasswordHash:
    """A fresh hash of ``password`` with a new random salt (``n`` lower only in tests)."""
    salt = secrets.token_bytes(SALT_BYTES)
    return PasswordHash(salt, _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P), n)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Whether ``password`` hashes to ``stored``, compared in constant time."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    candidate = _scrypt(password, stored.salt, stored.n, stored.r, stored.p)
    return hmac.compare_digest(candidate, stored.digest)


# -- the users file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    role: str
    password: PasswordHash


class UserFile:
    """Users and their password hashes in one JSON file, re-read when it changes.

    Format: ``{"version": 1, "users": {"NAME": {"role": "nurse", "password": "scrypt$..."}}}``.
    A missing file means no users (nobody can log in; viewing still works). A damaged file
    is refused with a clear error, and the users last read stay in force.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._users: dict[str, UserRecord] = {}
        self._stamp: tuple[int, int, int] | None = None

    def get(self, name: str) -> UserRecord | None:
        self._refresh()
        return self._users.get(name)

    def names(self) -> list[str]:
        self._refresh()
        return sorted(self._users)

    def records(self) -> list[UserRecord]:
        self._refresh()
        return [self._users[n] for n in sorted(self._users)]

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._users, self._stamp = {}, None
            return
        except OSError as exc:
            log.error("cannot read the users file", path=str(self.path), error=exc.strerror)
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        try:
            self._users = _parse_users(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.error("users file unusable; keeping the users last read", error=str(exc))
        self._stamp = stamp

    def add(self, name: str, role: str, password: str, *, n: int = SCRYPT_N) -> bool:
        """Add ``name`` or replace its role and password; True if it was new."""
        if not USER_NAME_PATTERN.match(name):
            raise UserFileError(
                f"user name {name!r} not allowed; use 1-64 letters, digits, '.', '_', '@' or '-'"
            )
        if role not in _RANK:
            raise UserFileError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise UserFileError(
                f"password too short; use at least {MIN_PASSWORD_LENGTH} characters"
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise UserFileError(f"password too long; use at most {MAX_PASSWORD_LENGTH} characters")
        users = self._read_for_update()
        new = name not in users
        users[name] = UserRecord(name, role, hash_password(password, n=n))
        self._write(users)
        return new

    def remove(self, name: str) -> bool:
        """Remove ``name``; False if there was no such user."""
        users = self._read_for_update()
        if users.pop(name, None) is None:
            return False
        self._write(users)
        return True

    def _read_for_update(self) -> dict[str, UserRecord]:
        try:
            return _parse_users(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserFileError(f"{self.path}: {exc}; fix or remove the file") from None

    def _write(self, users: dict[str, UserRecord]) -> None:
        body = {
            "version": 1,
            "users": {
                u.name: {"role": u.role, "password": u.password.to_text()}
                for u in sorted(users.values(), key=lambda u: u.name)
            },
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".users.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    os.fchmod(out.fileno(), 0o600)
                    json.dump(body, out, indent=2)
                    out.write("\n")
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise UserFileError(f"cannot write {self.path}: {exc.strerror}") from None


def _parse_users(text: str) -> dict[str, UserRecord]:
    raw = json.loads(text)
    if (
        not isinstance(raw, dict)
        or raw.get("version") != 1
        or not isinstance(raw.get("users"), dict)
    ):
        raise ValueError('not a users file (expected {"version": 1, "users": {...}})')
    users: dict[str, UserRecord] = {}
    for name, entry in raw["users"].items():
        if not isinstance(entry, dict) or entry.get("role") not in _RANK:
            raise ValueError(f"user {name!r}: role must be one of {', '.join(ROLES)}")
        password = entry.get("password")
        if not isinstance(password, str):
            raise ValueError(f"user {name!r}: password hash missing")
        try:
            users[name] = UserRecord(name, entry["role"], PasswordHash.from_text(password))
        except ValueError as exc:
            raise ValueError(f"user {name!r}: {exc}") from None
    return users


# -- sessions ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Session:
    token: str
    user: User
    csrf: str
    created: float
    last_seen: float


class Sessions:
    """Live sessions by token; expiry on the injected clock (monotonic seconds)."""

    def __init__(
        self,
        clock: Clock,
        *,
        lifetime: float = DEFAULT_SESSION_LIFETIME,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        if not (lifetime > 0 and idle_timeout > 0):
            raise ValueError("session lifetime and idle timeout must be > 0")
        self.clock = clock
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._by_token: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    def create(self, user: User) -> Session:
        now = self.clock.monotonic()
        self._sweep(now)
        while len(self._by_token) >= self.max_sessions:
            oldest = min(self._by_token.values(), key=lambda s: s.last_seen)
            del self._by_token[oldest.token]
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now, now)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session for ``token``; ``touch`` counts this as activity."""
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        now = self.clock.monotonic()
        if self._expired(session, now):
            del self._by_token[token]
            return None
        if touch:
            session.last_seen = now
        return session

    def end(self, token: str | None) -> Session | None:
        return self._by_token.pop(token, None) if token else None

    def expires_in(self, session: Session) -> float:
        """Seconds until ``session`` ends unless it is used again."""
        now = self.clock.monotonic()
        return max(
            0.0,
            min(session.created + self.lifetime, session.last_seen + self.idle_timeout) - now,
        )

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now >= session.created + self.lifetime or now >= session.last_seen + self.idle_timeout
        )

    def _sweep(self, now: float) -> None:
        for token in [t for t, s in self._by_token.items() if self._expired(s, now)]:
            del self._by_token[token]


# -- failed-login limiting --------------------------------------------------------------------


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginThrottle:
    """Counts failed logins per key (a user name, a client address) on the clock."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window: float = DEFAULT_FAILURE_WINDOW,
        lockout: float = DEFAULT_LOCKOUT,
    ) -> None:
        if max_failures < 1 or not (window > 0 and lockout > 0):
            raise ValueError("max_failures must be >= 1; window and lockout > 0")
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self._keys: dict[str, _Failures] = {}

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until a login under any of ``keys`` is allowed again (0: allowed now)."""
        now = self.clock.monotonic()
        wait = 0.0
        for key in keys:
            entry = self._keys.get(key)
            if entry is not None and entry.locked_until > now:
                wait = max(wait, entry.locked_until - now)
        return wait

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock.monotonic()
        self._forget_old(now)
        for key in keys:
            entry = self._keys.setdefault(key, _Failures())
            entry.times.append(now)
            while entry.times and entry.times[0] <= now - self.window:
                entry.times.popleft()
            if len(entry.times) >= self.max_failures:
                entry.locked_until = now + self.lockout
                entry.times.clear()

    def succeeded(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._keys.pop(key, None)

    def _forget_old(self, now: float) -> None:
        # Bounded memory under a scan of many names: drop keys with nothing recent.
        if len(self._keys) < 1024:
            return
        for key in [
            k
            for k, e in self._keys.items()
            if e.locked_until <= now and (not e.times or e.times[-1] <= now - self.window)
        ]:
            del self._keys[key]


# -- the aiohttp side -------------------------------------------------------------------------

AUTH_KEY: web.AppKey[Auth] = web.AppKey("auth")


class Auth:
    """Logins, sessions and role checks for one page server."""

    def __init__(
        self,
        users: UserFile | None,
        clock: Clock,
        *,
        audit: AuditSink | None = None,
        require_login_to_view: bool = False,
        session_lifetime: float = DEFAULT_SESSION_LIFETIME,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_failures: int = DEFAULT_MAX_FAILURES,
        failure_window: float = DEFAULT_FAILURE_WINDOW,
        lockout: float = DEFAULT_LOCKOUT,
    ) -> None:
        self.users = users
        self.clock = clock
        self.audit_sink = audit
        self.require_login_to_view = require_login_to_view
        self.sessions = Sessions(clock, lifetime=session_lifetime, idle_timeout=idle_timeout)
        self.throttle = LoginThrottle(
            clock, max_failures=max_failures, window=failure_window, lockout=lockout
        )
        self._dummy: PasswordHash | None = None

    def install(self, app: web.Application) -> None:
        app[AUTH_KEY] = self
        app.router.add_post("/api/login", self._login)
        app.router.add_post("/api/logout", self._logout)
        app.router.add_get("/api/session", self._session)

    # -- checks --------------------------------------------------------------------------
    def session_of(self, request: web.Request, *, touch: bool = True) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), touch=touch)

    async def require(self, request: web.Request, role: str) -> User:
        """The user behind ``request`` if they may act as ``role``; else raise.

        HTTPUnauthorized (401): not logged in (or the session expired) where a login is
        needed. HTTPForbidden (403): logged in without the role, or a state-changing request
        without the session's CSRF token or from another origin.
        """
        if role not in _RANK:
            raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        changing = request.method not in _SAFE_METHODS
        session = self.session_of(request)
        if session is not None and not self._still_valid(session):
            self.sessions.end(session.token)
            await self.audit(session.user.name, "logout", "user removed or role changed")
            session = None
        if session is None:
            if role == "viewer" and not changing and not self.require_login_to_view:
                return ANONYMOUS
            raise _json_error(web.HTTPUnauthorized, "log in first (or the session has ended)")
        if changing:
            self._check_csrf(request, session)
        if not role_allows(session.user.role, role):
            raise _json_error(
                web.HTTPForbidden, f"{session.user.role} may not do this; needs {role}"
            )
        return session.user

    def _still_valid(self, session: Session) -> bool:
        """A removed user, or one whose role changed, is logged out at their next request."""
        if self.users is None:
            return False
        record = self.users.get(session.user.name)
        return record is not None and record.role == session.user.role

    def _check_csrf(self, request: web.Request, session: Session) -> None:
        token = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise _json_error(web.HTTPForbidden, "missing or wrong CSRF token; reload the page")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise _json_error(web.HTTPForbidden, "request from another origin refused")

    async def audit(self, actor: str, action: str, detail: str) -> None:
        log.info("audit", actor=actor, action=action, detail=detail)
        if self.audit_sink is not None:
            try:
                await asyncio.wait_for(self.audit_sink(actor, action, detail), AUDIT_TIMEOUT)
            except Exception as exc:  # a full disk must not lock nurses out
                log.error("audit entry not stored", action=action, error=repr(exc))

    # -- handlers ------------------------------------------------------------------------
    async def _login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _json_error(web.HTTPBadRequest, "send JSON {name, password}") from None
        name = body.get("name") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(name, str) or not isinstance(password, str) or not name:
            raise _json_error(web.HTTPBadRequest, "send JSON {name, password}")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise _json_error(web.HTTPForbidden, "login from another origin refused")
        address = request.remote or "unknown"
        record = self.users.get(name) if self.users is not None else None
        # A name that matches nobody is not written anywhere: it may be a password.
        actor = name if record is not None else "(unknown user)"
        keys = (f"name:{name}", f"addr:{address}")
        wait = self.throttle.retry_after(keys)
        if wait > 0:
            await self.audit(actor, "login_refused", f"too many failed logins; from {address}")
            raise _json_error(
                web.HTTPTooManyRequests,
                f"too many failed logins; try again in {int(wait) + 1} s",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        # scrypt takes tens of milliseconds of CPU: off the loop that carries the alarms.
        ok = await asyncio.to_thread(self._verify, password, record)
        if record is None or not ok:
            self.throttle.failed(keys)
            await self.audit(actor, "login_failed", f"from {address}")
            raise _json_error(web.HTTPUnauthorized, "wrong name or password")
        self.throttle.succeeded(keys)
        old = self.sessions.end(request.cookies.get(SESSION_COOKIE))
        if old is not None:
            await self.audit(old.user.name, "logout", f"replaced by a new login; from {address}")
        session = self.sessions.create(User(record.name, record.role))
        await self.audit(record.name, "login", f"role {record.role}; from {address}")
        response = web.json_response(self._describe(session))
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        session = self.session_of(request, touch=False)
        if session is not None:
            self._check_csrf(request, session)
            self.sessions.end(session.token)
            await self.audit(session.user.name, "logout", f"from {request.remote or 'unknown'}")
        response = web.json_response(self._describe(None))
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def _session(self, request: web.Request) -> web.Response:
        # Asking who is logged in is not activity: a page that checks must not keep an
        # unattended session alive for ever.
        return web.json_response(self._describe(self.session_of(request, touch=False)))

    def _describe(self, session: Session | None) -> dict[str, Any]:
        return {
            "user": None
            if session is None
            else {"name": session.user.name, "role": session.user.role},
            "csrf": None if session is None else session.csrf,
            "expires_in": None if session is None else round(self.sessions.expires_in(session), 3),
            "idle_timeout": self.sessions.idle_timeout,
            "require_login_to_view": self.require_login_to_view,
        }

    def _verify(self, password: str, record: UserRecord | None) -> bool:
        if record is not None:
            return verify_password(password, record.password)
        # Checking an unknown name costs as much as a known one, so timing does not tell
        # which names exist.
        if self._dummy is None:
            self._dummy = hash_password(secrets.token_urlsafe(16))
        verify_password(password, self._dummy)
        return False


def _json_error(
    kind: type[web.HTTPError], message: str, headers: dict[str, str] | None = None
) -> web.HTTPError:
    return kind(
        text=json.dumps({"error": message}), content_type="application/json", headers=headers
    )


async def require(request: web.Request, role: str) -> User:
    """The user behind ``request`` if they may act as ``role``; raise HTTPUnauthorized or
    HTTPForbidden otherwise (see :meth:`Auth.require`). Usable wherever a handler takes a
    ``require`` callable; the app must have an :class:`Auth` installed."""
    return await request.app[AUTH_KEY].require(request, role)
