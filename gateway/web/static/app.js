/*
 * Nurse page: shows the beds the gateway pushes over /api/stream (Server-Sent Events), their
 * alarms as visual and audible signals, and a bed's detail with live waveforms.
 *
 * Rules this file keeps (patient safety, see docs/ARCHITECTURE.md):
 * - A value is shown as current only while the gateway says it is not stale AND its age is
 *   within the gateway's stale_after AND the stream is alive. Otherwise it is greyed and struck
 *   through with "stale <age>", or "---" if there is no value at all.
 * - The page adds its own seconds to the ages it was sent, so an age keeps counting between
 *   pushes, and a value whose age so counted passes stale_after is greyed at once, without
 *   waiting for the gateway to say so: a stream that stalls without closing (gateway hung)
 *   must not keep an old value looking current.
 * - A stream that errors, or stays silent for max(2 * heartbeat, stale_after) + 1 seconds, is
 *   "lost": a full-screen warning says so, with its own sound, and every value is marked
 *   stale until data arrives again. A silent page must never look like a quiet ward.
 * - Alarms (IEC 60601-1-8): high red flashing at 2 Hz, medium yellow flashing at 0.625 Hz, low
 *   cyan steady; always with the priority in words and a mark (!!!, !!, !), never colour
 *   alone. Sound: high 10-pulse burst, medium 3-pulse, low 2-pulse, by Web Audio. When the
 *   browser blocks sound, a prompt says so until a tap turns it on.
 * - After rendering a push, the page confirms it to the gateway (alarm-path self-check), so
 *   the gateway raises its own alarm when pushes stop reaching a screen.
 * - Values the device marks invalid or unavailable are never shown in the live colours.
 * - Data reaches the DOM through textContent and data attributes only, never as markup.
 */
"use strict";

