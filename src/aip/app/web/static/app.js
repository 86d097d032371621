// The page of `aip run --serve`: polls the API and draws what it says.
// Plain JS, no build step, nothing from elsewhere. Every text from the
// server goes in through textContent (stream names are the user's input).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
// Tiles are pulled this many times a second at most (the server makes a
// tile no more often than that per stream, however many viewers ask).
const TILE_FPS = 5;
const POLL_MS = 1000;       // status and streams
const EVENTS_MS = 2000;     // events
const RETRY_MS = 2000;      // after a failed request
const EVENTS_SHOWN = 50;

const $ = (selector, root = document) => root.querySelector(selector);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (TOKEN) headers.set("Authorization", "Bearer " + TOKEN);
  return fetch(path, { ...options, headers, cache: "no-store" });
}

function streamPath(name) {
  return "api/streams/" + encodeURIComponent(name);
}

function number(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(value) ? "-" : Number(value).toFixed(digits);
}

function setText(element, text) {
  if (element && element.textContent !== text) element.textContent = text;
}

// ---- status: the header, the backends, the chart ------------------------------------------

function showStatus(status) {
  const state = $("#state");
  setText(state, status.observed_state || status.state);
  state.dataset.state = status.observed_state || status.state;
  setText($("#fps"), number(status.fps));
  setText($("#ordered"), String(status.frames_ordered));
  setText($("#dropped"), String(status.frames_dropped));
  setText($("#late"), String(status.frames_late));
  showBackends(status.workers || []);
  drawChart(status.fps_history || []);
}

function showBackends(workers) {
  const body = $("#backends tbody");
  const seen = new Set();
  for (const worker of workers) {
    seen.add(worker.label);
    let row = [...body.rows].find((r) => r.dataset.backend === worker.label);
    if (!row) {
      row = body.insertRow();
      row.dataset.backend = worker.label;
      for (const field of ["label", "share", "utilisation", "frames"]) {
        const cell = row.insertCell();
        cell.dataset.field = field;
        if (field === "share" || field === "utilisation") {
          const meter = document.createElement("meter");
          meter.min = 0;
          meter.max = 1;
          const text = document.createElement("span");
          cell.append(meter, text);
        }
      }
    }
    row.dataset.alive = worker.alive ? "yes" : "no";
    const label = $('[data-field="label"]', row);
    setText(label, worker.label + (worker.alive ? "" : worker.left_out ? " (left out)" : " (dead)"));
    label.title = worker.device;
    for (const field of ["share", "utilisation"]) {
      const cell = $(`[data-field="${field}"]`, row);
      const value = worker[field];
      $("meter", cell).value = value || 0;
      setText($("span", cell), value === null || value === undefined ? "-" : (100 * value).toFixed(0) + "%");
    }
    setText($('[data-field="frames"]', row), String(worker.frames));
  }
  for (const row of [...body.rows]) if (!seen.has(row.dataset.backend)) row.remove();
}

