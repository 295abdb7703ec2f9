/*
 * Nurse page: shows the beds the gateway pushes over /api/stream (Server-Sent Events).
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
 *   "lost": a banner says so and every value is marked stale until data arrives again.
 * - Values the device marks invalid or unavailable are never shown in the live colours.
 * - Data reaches the DOM through textContent and data attributes only, never as markup.
 */
"use strict";

(() => {
  const SPO2 = "MDC_PULS_OXIM_SAT_O2";
  const PULSE_RATE = "MDC_PULS_OXIM_PULS_RATE";
  const MAIN_CODES = new Set([SPO2, PULSE_RATE]);

  /** Short names for the smaller values listed under the two large ones. */
  const NAMES = {
    MDC_PULS_OXIM_PERF_REL: "Perfusion index",
    MDC_ECG_HEART_RATE: "Heart rate",
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

  const page = {
    beds: [],
    receivedAt: 0,
    lastMessageAt: 0,
    connection: "connecting",
    staleAfter: DEFAULT_STALE_AFTER,
    heartbeat: DEFAULT_HEARTBEAT,
    connectStartedAt: 0,
    source: null,
    reconnectTimer: null,
    /** performance.now() at which the next shown-as-current value turns stale. */
    nextFlipAt: Infinity,
    deadlineTimer: null,
  };

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

  /** Milliseconds of silence after which the stream is taken for lost. */
  function watchdogMs() {
    return (Math.max(2 * page.heartbeat, page.staleAfter) + WATCHDOG_MARGIN) * 1000;
  }

  // -- connection ------------------------------------------------------------------------

  function connect() {
    if (page.source !== null) page.source.close();
    clearTimeout(page.reconnectTimer);
    page.connectStartedAt = performance.now();
    const source = new EventSource("/api/stream");
    page.source = source;
    source.addEventListener("beds", (event) => {
      if (source === page.source) onBeds(event.data);
    });
    source.addEventListener("hello", (event) => {
      if (source === page.source) onHello(event.data);
    });
    source.addEventListener("error", () => {
      if (source !== page.source) return;
      setConnection("lost");
      // The browser retries by itself unless it closed the stream for good (bad response).
      if (source.readyState === EventSource.CLOSED) {
        page.reconnectTimer = setTimeout(connect, RECONNECT_MS);
      }
    });
  }

  function onHello(data) {
    let hello;
    try {
      hello = JSON.parse(data);
    } catch (err) {
      console.error("bad hello event", err);
      return;
    }
    if (!hello || typeof hello !== "object") return;
    const positive = (x) => typeof x === "number" && Number.isFinite(x) && x > 0;
    if (positive(hello.heartbeat_interval)) page.heartbeat = hello.heartbeat_interval;
    if (positive(hello.stale_after)) page.staleAfter = hello.stale_after;
    render();
  }

  function onBeds(data) {
    let beds;
    try {
      beds = JSON.parse(data);
    } catch (err) {
      console.error("bad beds event", err);
      return;
    }
    if (!Array.isArray(beds)) return;
    page.beds = beds;
    page.receivedAt = page.lastMessageAt = performance.now();
    if (page.connection !== "live") {
      setConnection("live");
      loadGatewayName();
    }
    render();
  }

  function setConnection(state) {
    if (page.connection === state) return;
    page.connection = state;
    document.body.dataset.connection = state;
    const lost = state === "lost";
    $("#lost-banner").hidden = !lost;
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

  // -- rendering -------------------------------------------------------------------------

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
    return {
      root,
      label: root.querySelector(".bed-label"),
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
    let position = 0;
    for (const bed of page.beds) {
      if (!bed || typeof bed.id !== "string") continue;
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
    scheduleDeadline();
  }

  function renderTile(tile, bed, lost, elapsed) {
    setText(tile.label, String(bed.label ?? bed.id));
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
    const hasValue = !!vital && typeof vital.value === "number" && Number.isFinite(vital.value);
    const sentAge = vital ? vital.age : undefined;
    const ageKnown = typeof sentAge === "number" && Number.isFinite(sentAge);
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

  function renderOthers(tile, vitals, lost, elapsed) {
    const codes = Object.keys(vitals).filter((code) => !MAIN_CODES.has(code));
    for (const code of codes) {
      let row = tile.otherRows.get(code);
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
        tile.others.append(wrap);
        row = { section: wrap, value, unit, badge, flags };
        tile.otherRows.set(code, row);
      }
      row.section.classList.toggle("is-stale", renderValue(row, code, vitals[code], lost, elapsed));
    }
    for (const [code, row] of tile.otherRows) {
      if (!(code in vitals)) {
        row.section.remove();
        tile.otherRows.delete(code);
      }
    }
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

  document.addEventListener("DOMContentLoaded", () => {
    connect();
    setInterval(tick, 1000);
    // Timers may run late in a hidden tab: catch up the moment the page is seen again.
    document.addEventListener("visibilitychange", tick);
  });
})();