(() => {
  const SPO2 = "MDC_PULS_OXIM_SAT_O2";
  const PULSE_RATE = "MDC_PULS_OXIM_PULS_RATE";
  const MAIN_CODES = new Set([SPO2, PULSE_RATE]);
  const PLETH = "MDC_PULS_OXIM_PLETH";
  /** ECG leads in order of preference for the one trace drawn. */
  const ECG_LEADS = ["MDC_ECG_ELEC_POTL_II", "MDC_ECG_ELEC_POTL_I", "MDC_ECG_ELEC_POTL_III", "MDC_ECG_ELEC_POTL"];

  /** Infusion pump metrics (drivers/codes.py). */
  const PUMP = {
    rate: "MDC_FLOW_FLUID_PUMP",
    infused: "MDC_VOL_FLUID_DELIV",
    vtbi: "MDC_VOL_FLUID_TBI",
    remaining: "MDC_VOL_FLUID_TBI_REMAIN",
    timeLeft: "MDC_TIME_PD_REMAIN",
    status: "MDC_PUMP_STAT",
    battery: "MDC_PRIV_PUMP_BATT_CHARGE",
    concentration: "MDC_PRIV_PUMP_DRUG_CONC",
  };
  const PUMP_CODES = new Set(Object.values(PUMP));
  /** drivers.infusion.profile.PumpState */
  const PUMP_STATES = ["off", "standby", "stopped", "running", "paused", "KVO", "bolus", "complete", "occluded", "priming"];

  /** Short names for the smaller values. */
  const NAMES = {
    MDC_PULS_OXIM_PERF_REL: "Perfusion index",
    MDC_ECG_HEART_RATE: "Heart rate",
    MDC_ECG_TIME_PD_RR_GL: "RR interval",
    [SPO2]: "SpO₂",
    [PULSE_RATE]: "Pulse rate",
    [PUMP.rate]: "Pump rate",
    [PUMP.infused]: "Volume infused",
    [PUMP.vtbi]: "VTBI",
    [PUMP.remaining]: "VTBI remaining",
    [PUMP.timeLeft]: "Time to end",
    [PUMP.status]: "Pump state",
    [PUMP.battery]: "Pump battery",
    [PUMP.concentration]: "Concentration",
  };

  /** Decimals shown per code; anything else shows integers as such and one decimal. */
  const DECIMALS = {
    [SPO2]: 0,
    [PULSE_RATE]: 0,
    MDC_ECG_HEART_RATE: 0,
    MDC_PULS_OXIM_PERF_REL: 1,
  };

  /** Technical conditions (gateway API names) in the words a nurse reads. */
  const CONDITION_WORDS = {
    disconnected: "disconnected",
    sensor_off: "sensor off",
    sensor_alarm: "sensor fault",
    out_of_track: "searching for pulse",
    artifact: "artifact",
    low_perfusion: "low perfusion",
    low_battery: "low battery",
    no_data: "no data",
  };

  /** Measurement status flags in words. */
  const STATUS_WORDS = {
    unavailable: "unavailable",
    invalid: "invalid",
    questionable: "questionable",
    low_perfusion: "low perfusion",
    early: "settling",
    demo: "demo data",
  };

  const LINK_WORDS = {
    connected: "connected",
    connecting: "connecting",
    disconnected: "disconnected",
  };

  const PRIORITY_RANK = { high: 3, medium: 2, low: 1 };
  /** IEC 60601-1-8 marks: the priority readable without colour. */
  const PRIORITY_MARK = { high: "!!!", medium: "!!", low: "!" };
  const PRIORITY_WORD = { high: "HIGH", medium: "MEDIUM", low: "LOW" };
  const UNFINISHED = new Set(["active", "latched", "acknowledged"]);

  /** Used until the gateway's hello says otherwise (seconds): the gateway's own defaults. */
  const DEFAULT_STALE_AFTER = 5;
  const DEFAULT_HEARTBEAT = 2;
  /** Seconds of silence beyond max(2 heartbeats, stale_after) before the stream is "lost". */
  const WATCHDOG_MARGIN = 1;
  /** Milliseconds added to a timer for a deadline, so it fires just past it, not just before. */
  const DEADLINE_SLACK_MS = 10;
  /** Status flags that make a value unusable even when it is fresh. */
  const UNUSABLE = new Set(["invalid", "unavailable"]);
  /** Delay before re-creating a stream the browser gave up on (it retries others itself). */
  const RECONNECT_MS = 3000;
  /** Audio pause asked for (seconds); the gateway caps it at 120. */
  const PAUSE_SECONDS = 120;
  /** Waveforms: 25 mm/s at the CSS reference of 96 px per inch. */
  const PX_PER_MM = 96 / 25.4;
  const SWEEP_PX_PER_S = 25 * PX_PER_MM;
  /** ECG gain, 10 mm/mV. */
  const ECG_PX_PER_MV = 10 * PX_PER_MM;
  /** Seconds the trace runs behind the newest sample, so polls arrive before they are drawn. */
  const WAVE_DELAY_S = 0.6;
  const WAVE_POLL_MS = 250;

  const page = {
    beds: [],
    receivedAt: 0,
    lastMessageAt: 0,
    connection: "connecting",
    lostSince: null,
    staleAfter: DEFAULT_STALE_AFTER,
    heartbeat: DEFAULT_HEARTBEAT,
    connectStartedAt: 0,
    source: null,
    reconnectTimer: null,
    /** performance.now() at which the next shown-as-current value turns stale. */
    nextFlipAt: Infinity,
    deadlineTimer: null,
    /** The gateway's wall clock (UTC s) at gatewayWallAt (performance.now()). */
    gatewayWall: null,
    gatewayWallAt: 0,
    /** Logged-in user ({name, role}) and the session's CSRF token. */
    user: null,
    csrf: null,
    requireLoginToView: false,
    /** Bed shown in detail (id) or null for the ward. */
    detailBed: null,
    lastEventId: null,
    /** Unfinished alarms of the gateway itself (pseudo-bed), from GET /api/alarms. */
    gatewayAlarms: [],
  };
  /** Pseudo-bed of gateway-wide conditions (gateway/alarms/model.py GATEWAY). */
  const GATEWAY_BED = "_gateway";
  const GATEWAY_ALARMS_POLL_MS = 5000;

  /** bed id -> {root, parts...} for tiles on screen. */
  const tiles = new Map();

  const $ = (selector) => document.querySelector(selector);

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function words(table, key) {
    return table[key] || String(key).replace(/_/g, " ");
  }

  function formatValue(code, value) {
    const decimals = code in DECIMALS ? DECIMALS[code] : Number.isInteger(value) ? 0 : 1;
    return value.toFixed(decimals);
  }

  function formatAge(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 90) return `${s} s`;
    if (s < 5400) return `${Math.floor(s / 60)} min`;
    return `${Math.floor(s / 3600)} h`;
  }

  function formatCountdown(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function formatMinutes(minutes) {
    const m = Math.max(0, Math.round(minutes));
    return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  }

  function formatClock(utcSeconds) {
    if (typeof utcSeconds !== "number") return "";
    return new Date(utcSeconds * 1000).toISOString().slice(11, 19) + " UTC";
  }

  /** The gateway's time now (UTC s), counted on from its last clock event. */
  function gatewayNow() {
    if (page.gatewayWall === null) return Date.now() / 1000;
    return page.gatewayWall + (performance.now() - page.gatewayWallAt) / 1000;
  }

  /** Milliseconds of silence after which the stream is taken for lost. */
  function watchdogMs() {
    return (Math.max(2 * page.heartbeat, page.staleAfter) + WATCHDOG_MARGIN) * 1000;
  }

  function isNumber(x) {
    return typeof x === "number" && Number.isFinite(x);
  }

  // -- alarms ----------------------------------------------------------------------------

  function rank(priority) {
    return PRIORITY_RANK[priority] || 0;
  }

  /** A bed's unfinished alarms, highest priority first (the gateway sends them so; kept). */
  function alarmsOf(bed) {
    const list = Array.isArray(bed.alarms) ? bed.alarms : [];
    return list
      .filter((a) => a && typeof a === "object" && UNFINISHED.has(a.state))
      .sort((a, b) => rank(b.priority) - rank(a.priority) || (b.since || 0) - (a.since || 0));
  }

  function alarmText(alarm) {
    return String(alarm.message || alarm.condition || "alarm");
  }

  /** What a bed's audio is doing: {priority, pausedFor (s) or 0, pausedBy}. */
  function audioOf(bed) {
    const audio = bed.audio && typeof bed.audio === "object" ? bed.audio : {};
    const left = isNumber(audio.paused_until) ? audio.paused_until - gatewayNow() : 0;
    return {
      priority: PRIORITY_RANK[audio.priority] ? audio.priority : null,
      pausedFor: left > 0 ? left : 0,
      pausedBy: typeof audio.paused_by === "string" ? audio.paused_by : null,
    };
  }

  // -- sound -----------------------------------------------------------------------------

  /**
   * IEC 60601-1-8 burst patterns. Times in seconds from the burst start. High: 10 pulses,
   * 3+2, pause, 3+2, pulse 150 ms, spacing 90 ms (3rd to 4th: 2 spacings + 1 pulse); burst
   * every 8 s. Medium: 3 pulses of 200 ms, 200 ms apart; every 8 s. Low: 2 pulses of 200 ms;
   * every 20 s. The lost-connection sound is deliberately unlike any alarm: a falling
   * two-tone every 3 s.
   */
  const PATTERNS = (() => {
    const high = [];
    const tdH = 0.15;
    const tsH = 0.09;
    let t = 0;
    for (let half = 0; half < 2; half += 1) {
      for (let i = 0; i < 3; i += 1) {
        high.push(t);
        t += tdH + tsH;
      }
      t += tsH + tdH; // 3rd to 4th: 2 spacings + 1 pulse
      for (let i = 0; i < 2; i += 1) {
        high.push(t);
        t += tdH + tsH;
      }
      t += 0.6; // between the halves
    }
    return {
      high: { starts: high, pulse: tdH, every: 8, pitch: 523.25 },
      medium: { starts: [0, 0.4, 0.8], pulse: 0.2, every: 8, pitch: 440 },
      low: { starts: [0, 0.4], pulse: 0.2, every: 20, pitch: 349.23 },
      lost: { starts: [0, 0.35], pulse: 0.3, every: 3, pitch: [880, 587.33] },
    };
  })();

  const sound = {
    ctx: null,
    wave: null,
    playing: null,
    timer: null,
    nextAt: 0,
    bursts: 0,
  };

  function audioContext() {
    if (sound.ctx === null) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return null;
      sound.ctx = new Ctx();
      // Four harmonics within 15 dB of the fundamental, as IEC 60601-1-8 asks of a pulse.
      const real = new Float32Array([0, 1, 0.7, 0.5, 0.4, 0.3]);
      sound.wave = sound.ctx.createPeriodicWave(real, new Float32Array(real.length));
      sound.ctx.addEventListener("statechange", showSoundState);
    }
    return sound.ctx;
  }

  function showSoundState() {
    const ctx = sound.ctx;
    const state = ctx === null ? "unsupported" : ctx.state === "running" ? "on" : "blocked";
    document.body.dataset.sound = state;
    const button = $("#sound");
    button.dataset.state = state;
    setText(button.querySelector(".sound-icon"), state === "on" ? "♪" : "✕");
    setText(
      button.querySelector(".sound-text"),
      state === "on" ? "Sound on" : state === "blocked" ? "SOUND OFF: tap to turn on" : "No sound in this browser",
    );
    $("#audio-prompt").hidden = state !== "blocked";
  }

  function unlockSound() {
    const ctx = audioContext();
    if (ctx !== null && ctx.state !== "running") {
      ctx.resume().then(showSoundState, showSoundState);
    }
  }

  function playBurst(name) {
    const ctx = sound.ctx;
    const pattern = PATTERNS[name];
    if (ctx === null || ctx.state !== "running" || !pattern) return;
    const t0 = ctx.currentTime + 0.02;
    pattern.starts.forEach((start, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      const pitch = Array.isArray(pattern.pitch) ? pattern.pitch[i % pattern.pitch.length] : pattern.pitch;
      osc.setPeriodicWave(sound.wave);
      osc.frequency.value = pitch;
      const a = t0 + start;
      const rise = pattern.pulse * 0.15;
      gain.gain.setValueAtTime(0, a);
      gain.gain.linearRampToValueAtTime(0.25, a + rise);
      gain.gain.setValueAtTime(0.25, a + pattern.pulse - rise);
      gain.gain.linearRampToValueAtTime(0, a + pattern.pulse);
      osc.connect(gain).connect(ctx.destination);
      osc.start(a);
      osc.stop(a + pattern.pulse + 0.01);
    });
    sound.bursts += 1;
    const button = $("#sound");
    button.dataset.pattern = name;
    button.dataset.pulses = String(pattern.starts.length);
    button.dataset.bursts = String(sound.bursts);
  }

  /** Sound ``name`` (a pattern) from now on, or stop with null; a change sounds at once. */
  function setSound(name) {
    const button = $("#sound");
    button.dataset.playing = name || "none";
    if (sound.playing === name) return;
    sound.playing = name;
    clearInterval(sound.timer);
    sound.timer = null;
    if (name === null) return;
    const tick = () => {
      if (sound.ctx === null || sound.ctx.state !== "running") return;
      const now = performance.now();
      if (now >= sound.nextAt) {
        playBurst(sound.playing);
        sound.nextAt = now + PATTERNS[sound.playing].every * 1000;
      }
    };
    sound.nextAt = 0;
    tick();
    sound.timer = setInterval(tick, 250);
  }

  /** What the ward should sound: lost connection first, then the highest bed audio. */
  function chooseSound() {
    if (page.connection === "lost") return "lost";
    let best = null;
    for (const alarm of page.gatewayAlarms) {
      if ((alarm.state === "active" || alarm.state === "latched") && rank(alarm.priority) > rank(best)) {
        best = alarm.priority;
      }
    }
    for (const bed of page.beds) {
      if (!bed || typeof bed !== "object") continue;
      const { priority } = audioOf(bed);
      if (priority && rank(priority) > rank(best)) best = priority;
    }
    return best;
  }

  // -- connection ------------------------------------------------------------------------

  function connect() {
    if (page.source !== null) page.source.close();
    clearTimeout(page.reconnectTimer);
    page.connectStartedAt = performance.now();
    const source = new EventSource("/api/stream");
    page.source = source;
    source.addEventListener("beds", (event) => {
      if (source === page.source) onBeds(event.data, event.lastEventId);
    });
    source.addEventListener("hello", (event) => {
      if (source === page.source) onHello(event.data);
    });
    source.addEventListener("clock", (event) => {
      if (source === page.source) onClock(event.data);
    });
    source.addEventListener("error", () => {
      if (source !== page.source) return;
      setConnection("lost");
      // The browser retries by itself unless it closed the stream for good (bad response).
      if (source.readyState === EventSource.CLOSED) {
        page.reconnectTimer = setTimeout(connect, RECONNECT_MS);
        if (page.requireLoginToView && page.user === null) loadSession();
      }
    });
  }

  function parse(data, what) {
    try {
      return JSON.parse(data);
    } catch (err) {
      console.error(`bad ${what} event`, err);
      return undefined;
    }
  }

  function onHello(data) {
    const hello = parse(data, "hello");
    if (!hello || typeof hello !== "object") return;
    const positive = (x) => isNumber(x) && x > 0;
    if (positive(hello.heartbeat_interval)) page.heartbeat = hello.heartbeat_interval;
    if (positive(hello.stale_after)) page.staleAfter = hello.stale_after;
    render();
  }

  function onClock(data) {
    const clock = parse(data, "clock");
    if (!clock || !isNumber(clock.wall)) return;
    page.gatewayWall = clock.wall;
    page.gatewayWallAt = performance.now();
    render();
  }

  function onBeds(data, eventId) {
    const beds = parse(data, "beds");
    if (!Array.isArray(beds)) return;
    page.beds = beds;
    page.receivedAt = page.lastMessageAt = performance.now();
    if (page.connection !== "live") {
      setConnection("live");
      loadGatewayName();
    }
    render();
    confirmSeen(eventId);
  }

  // -- alarm-path self-check -------------------------------------------------------------

  const selfCheck = {
    client: Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join(""),
    pending: null,
    inFlight: false,
    unsupported: false,
  };

  /** Tell the gateway this page rendered the push with SSE id ``eventId`` (see selfcheck.py). */
  function confirmSeen(eventId) {
    const seen = Number.parseInt(eventId, 10);
    if (!Number.isFinite(seen) || selfCheck.unsupported) return;
    selfCheck.pending = seen;
    if (selfCheck.inFlight) return;
    selfCheck.inFlight = true;
    const sent = selfCheck.pending;
    fetch("/api/alarm-path/confirm", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ seen: sent, client: selfCheck.client }),
      cache: "no-store",
    })
      .then((response) => {
        // No alarm engine on this gateway: nothing to confirm to.
        if (response.status === 404) selfCheck.unsupported = true;
      })
      .catch(() => {
        // The stream's own watchdog reports a gateway that went away.
      })
      .finally(() => {
        selfCheck.inFlight = false;
        if (selfCheck.pending !== sent) confirmSeen(String(selfCheck.pending));
      });
  }

  function setConnection(state) {
    if (page.connection === state) return;
    page.connection = state;
    document.body.dataset.connection = state;
    const lost = state === "lost";
    $("#lost-banner").hidden = !lost;
    if (lost && page.lostSince === null) page.lostSince = Date.now();
    if (!lost) page.lostSince = null;
    const text = {
      live: "Live",
      lost: "Connection to gateway lost",
      connecting: "Connecting to gateway…",
    }[state];
    setText($("#connection"), text);
    document.title = lost ? "⚠ Connection lost · Bedside gateway" : "Bedside gateway";
    render();
  }

  function loadGatewayName() {
    fetch("/api/health", { cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((health) => {
        if (health && typeof health.gateway === "string") {
          setText($("#gateway-name"), health.gateway);
        }
      })
      .catch(() => {
        // The name is decoration; the stream's own state tells the nurse what matters.
      });
  }

  /**
   * Once a second, and at each deadline: keep ages counting and notice a stream that went
   * quiet. A half-open connection (gateway hung or powered off, cable pulled) never errors by
   * itself, and neither does a reconnect that the other end accepts but never answers.
   */
  function tick() {
    const now = performance.now();
    const heardAt = Math.max(page.lastMessageAt, page.connectStartedAt);
    if (page.source !== null && now - heardAt > watchdogMs()) {
      if (page.connection === "live") setConnection("lost");
      connect();
    }
    render();
  }

  /** Wake up just after the next value turns stale or the stream's silence turns "lost". */
  function scheduleDeadline() {
    let at = page.nextFlipAt;
    if (page.source !== null) {
      at = Math.min(at, Math.max(page.lastMessageAt, page.connectStartedAt) + watchdogMs());
    }
    clearTimeout(page.deadlineTimer);
    page.deadlineTimer = null;
    if (Number.isFinite(at)) {
      const delay = Math.max(0, at - performance.now()) + DEADLINE_SLACK_MS;
      page.deadlineTimer = setTimeout(tick, delay);
    }
  }

  // -- login and actions -----------------------------------------------------------------

  function setUser(session) {
    page.user = session && session.user ? session.user : null;
    page.csrf = session && typeof session.csrf === "string" ? session.csrf : null;
    if (session && typeof session.require_login_to_view === "boolean") {
      page.requireLoginToView = session.require_login_to_view;
    }
    const name = page.user ? `${page.user.name} (${page.user.role})` : "";
    setText($("#user-name"), name);
    $("#login-button").hidden = page.user !== null;
    $("#logout-button").hidden = page.user === null;
    document.body.dataset.user = page.user ? page.user.name : "";
  }

  function loadSession() {
    return fetch("/api/session", { cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((session) => {
        setUser(session);
        if (page.requireLoginToView && page.user === null) askLogin("Log in to view the ward.");
      })
      .catch(() => {});
  }

  let loginWaiters = [];

  /** Show the login dialog; resolves true once logged in, false if cancelled. */
  function askLogin(reason) {
    const dialog = $("#login");
    setText($("#login-reason"), reason || "");
    setText($("#login-error"), "");
    if (!dialog.open) dialog.showModal();
    $("#login-name").focus();
    return new Promise((resolve) => loginWaiters.push(resolve));
  }

  function finishLogin(ok) {
    const dialog = $("#login");
    if (dialog.open) dialog.close();
    $("#login-password").value = "";
    const waiters = loginWaiters;
    loginWaiters = [];
    waiters.forEach((resolve) => resolve(ok));
  }

  function submitLogin(event) {
    event.preventDefault();
    const name = $("#login-name").value.trim();
    const password = $("#login-password").value;
    if (!name || !password) return;
    $("#login-submit").disabled = true;
    fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, password }),
      cache: "no-store",
    })
      .then((response) => response.json().then((body) => ({ response, body })))
      .then(({ response, body }) => {
        if (response.ok) {
          setUser(body);
          finishLogin(true);
          if (page.source === null || page.source.readyState === EventSource.CLOSED) connect();
        } else {
          setText($("#login-error"), (body && body.error) || `login failed (${response.status})`);
        }
      })
      .catch(() => setText($("#login-error"), "cannot reach the gateway"))
      .finally(() => {
        $("#login-submit").disabled = false;
      });
  }

  function logout() {
    fetch("/api/logout", { method: "POST", headers: { "X-CSRF-Token": page.csrf || "" }, cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((session) => setUser(session))
      .catch(() => {});
  }

  /**
   * Send an action (POST/PUT with JSON) as the logged-in user; ask for a login first when
   * there is none or the session ended, then try once more. Resolves to {ok, status, body}.
   */
  async function act(method, url, payload, why) {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      if (page.user === null) {
        const ok = await askLogin(why);
        if (!ok) return { ok: false, status: 0, body: { error: "not logged in" } };
      }
      let response;
      try {
        response = await fetch(url, {
          method,
          headers: { "Content-Type": "application/json", "X-CSRF-Token": page.csrf || "" },
          body: payload === undefined ? undefined : JSON.stringify(payload),
          cache: "no-store",
        });
      } catch (err) {
        return { ok: false, status: 0, body: { error: "cannot reach the gateway" } };
      }
      let body = null;
      try {
        body = await response.json();
      } catch (err) {
        body = null;
      }
      if (response.status === 401) {
        setUser(null);
        continue;
      }
      return { ok: response.ok, status: response.status, body };
    }
    return { ok: false, status: 401, body: { error: "not logged in" } };
  }

  function showActionError(result) {
    if (result.ok || result.status === 0) return;
    const message = (result.body && result.body.error) || `refused (${result.status})`;
    window.alert(message);
  }

  async function acknowledge(alarmId) {
    const result = await act(
      "POST",
      `/api/alarms/${encodeURIComponent(alarmId)}/acknowledge`,
      {},
      "Log in to acknowledge the alarm.",
    );
    showActionError(result);
  }

  /** Pause the bed's audio for PAUSE_SECONDS, or end a running pause (seconds 0). */
  async function pauseAudio(bedId) {
    const bed = page.beds.find((b) => b && b.id === bedId);
    const resume = bed ? audioOf(bed).pausedFor > 0 : false;
    const result = await act(
      "POST",
      `/api/beds/${encodeURIComponent(bedId)}/audio-pause`,
      { seconds: resume ? 0 : PAUSE_SECONDS },
      resume ? "Log in to turn the alarm sound back on." : "Log in to pause the alarm sound.",
    );
    showActionError(result);
  }

  // -- limits ----------------------------------------------------------------------------

  let limitsShown = null;
  const LIMIT_SIDES = [
    ["extreme_low", "Extreme low"],
    ["low", "Low"],
    ["high", "High"],
    ["extreme_high", "Extreme high"],
    ["delay", "Delay (s)"],
  ];

  async function openLimits(bedId) {
    let body;
    try {
      const response = await fetch(`/api/beds/${encodeURIComponent(bedId)}/limits`, { cache: "no-store" });
      body = await response.json();
      if (!response.ok) throw new Error((body && body.error) || `status ${response.status}`);
    } catch (err) {
      window.alert(`Cannot read the limits: ${err.message}`);
      return;
    }
    limitsShown = { bed: bedId, body };
    setText($("#limits-bed"), bedId);
    setText($("#limits-error"), "");
    const rows = $("#limits-rows");
    rows.replaceChildren();
    // {"limits": {metric: {low, high, extreme_low, extreme_high, delay}}, "metrics": {metric:
    // {label, unit, sane_low, sane_high}}} (gateway/web/alarm_api.py)
    const limits = body && typeof body.limits === "object" && body.limits ? body.limits : {};
    const metrics = body && typeof body.metrics === "object" && body.metrics ? body.metrics : {};
    for (const [key, limit] of Object.entries(limits)) {
      if (!limit || typeof limit !== "object") continue;
      const about = metrics[key] || {};
      const row = document.createElement("fieldset");
      row.className = "limit-row";
      row.dataset.key = key;
      const legend = document.createElement("legend");
      const sane = isNumber(about.sane_low) ? `, ${about.sane_low}-${about.sane_high}` : "";
      legend.textContent = `${about.label || key}${about.unit ? ` (${about.unit}${sane})` : ""}`;
      row.append(legend);
      for (const [side, word] of LIMIT_SIDES) {
        if (!(side in limit)) continue;
        const label = document.createElement("label");
        label.textContent = `${word} `;
        const input = document.createElement("input");
        input.type = "number";
        input.step = "any";
        input.name = side;
        input.value = limit[side] === null ? "" : String(limit[side]);
        input.dataset.was = input.value;
        label.append(input);
        row.append(label);
      }
      rows.append(row);
    }
    $("#limits").showModal();
  }

  async function saveLimits(event) {
    event.preventDefault();
    if (limitsShown === null) return;
    // Only what the nurse changed is sent (the gateway checks and audits each change).
    const changes = {};
    for (const row of $("#limits-rows").querySelectorAll(".limit-row")) {
      for (const input of row.querySelectorAll("input")) {
        if (input.value === input.dataset.was) continue;
        if (input.name === "delay" && input.value === "") continue;
        changes[row.dataset.key] = changes[row.dataset.key] || {};
        changes[row.dataset.key][input.name] = input.value === "" ? null : Number(input.value);
      }
    }
    if (Object.keys(changes).length === 0) {
      $("#limits").close();
      return;
    }
    const result = await act(
      "PUT",
      `/api/beds/${encodeURIComponent(limitsShown.bed)}/limits`,
      changes,
      "Log in to change alarm limits.",
    );
    if (result.ok) {
      $("#limits").close();
      limitsShown = null;
    } else {
      setText($("#limits-error"), (result.body && result.body.error) || `refused (${result.status})`);
    }
  }

  // -- rendering: ward -------------------------------------------------------------------

  function makeTile(bedId) {
    const root = $("#bed-tile").content.firstElementChild.cloneNode(true);
    root.dataset.bed = bedId;
    const metric = (code) => {
      const value = root.querySelector(`.value[data-code="${code}"]`);
      const section = value.closest(".metric");
      return {
        section,
        value,
        unit: section.querySelector(".unit"),
        badge: section.querySelector(".stale-badge"),
        flags: section.querySelector(".flags"),
      };
    };
    root.addEventListener("click", () => openDetail(bedId));
    root.addEventListener("keydown", (event) => {
      if (event.key === "Enter") openDetail(bedId);
    });
    return {
      root,
      label: root.querySelector(".bed-label"),
      alarm: root.querySelector(".tile-alarm"),
      alarmMark: root.querySelector(".alarm-mark"),
      alarmText: root.querySelector(".alarm-text"),
      alarmMore: root.querySelector(".alarm-more"),
      audio: root.querySelector(".tile-audio"),
      metrics: { [SPO2]: metric(SPO2), [PULSE_RATE]: metric(PULSE_RATE) },
      others: root.querySelector(".other-vitals"),
      otherRows: new Map(),
      conditions: root.querySelector(".conditions"),
      devices: root.querySelector(".devices"),
      deviceRows: new Map(),
    };
  }

  function render() {
    const container = $("#beds");
    const lost = page.connection !== "live";
    const elapsed = (performance.now() - page.receivedAt) / 1000;
    page.nextFlipAt = Infinity;
    const present = new Set();
    // The gateway's own conditions (store, sync, self-check) are not a bed: polled, and
    // also taken from any pseudo-bed ("_..." ids) a snapshot carries.
    const gatewayAlarms = page.gatewayAlarms.slice();
    let position = 0;
    for (const bed of page.beds) {
      if (!bed || typeof bed.id !== "string") continue;
      if (bed.id.startsWith("_")) {
        for (const alarm of alarmsOf(bed)) {
          if (!gatewayAlarms.some((a) => a.id === alarm.id)) gatewayAlarms.push(alarm);
        }
        continue;
      }
      present.add(bed.id);
      let tile = tiles.get(bed.id);
      if (tile === undefined) {
        tile = makeTile(bed.id);
        tiles.set(bed.id, tile);
      }
      const anchor = container.children[position + 1] || null; // +1: the "no beds" note
      if (tile.root !== anchor) container.insertBefore(tile.root, anchor);
      position += 1;
      renderTile(tile, bed, lost, elapsed);
    }
    for (const [id, tile] of tiles) {
      if (!present.has(id)) {
        tile.root.remove();
        tiles.delete(id);
      }
    }
    $("#no-beds").hidden = present.size > 0;
    renderGatewayAlarms(gatewayAlarms);
    renderLost();
    renderDetail(lost, elapsed);
    setSound(chooseSound());
    scheduleDeadline();
  }

  function loadGatewayAlarms() {
    fetch(`/api/alarms?bed=${GATEWAY_BED}`, { cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((body) => {
        if (!Array.isArray(body)) return;
        page.gatewayAlarms = alarmsOf({ alarms: body.filter((a) => a && a.bed === GATEWAY_BED) });
        render();
      })
      .catch(() => {});
  }

  function renderGatewayAlarms(alarms) {
    alarms.sort((a, b) => rank(b.priority) - rank(a.priority));
    const strip = $("#ward-alarms");
    strip.hidden = alarms.length === 0;
    const text = alarms.map((a) => `${PRIORITY_MARK[a.priority] || "!"} ${alarmText(a)}`).join(" · ");
    setText(strip, text ? `Gateway: ${text}` : "");
    strip.dataset.priority = alarms.length ? alarms[0].priority : "none";
  }

  function renderLost() {
    if (page.lostSince === null) return;
    const seconds = (Date.now() - page.lostSince) / 1000;
    setText($("#lost-since"), `No data from the gateway for ${formatAge(seconds)}.`);
  }

  /** Shows the bed's highest alarm on its tile; returns it (or null). */
  function renderTileAlarm(tile, bed) {
    const alarms = alarmsOf(bed);
    const top = alarms[0] || null;
    const priority = top ? top.priority : "none";
    tile.root.dataset.alarm = priority;
    tile.alarm.hidden = top === null;
    tile.alarm.dataset.priority = priority;
    tile.alarm.dataset.state = top ? top.state : "none";
    tile.alarm.dataset.kind = top ? String(top.kind) : "none";
    if (top) {
      tile.alarm.dataset.alarmId = String(top.id);
      setText(tile.alarmMark, PRIORITY_MARK[top.priority] || "!");
      const ack = top.state === "acknowledged" ? " · ACK" : top.state === "latched" ? " · ENDED, ACK NEEDED" : "";
      setText(tile.alarmText, `${PRIORITY_WORD[top.priority] || ""} ${alarmText(top)}${ack}`);
      setText(tile.alarmMore, alarms.length > 1 ? `+${alarms.length - 1} more` : "");
    } else {
      delete tile.alarm.dataset.alarmId;
    }
    const audio = audioOf(bed);
    const paused = audio.pausedFor > 0;
    tile.audio.hidden = !paused;
    if (paused) setText(tile.audio, `‖ ${formatCountdown(audio.pausedFor)}`);
    return top;
  }

  function renderTile(tile, bed, lost, elapsed) {
    setText(tile.label, String(bed.label ?? bed.id));
    renderTileAlarm(tile, bed);
    const vitals = bed.vitals && typeof bed.vitals === "object" ? bed.vitals : {};
    for (const code of MAIN_CODES) {
      renderMetric(tile.metrics[code], code, vitals[code], lost, elapsed);
    }
    renderOthers(tile, vitals, lost, elapsed);
    const devices = Array.isArray(bed.devices) ? bed.devices : [];
    renderDevices(tile, devices);
    renderConditions(tile, devices);
  }

  /**
   * Fills one value element and its notes, sets data-stale and data-invalid; returns whether
   * the value is stale. Stale: the stream is lost, there is no value, the gateway says so, or
   * its age (as sent, plus the seconds since) has passed stale_after. An age that is missing
   * cannot show the value is recent, so it counts as stale too.
   */
  function renderValue(parts, code, vital, lost, elapsed) {
    const hasValue = !!vital && isNumber(vital.value);
    const sentAge = vital ? vital.age : undefined;
    const ageKnown = isNumber(sentAge);
    const aged = !ageKnown || sentAge + elapsed > page.staleAfter;
    const stale = lost || !hasValue || vital.stale !== false || aged;
    if (!stale) {
      // Fresh now: remember when it will not be, so the page greys it at that moment.
      const flipAt = page.receivedAt + (page.staleAfter - sentAge) * 1000;
      page.nextFlipAt = Math.min(page.nextFlipAt, flipAt);
    }
    const status = vital && Array.isArray(vital.status) ? vital.status : [];
    const invalid = hasValue && status.some((flag) => UNUSABLE.has(flag));
    setText(parts.value, hasValue ? formatValue(code, vital.value) : "---");
    parts.value.dataset.stale = String(stale);
    parts.value.dataset.invalid = String(invalid);
    parts.value.classList.toggle("no-value", !hasValue);
    if (parts.unit && vital && typeof vital.unit === "string") {
      // UCUM "1" (dimensionless) means "no unit"; printed, it reads like part of the value.
      setText(parts.unit, vital.unit === "1" ? "" : vital.unit);
    }
    let badge = "";
    if (hasValue && stale) {
      badge = ageKnown ? `STALE ${formatAge(sentAge + elapsed)}` : "STALE";
    } else if (vital && !hasValue) {
      badge = "no value";
    }
    setText(parts.badge, badge);
    parts.badge.hidden = badge === "";
    setText(parts.flags, status.map((flag) => words(STATUS_WORDS, flag)).join(", "));
    return stale;
  }

  function renderMetric(parts, code, vital, lost, elapsed) {
    const stale = renderValue(parts, code, vital, lost, elapsed);
    parts.section.classList.toggle("is-stale", stale);
  }

  /** A row (name, value, unit, badge, flags) in a <dl>; created on first use. */
  function valueRow(rows, list, code) {
    let row = rows.get(code);
    if (row === undefined) {
      const wrap = document.createElement("div");
      wrap.className = "other";
      const name = document.createElement("dt");
      name.textContent = NAMES[code] || code;
      const detail = document.createElement("dd");
      const value = document.createElement("span");
      value.className = "value";
      value.dataset.code = code;
      const unit = document.createElement("span");
      unit.className = "unit";
      const badge = document.createElement("span");
      badge.className = "stale-badge";
      const flags = document.createElement("span");
      flags.className = "flags";
      detail.append(value, " ", unit, " ", badge, " ", flags);
      wrap.append(name, detail);
      list.append(wrap);
      row = { section: wrap, value, unit, badge, flags };
      rows.set(code, row);
    }
    return row;
  }

  function renderRows(rows, list, vitals, codes, lost, elapsed) {
    for (const code of codes) {
      const row = valueRow(rows, list, code);
      row.section.classList.toggle("is-stale", renderValue(row, code, vitals[code], lost, elapsed));
    }
    for (const [code, row] of rows) {
      if (!codes.includes(code)) {
        row.section.remove();
        rows.delete(code);
      }
    }
  }

  function renderOthers(tile, vitals, lost, elapsed) {
    const codes = Object.keys(vitals).filter((code) => !MAIN_CODES.has(code) && !PUMP_CODES.has(code));
    renderRows(tile.otherRows, tile.others, vitals, codes, lost, elapsed);
  }

  function renderDevices(tile, devices) {
    const present = new Set();
    for (const device of devices) {
      if (!device || typeof device.id !== "string") continue;
      present.add(device.id);
      let row = tile.deviceRows.get(device.id);
      if (row === undefined) {
        const li = document.createElement("li");
        li.className = "device";
        li.dataset.device = device.id;
        const dot = document.createElement("span");
        dot.className = "dot";
        dot.setAttribute("aria-hidden", "true");
        const name = document.createElement("span");
        name.className = "device-name";
        const state = document.createElement("span");
        state.className = "device-state";
        li.append(dot, name, " ", state);
        tile.devices.append(li);
        row = { li, name, state };
        tile.deviceRows.set(device.id, row);
      }
      const link = String(device.state ?? "unknown");
      row.li.dataset.state = link;
      setText(row.name, device.id);
      setText(row.state, words(LINK_WORDS, link));
      // Counters and the link detail are for the technician: on hover, not in the way.
      const title = [
        `driver ${device.driver ?? "?"}`,
        `frames ${device.frames_decoded ?? "?"}`,
        `dropped ${device.bytes_dropped ?? "?"} bytes`,
        device.detail ? String(device.detail) : "",
      ]
        .filter(Boolean)
        .join(" · ");
      if (row.li.title !== title) row.li.title = title;
    }
    for (const [id, row] of tile.deviceRows) {
      if (!present.has(id)) {
        row.li.remove();
        tile.deviceRows.delete(id);
      }
    }
  }

  function renderConditions(tile, devices) {
    const several = devices.length > 1;
    const items = [];
    for (const device of devices) {
      if (!device || !Array.isArray(device.conditions)) continue;
      for (const condition of device.conditions) {
        const text = words(CONDITION_WORDS, condition);
        items.push({ key: `${device.id}/${condition}`, condition, text: several ? `${device.id}: ${text}` : text });
      }
    }
    const list = tile.conditions;
    const current = Array.from(list.children, (li) => li.dataset.key).join("|");
    if (current === items.map((item) => item.key).join("|")) return;
    list.replaceChildren(
      ...items.map((item) => {
        const li = document.createElement("li");
        li.className = "condition";
        li.dataset.key = item.key;
        li.dataset.condition = item.condition;
        li.textContent = item.text;
        return li;
      }),
    );
  }

  // -- rendering: bed detail -------------------------------------------------------------

  const detail = {
    vitalRows: new Map(),
    alarmsKey: "",
    historyTimer: null,
    historyKey: "",
    waveTimer: null,
    waves: new Map(),
    frame: null,
    lastFrameAt: 0,
  };

  function openDetail(bedId) {
    if (location.hash !== `#bed=${encodeURIComponent(bedId)}`) {
      location.hash = `bed=${encodeURIComponent(bedId)}`;
    } else {
      route();
    }
  }

  function closeDetail() {
    if (location.hash) history.pushState(null, "", location.pathname);
    route();
  }

  /** The bed in the URL (#bed=ID), so a refresh or a bookmark keeps the view. */
  function route() {
    const match = /^#bed=(.+)$/.exec(location.hash);
    const bedId = match ? decodeURIComponent(match[1]) : null;
    if (bedId === page.detailBed) return;
    page.detailBed = bedId;
    document.body.dataset.view = bedId === null ? "ward" : "bed";
    $("#beds").hidden = bedId !== null;
    $("#detail").hidden = bedId === null;
    detail.vitalRows.forEach((row) => row.section.remove());
    detail.vitalRows.clear();
    detail.alarmsKey = "";
    detail.historyKey = "";
    $("#history").replaceChildren();
    detail.waves.clear();
    clearInterval(detail.historyTimer);
    clearInterval(detail.waveTimer);
    cancelAnimationFrame(detail.frame);
    if (bedId !== null) {
      loadHistory();
      detail.historyTimer = setInterval(loadHistory, 5000);
      pollWaves();
      detail.waveTimer = setInterval(pollWaves, WAVE_POLL_MS);
      detail.frame = requestAnimationFrame(drawWaves);
    }
    render();
  }

  function detailBed() {
    return page.beds.find((b) => b && b.id === page.detailBed) || null;
  }

  function renderDetail(lost, elapsed) {
    if (page.detailBed === null) return;
    const bed = detailBed();
    setText($("#detail-label"), bed ? String(bed.label ?? bed.id) : `${page.detailBed} (unknown bed)`);
    if (!bed) return;
    const alarms = alarmsOf(bed);
    renderDetailAlarms(alarms);
    const audio = audioOf(bed);
    const audioLine = $("#detail-audio");
    const paused = audio.pausedFor > 0;
    audioLine.hidden = !paused && audio.priority === null;
    audioLine.dataset.paused = String(paused);
    const pauseButton = $("#pause-audio");
    setText(pauseButton, paused ? "♪ Sound back on now" : "‖ Pause audio 2 min");
    pauseButton.dataset.paused = String(paused);
    if (paused) {
      const by = audio.pausedBy ? ` by ${audio.pausedBy}` : "";
      setText(audioLine, `‖ Audio paused${by}: sound returns in ${formatCountdown(audio.pausedFor)}`);
    } else if (audio.priority) {
      setText(audioLine, `♪ Sounding: ${PRIORITY_WORD[audio.priority]} priority`);
    }
    const vitals = bed.vitals && typeof bed.vitals === "object" ? bed.vitals : {};
    const codes = Object.keys(vitals).filter((code) => !PUMP_CODES.has(code));
    renderRows(detail.vitalRows, $("#detail-vitals"), vitals, codes, lost, elapsed);
    renderPumps(vitals, lost, elapsed);
  }

  function renderDetailAlarms(alarms) {
    const list = $("#detail-alarms");
    const key = alarms.map((a) => `${a.id}/${a.state}/${a.priority}/${a.acknowledged_by}/${a.message}`).join("|");
    if (key === detail.alarmsKey) return;
    detail.alarmsKey = key;
    list.replaceChildren(
      ...alarms.map((alarm) => {
        const li = document.createElement("li");
        li.className = "alarm";
        li.dataset.priority = alarm.priority;
        li.dataset.state = alarm.state;
        li.dataset.alarmId = String(alarm.id);
        const mark = document.createElement("span");
        mark.className = "alarm-mark";
        mark.setAttribute("aria-hidden", "true");
        mark.textContent = PRIORITY_MARK[alarm.priority] || "!";
        const text = document.createElement("span");
        text.className = "alarm-text";
        const delay = isNumber(alarm.delay) && alarm.delay > 0 ? ` (after ${alarm.delay} s)` : "";
        text.textContent = `${PRIORITY_WORD[alarm.priority] || ""} ${alarmText(alarm)}${delay}`;
        const meta = document.createElement("span");
        meta.className = "alarm-meta";
        const by = alarm.acknowledged_by ? `acknowledged by ${alarm.acknowledged_by}` : alarm.state;
        meta.textContent = `${alarm.kind} · since ${formatClock(alarm.since)} · ${by}${alarm.escalated ? " · escalated" : ""}`;
        li.append(mark, text, meta);
        if (alarm.state !== "acknowledged") {
          const button = document.createElement("button");
          button.type = "button";
          button.className = "ack";
          button.textContent = "✓ Acknowledge";
          button.addEventListener("click", (event) => {
            event.stopPropagation();
            acknowledge(alarm.id);
          });
          li.append(button);
        }
        return li;
      }),
    );
  }

  function pumpValue(vitals, code) {
    const v = vitals[code];
    return v && isNumber(v.value) ? v : null;
  }

  function renderPumps(vitals, lost, elapsed) {
    const box = $("#detail-pumps");
    const codes = Object.keys(vitals).filter((code) => PUMP_CODES.has(code));
    if (codes.length === 0) {
      if (!box.querySelector(".muted")) {
        const p = document.createElement("p");
        p.className = "muted";
        p.textContent = "No pump on this bed.";
        box.replaceChildren(p);
      }
      return;
    }
    let card = box.querySelector(".pump");
    if (!card) {
      card = document.createElement("div");
      card.className = "pump";
      const head = document.createElement("p");
      head.className = "pump-head";
      const list = document.createElement("dl");
      list.className = "pump-values";
      card.append(head, list);
      box.replaceChildren(card);
      detail.pumpRows = new Map();
    }
    const status = pumpValue(vitals, PUMP.status);
    const timeLeft = pumpValue(vitals, PUMP.timeLeft);
    const source = (vitals[codes[0]] && vitals[codes[0]].source) || "pump";
    const state = status ? PUMP_STATES[Math.round(status.value)] || `state ${status.value}` : "state unknown";
    const ends = timeLeft ? ` · ends in ${formatMinutes(timeLeft.value)}` : "";
    const head = card.querySelector(".pump-head");
    setText(head, `${source}: ${state}${ends}`);
    head.dataset.stale = String(lost || !timeLeft || timeLeft.stale !== false);
    const order = Object.values(PUMP).filter((code) => codes.includes(code));
    renderRows(detail.pumpRows, card.querySelector(".pump-values"), vitals, order, lost, elapsed);
  }

  function loadHistory() {
    const bedId = page.detailBed;
    if (bedId === null) return;
    fetch(`/api/alarms?bed=${encodeURIComponent(bedId)}`, { cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((body) => {
        if (bedId !== page.detailBed || body === null) return;
        const alarms = Array.isArray(body) ? body : Array.isArray(body.alarms) ? body.alarms : [];
        renderHistory(alarms.filter((a) => a && a.bed === bedId));
      })
      .catch(() => {});
  }

  function renderHistory(alarms) {
    const sorted = alarms.slice().sort((a, b) => (b.since || 0) - (a.since || 0));
    const key = sorted.map((a) => `${a.id}/${a.state}/${a.acknowledged_by}`).join("|");
    if (key === detail.historyKey) return;
    detail.historyKey = key;
    $("#history").replaceChildren(
      ...sorted.map((alarm) => {
        const tr = document.createElement("tr");
        tr.dataset.alarmId = String(alarm.id);
        tr.dataset.priority = alarm.priority;
        const valueLimit = [alarm.value, alarm.limit]
          .map((x) => (isNumber(x) ? String(x) : "–"))
          .join(" / ");
        const cells = [
          formatClock(alarm.since),
          `${PRIORITY_MARK[alarm.priority] || ""} ${alarm.priority || ""}`,
          alarmText(alarm),
          alarm.state,
          `${valueLimit}${alarm.unit ? ` ${alarm.unit}` : ""}`,
          alarm.acknowledged_by || "",
        ];
        for (const text of cells) {
          const td = document.createElement("td");
          td.textContent = String(text);
          tr.append(td);
        }
        return tr;
      }),
    );
  }

  // -- waveforms -------------------------------------------------------------------------

  function pollWaves() {
    const bedId = page.detailBed;
    if (bedId === null || page.connection === "lost") return;
    const query = new URLSearchParams();
    for (const [code, wave] of detail.waves) query.set(code, String(wave.end));
    fetch(`/api/beds/${encodeURIComponent(bedId)}/waveforms?${query}`, { cache: "no-store" })
      .then((response) => (response.ok ? response.json() : null))
      .then((body) => {
        if (bedId !== page.detailBed || !body || !Array.isArray(body.channels)) return;
        const now = performance.now() / 1000;
        for (const channel of body.channels) addWave(channel, now);
      })
      .catch(() => {});
  }

  function addWave(channel, now) {
    if (!channel || typeof channel.code !== "string" || !isNumber(channel.rate) || channel.rate <= 0) return;
    let wave = detail.waves.get(channel.code);
    const fresh = wave === undefined || wave.rate !== channel.rate;
    if (fresh) {
      wave = { rate: channel.rate, unit: channel.unit, samples: [], end: 0, endAt: now, playhead: null };
      detail.waves.set(channel.code, wave);
    }
    const samples = Array.isArray(channel.samples) ? channel.samples : [];
    wave.samples.push(...samples);
    const keep = Math.ceil(wave.rate * 12);
    if (wave.samples.length > keep) wave.samples.splice(0, wave.samples.length - keep);
    if (samples.length > 0) wave.endAt = now;
    wave.end = channel.end;
  }

  function pickEcg() {
    for (const code of ECG_LEADS) if (detail.waves.has(code)) return code;
    return null;
  }

  /** Draw each trace once per animation frame, sweeping at 25 mm/s. */
  function drawWaves(frameMs) {
    detail.frame = requestAnimationFrame(drawWaves);
    const now = frameMs / 1000;
    const dt = detail.lastFrameAt ? Math.min(0.25, now - detail.lastFrameAt) : 0;
    detail.lastFrameAt = now;
    const ecg = pickEcg();
    setText($("#ecg-lead"), ecg ? `lead ${ecg.replace("MDC_ECG_ELEC_POTL", "").replace("_", "") || "?"}` : "");
    drawTrace($("#ecg"), ecg ? detail.waves.get(ecg) : null, dt, "ecg", $("#ecg-state"));
    drawTrace($("#pleth"), detail.waves.get(PLETH) || null, dt, "pleth", $("#pleth-state"));
  }

  function drawTrace(canvas, wave, dt, kind, stateEl) {
    const width = Math.max(100, Math.floor(canvas.clientWidth));
    const height = canvas.height;
    if (canvas.width !== width) canvas.width = width;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, width, height);
    const stale = !wave || page.connection === "lost" || performance.now() / 1000 - wave.endAt > 2;
    canvas.dataset.stale = String(stale);
    setText(stateEl, !wave ? "no signal" : stale ? "NO CURRENT SIGNAL" : "");
    if (!wave || wave.samples.length < 2) return;
    // The playhead follows the newest sample WAVE_DELAY_S behind, moving at real speed.
    const newest = wave.samples.length;
    const target = newest - WAVE_DELAY_S * wave.rate;
    if (wave.playhead === null || Math.abs(wave.playhead - target) > wave.rate) wave.playhead = target;
    else wave.playhead = Math.min(newest, wave.playhead + dt * wave.rate + (target - wave.playhead) * 0.05);
    const perSample = SWEEP_PX_PER_S / wave.rate;
    const count = Math.ceil(width / perSample);
    const last = Math.floor(wave.playhead);
    const first = Math.max(0, last - count);
    const shown = wave.samples.slice(first, last);
    let scale;
    let mid;
    if (kind === "ecg") {
      const finite = shown.filter(isNumber).sort((a, b) => a - b);
      mid = finite.length ? finite[Math.floor(finite.length / 2)] : 0;
      scale = ECG_PX_PER_MV * (wave.unit === "uV" ? 0.001 : 1);
    } else {
      const finite = shown.filter(isNumber);
      const lo = Math.min(...finite);
      const hi = Math.max(...finite);
      mid = (lo + hi) / 2;
      scale = hi > lo ? (height * 0.8) / (hi - lo) : 1;
    }
    g.strokeStyle = stale ? "#6b7682" : kind === "ecg" ? "#7dfc9c" : "#5fd4ff";
    g.lineWidth = 2;
    g.beginPath();
    let pen = false;
    const x0 = width - (last - first) * perSample;
    shown.forEach((value, i) => {
      if (!isNumber(value)) {
        pen = false;
        return;
      }
      const x = x0 + i * perSample;
      const y = height / 2 - (value - mid) * scale;
      if (pen) g.lineTo(x, y);
      else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
  }

  // -- start -----------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    audioContext();
    showSoundState();
    // Any tap or key unlocks sound: a browser allows it only after a user gesture.
    document.addEventListener("pointerdown", unlockSound, true);
    document.addEventListener("keydown", unlockSound, true);
    $("#sound").addEventListener("click", unlockSound);
    $("#audio-prompt").addEventListener("click", unlockSound);
    $("#login-button").addEventListener("click", () => askLogin(""));
    $("#logout-button").addEventListener("click", logout);
    $("#login-form").addEventListener("submit", submitLogin);
    $("#login-cancel").addEventListener("click", () => finishLogin(false));
    $("#login").addEventListener("cancel", () => finishLogin(false));
    $("#limits-form").addEventListener("submit", saveLimits);
    $("#limits-cancel").addEventListener("click", () => $("#limits").close());
    $("#back").addEventListener("click", closeDetail);
    $("#pause-audio").addEventListener("click", () => {
      if (page.detailBed !== null) pauseAudio(page.detailBed);
    });
    $("#limits-button").addEventListener("click", () => {
      if (page.detailBed !== null) openLimits(page.detailBed);
    });
    window.addEventListener("hashchange", route);
    loadSession();
    route();
    connect();
    setInterval(tick, 1000);
    loadGatewayAlarms();
    setInterval(loadGatewayAlarms, GATEWAY_ALARMS_POLL_MS);
    // Timers may run late in a hidden tab: catch up the moment the page is seen again.
    document.addEventListener("visibilitychange", tick);
  });
})();