function drawChart(history) {
  const canvas = $("#chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 360;
  const height = canvas.clientHeight || 120;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const styles = getComputedStyle(canvas);
  const top = Math.max(1, ...history) * 1.15;
  const left = 34, bottom = height - 16;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = styles.getPropertyValue("--muted") || "#888";
  g.strokeStyle = styles.getPropertyValue("--grid") || "#ddd";
  g.lineWidth = 1;
  for (const fraction of [0, 0.5, 1]) {
    const y = bottom - fraction * (bottom - 4);
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(width, y);
    g.stroke();
    g.fillText((top * fraction).toFixed(0), 2, y + 4);
  }
  const span = Math.max(history.length, 60);
  g.fillText(span >= 120 ? `-${Math.round(span / 60)} min` : `-${span} s`, left, height - 3);
  g.fillText("now", width - 22, height - 3);
  canvas.dataset.points = String(history.length);
  if (!history.length) return;
  const x = (i) => left + ((span - history.length + i) / Math.max(1, span - 1)) * (width - left - 2);
  const y = (v) => bottom - (v / top) * (bottom - 4);
  g.beginPath();
  history.forEach((value, i) => (i ? g.lineTo(x(i), y(value)) : g.moveTo(x(i), y(value))));
  g.strokeStyle = styles.getPropertyValue("--accent") || "#2563eb";
  g.lineWidth = 2;
  g.stroke();
}

// ---- streams: one tile each ------------------------------------------------------------------

function tileOf(name) {
  return [...document.querySelectorAll("#tiles .tile")].find((tile) => tile.dataset.stream === name);
}

function newTile(name) {
  const tile = $("#tile-template").content.firstElementChild.cloneNode(true);
  tile.dataset.stream = name;
  tile.dataset.frame = "";
  tile.dataset.images = "0";
  setText($(".name", tile), name);
  $("img", tile).alt = name;
  $(".remove", tile).addEventListener("click", () => removeStream(name, tile));
  $("#tiles").append(tile);
  pullTile(tile);
  return tile;
}

function showStreams(streams) {
  const seen = new Set();
  for (const stream of streams) {
    seen.add(stream.name);
    const tile = tileOf(stream.name) || newTile(stream.name);
    tile.dataset.state = stream.state;
    setText($(".tile-state", tile), stream.state === "running" ? "" : stream.state);
    setText($('[data-field="fps"]', tile), number(stream.fps));
    setText($('[data-field="age_p50_ms"]', tile), number(stream.age_p50_ms, 0) + " ms");
    setText($('[data-field="age_p99_ms"]', tile), number(stream.age_p99_ms, 0) + " ms");
    for (const field of ["frames_ordered", "frames_dropped", "frames_late"]) {
      setText($(`[data-field="${field}"]`, tile), String(stream[field] ?? 0));
    }
    const bits = [];
    if (stream.source) bits.push(stream.source);
    if (stream.policy) bits.push(stream.policy);
    if (stream.fps_limit) bits.push(`≤ ${stream.fps_limit} FPS`);
    if (stream.reason) bits.push(stream.reason);
    setText($(".detail", tile), bits.join(" · "));
  }
  for (const tile of [...document.querySelectorAll("#tiles .tile")]) {
    if (!seen.has(tile.dataset.stream)) tile.remove();
  }
  $("#no-streams").hidden = streams.length > 0;
}

// Each tile pulls its own image: the latest frame, at TILE_FPS at most; a
// frame it has already is answered 304 (If-None-Match), so a still stream
// costs no bytes. A hidden page pulls nothing.
async function pullTile(tile) {
  const img = $("img", tile);
  let etag = null;
  let shown = null;
  while (tile.isConnected) {
    const started = performance.now();
    let wait = 1000 / TILE_FPS;
    if (document.hidden) {
      await sleep(500);
      continue;
    }
    try {
      const response = await api(streamPath(tile.dataset.stream) + "/snapshot.jpg",
                                 { headers: etag ? { "If-None-Match": etag } : {} });
      if (response.status === 200) {
        etag = response.headers.get("ETag");
        const url = URL.createObjectURL(await response.blob());
        img.src = url;
        if (shown) URL.revokeObjectURL(shown);
        shown = url;
        tile.dataset.frame = response.headers.get("X-Frame-Id") || "";
        tile.dataset.images = String(Number(tile.dataset.images) + 1);
      } else if (response.status !== 304) {
        wait = RETRY_MS;  // no frame yet, or gone
      }
    } catch (failure) {
      wait = RETRY_MS;
    }
    await sleep(Math.max(0, wait - (performance.now() - started)));
  }
  if (shown) URL.revokeObjectURL(shown);
}

async function removeStream(name, tile) {
  const response = await api(streamPath(name), { method: "DELETE" });
  const body = await response.json().catch(() => ({}));
  if (response.ok) {
    tile.remove();
    say(`removed ${name}`);
  } else {
    say(body.error || `could not remove ${name} (${response.status})`, true);
  }
}

// ---- events ------------------------------------------------------------------------------

function showEvents(events) {
  const list = $("#events");
  const items = events.slice(-EVENTS_SHOWN).reverse().map((event) => {
    const item = document.createElement("li");
    item.dataset.type = event.type;
    item.dataset.kind = event.kind;
    item.dataset.stream = event.stream;
    const time = document.createElement("time");
    time.textContent = new Date(event.time * 1000).toLocaleTimeString();
    const stream = document.createElement("span");
    stream.className = "stream";
    stream.textContent = event.stream;
    const text = document.createElement("span");
    text.className = "message";
    text.textContent = event.type === "stream" ? `${event.kind}: ${event.message}` : event.message;
    item.append(time, " ", stream, " ", text);
    return item;
  });
  list.replaceChildren(...items);
}

// ---- the form ------------------------------------------------------------------------------

function say(text, failed = false) {
  const message = $("#message");
  message.textContent = text;
  message.dataset.failed = failed ? "yes" : "no";
}

async function addStream(event) {
  event.preventDefault();
  const form = event.target;
  const body = { source: $("#add-source").value.trim() };
  if (/^\d+$/.test(body.source)) body.source = Number(body.source);  // a camera index
  const name = $("#add-name").value.trim();
  if (name) body.name = name;
  const fps = $("#add-fps").value;
  if (fps) body.fps = Number(fps);
  const policy = $("#add-policy").value;
  if (policy) body.policy = policy;
  try {
    const response = await api("api/streams", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.status === 202) {
      say(`opening ${answer.name}…`);
      form.reset();
      refreshStreams();
    } else {
      say(answer.error || `refused (${response.status})`, true);
    }
  } catch (failure) {
    say(`no answer from the server: ${failure}`, true);
  }
}

// ---- the loops ----------------------------------------------------------------------------

async function poll(path, show, every) {
  for (;;) {
    const started = performance.now();
    try {
      const response = await api(path);
      if (response.ok) {
        show(await response.json());
        $("#connection").hidden = true;
      } else if (response.status === 401 || response.status === 403) {
        $("#connection").hidden = false;
        setText($("#connection"), "the server wants its token: open this page as /?token=TOKEN");
      }
    } catch (failure) {
      $("#connection").hidden = false;
      setText($("#connection"), "no answer from the server");
    }
    await sleep(Math.max(0, every - (performance.now() - started)));
  }
}

async function refreshStreams() {
  const response = await api("api/streams");
  if (response.ok) showStreams((await response.json()).streams);
}

$("#add-form").addEventListener("submit", addStream);
poll("api/status", showStatus, POLL_MS);
poll("api/streams", (body) => showStreams(body.streams), POLL_MS);
poll("api/events?limit=" + EVENTS_SHOWN, (body) => showEvents(body.events), EVENTS_MS);
