"use strict";
const TOKEN_KEY = "vcm-edge-token";
const state = { token: null, cam: null, urls: [], until: null, liveTimer: null };

function takeToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {  // given once in the fragment (never sent to a server); keep it for this tab only
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
}

function status(text, error = false) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

const RETRIES = 6;  // a busy decoder (503) is asked again, backing off, this many times

async function api(path, wanted = "json") {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  let r;
  for (let attempt = 0; ; attempt++) {
    r = await fetch(path, { headers, credentials: "omit" });
    if (r.status !== 503 || attempt === RETRIES) break;
    // the server's Retry-After, doubled per attempt, capped at 20 s, with jitter so a page
    // of pictures does not come back at once
    const after = Math.min(Number(r.headers.get("Retry-After")) || 1, 20);
    const wait = Math.min(after * 2 ** attempt, 20) * (0.75 + Math.random() / 2);
    await new Promise((done) => setTimeout(done, wait * 1000));
  }
  if (!r.ok) {
    let message = r.status + " " + r.statusText;
    try { message = (await r.json()).error || message; } catch (e) { /* not JSON */ }
    const err = new Error(message);
    err.status = r.status;
    throw err;
  }
  return wanted === "blob" ? r.blob() : r.json();
}

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function when(ts) {  // the viewer's local time, as a camera user reads a clock
  return new Date(ts / 1000).toLocaleString(undefined, {
    dateStyle: "medium", timeStyle: "medium",
  });
}

async function showImage(fig, frame, layers, wait) {
  const q = "layers=" + layers + (wait ? "&wait=" + wait : "");
  const blob = await api("/frames/" + encodeURIComponent(frame.id) + "/image?" + q, "blob");
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  const img = fig.querySelector("img");
  await new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("the image did not load"));
    img.src = url;
  });
  img.dataset.layers = String(layers);
}

async function drawBoxes(fig, frame) {
  let det;
  try {
    det = await api("/frames/" + encodeURIComponent(frame.id) + "/detections");
  } catch (e) {
    if (e.status !== 404) throw e;
    fig.querySelector(".boxes-count").textContent = "analytics pending";
    return;
  }
  // boxes are in pixels of the image the worker analysed (its width/height), drawn to scale
  const w = det.width || frame.width, h = det.height || frame.height;
  const svg = fig.querySelector("svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  // labels in picture units scaled to the card: about 13 px on screen at any picture size
  const shown = fig.querySelector(".pic").clientWidth || 320;
  const size = 13 * w / shown;
  for (const b of det.boxes) {
    const [x1, y1, x2, y2] = b.xyxy;
    svg.appendChild(svgEl("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1,
                                    class: "box" }));
    const t = svgEl("text", { x: x1 + size / 6, y: Math.max(size, y1 - size / 4),
                              "font-size": size, "stroke-width": size / 5 });
    t.textContent = (b.name || b.cls || "") + (b.conf != null ? " " + b.conf.toFixed(2) : "");
    svg.appendChild(t);
  }
  fig.querySelector(".boxes-count").textContent = det.boxes.length + " box(es) by " +
      (det.analyst || det.model || "the worker");
}

function analyticsPoint(frame) {
  // the analytics picture: the codec's analytics point, or what is stored if less (a
  // camera that sent layer 0 first); never a request for texture
  return Math.min(frame.analytics_point, frame.stored_layers);
}

function kilobytes(n) {
  return (n / 1000).toFixed(n < 10000 ? 1 : 0) + " kB";
}

function frameCard(frame) {
  const fig = el("figure", { class: "frame", "data-id": frame.id, "data-quality": "analytics" });
  const pic = el("div", { class: "pic" });
  pic.appendChild(el("img", { alt: "frame " + frame.id }));
  pic.appendChild(svgEl("svg", { preserveAspectRatio: "none", "aria-hidden": "true" }));
  fig.appendChild(pic);
  const cap = el("figcaption");
  cap.appendChild(el("span", {}, when(frame.ts)));
  const a = analyticsPoint(frame);
  // words a camera user knows: the picture the detector saw, and what it cost to send
  cap.appendChild(el("span", { class: "meta quality", title: "operating point " + a + " of " +
      frame.num_layers }, "detection picture · " + kilobytes(frame.point_bytes[a - 1])));
  cap.appendChild(el("span", { class: "meta boxes-count" }, ""));
  const full = el("button", { class: "full", type: "button" }, "Full quality");
  full.addEventListener("click", () => fullQuality(fig, frame, full));
  cap.appendChild(full);
  fig.appendChild(cap);
  return fig;
}

async function fullQuality(fig, frame, button) {
  button.disabled = true;
  fig.dataset.quality = "loading";
  status("fetching full quality of " + frame.id + " ...");
  try {  // asks the camera for the texture if the server does not hold it yet
    await showImage(fig, frame, frame.num_layers, 20);
    fig.dataset.quality = "full";
    fig.querySelector(".quality").textContent = "full quality · " +
        kilobytes(frame.point_bytes[frame.num_layers - 1]);
    button.remove();
    status("full quality: " + frame.id);
  } catch (e) {
    fig.dataset.quality = "analytics";
    button.disabled = false;
    status(e.status === 409 ? "the camera has not sent the texture yet; try again"
                            : "full quality failed: " + e.message, true);
  }
}

// a frame's card in the strip (at the top: ``first``), its detection picture and boxes
function showFrame(strip, frame, first) {
  const fig = frameCard(frame);
  if (first) strip.prepend(fig);
  else strip.appendChild(fig);
  showImage(fig, frame, analyticsPoint(frame), 0)
    .then(() => { fig.dataset.loaded = "1"; })
    .catch((e) => status("frame " + frame.id + ": " + e.message, true));
  drawBoxes(fig, frame).catch((e) => status("detections " + frame.id + ": " + e.message, true));
}

// frames per page: ?limit=N in the page's address (1..1000), else 50
const PAGE_SIZE = (() => {
  const n = Number(new URLSearchParams(location.search).get("limit"));
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : 50;
})();

// one page of a camera's frames, newest first; ``cursor``: the next_cursor of the page before
async function loadFrames(cam, cursor) {
  if (state.cam !== cam) state.until = null;
  state.cam = cam;
  for (const b of document.querySelectorAll("#cameras button"))
    b.setAttribute("aria-pressed", String(b.dataset.cam === cam));
  for (const u of state.urls.splice(0)) URL.revokeObjectURL(u);
  const strip = document.getElementById("strip");
  strip.replaceChildren();
  const cls = document.getElementById("class").value;
  const list = cls
    ? "/frames?limit=" + PAGE_SIZE + "&cam=" + encodeURIComponent(cam) + "&class=" +
      encodeURIComponent(cls)
    : "/cameras/" + encodeURIComponent(cam) + "/frames?limit=" + PAGE_SIZE;
  const until = state.until ? "&until=" + state.until : "";
  const page = await api(list + until +
                         (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
  const frames = page.frames;
  for (const frame of frames) {
    showFrame(strip, frame, false);
  }
  const older = document.getElementById("older");
  older.hidden = !page.next_cursor;
  older.onclick = () => loadFrames(cam, page.next_cursor).catch((e) => status(e.message, true));
  document.getElementById("frames-title").textContent = "Frames" +
      (state.until ? " up to " + when(state.until) : ", newest first");
  status((cursor || state.until ? "" : "the newest ") + frames.length + " frame(s) of camera " +
         cam + (cls ? " with a " + cls : "") + (cursor ? ", older" : ""));
  loadClasses(cam).catch((e) => status("classes: " + e.message, true));
  if (!cursor) {
    loadTimeline(cam).catch((e) => status("timeline: " + e.message, true));
    loadEvents(cam).catch((e) => status("events: " + e.message, true));
  }
}

const HOUR_US = 3600e6;

// the camera's last 24 hours: boxes per hour (GET /stats/classes) as bars, events as marks
async function loadTimeline(cam) {
  const end = Math.ceil(Date.now() * 1000 / HOUR_US) * HOUR_US, start = end - 24 * HOUR_US;
  const [{ counts }, { events }] = await Promise.all([
    api("/stats/classes?cam=" + encodeURIComponent(cam) + "&since=" + start),
    api("/events?cam=" + encodeURIComponent(cam) + "&since=" + start + "&limit=200"),
  ]);
  const boxes = new Map();
  for (const c of counts) boxes.set(c.hour, (boxes.get(c.hour) || 0) + c.boxes);
  const svg = document.getElementById("timeline");
  svg.replaceChildren();
  svg.setAttribute("viewBox", "0 0 1000 56");
  svg.setAttribute("preserveAspectRatio", "none");
  const most = Math.max(1, ...boxes.values());
  const x = (us) => (us - start) / (end - start) * 1000;
  for (const [hour, n] of boxes) {
    const h = 6 + 34 * n / most;
    const bar = svgEl("rect", { class: "hour", x: x(hour) + 1, y: 42 - h, width: 1000 / 24 - 2,
                                height: h, "data-hour": hour });
    const tip = svgEl("title", {});
    tip.textContent = when(hour) + ": " + n + " box(es)";
    bar.appendChild(tip);
    bar.addEventListener("click", () => {
      state.until = hour + HOUR_US - 1;  // that hour's frames and what came before
      loadFrames(cam).catch((e) => status(e.message, true));
    });
    svg.appendChild(bar);
  }
  for (const ev of events) {
    svg.appendChild(svgEl("rect", { class: "event", x: x(ev.start), y: 44,
                                    width: Math.max(2, x(ev.end) - x(ev.start)), height: 5 }));
  }
  for (let i = 0; i <= 24; i += 6) {
    const t = svgEl("text", { x: Math.min(x(start + i * HOUR_US), 960), y: 55 });
    t.textContent = new Date((start + i * HOUR_US) / 1000).toLocaleTimeString(undefined,
        { hour: "2-digit", minute: "2-digit" });
    svg.appendChild(t);
  }
  svg.dataset.loaded = "1";
}

function seconds(us) {
  return (us / 1e6).toFixed(us < 10e6 ? 1 : 0) + " s";
}

// the camera's events, newest first: the best frame at full quality, what and when
async function loadEvents(cam) {
  const { events } = await api("/events?limit=20&cam=" + encodeURIComponent(cam));
  const box = document.getElementById("events");
  box.replaceChildren();
  if (!events.length) box.appendChild(el("span", { class: "meta" }, "no events"));
  for (const ev of events) {
    const fig = el("figure", { class: "event", "data-id": ev.id });
    fig.appendChild(el("img", { alt: "best frame of event " + ev.id }));
    const cap = el("figcaption");
    cap.appendChild(el("span", { class: "what" },
        ev["class"] + " · " + ev.rule + " · " + (ev.score * 100).toFixed(0) + " %"));
    cap.appendChild(el("span", { class: "meta" }, when(ev.start) + " · " +
        (ev.ended ? seconds(ev.end - ev.start) : "going on")));
    const clip = el("button", { type: "button" }, "Download clip");
    clip.addEventListener("click", () => downloadClip(ev, clip));
    cap.appendChild(clip);
    fig.appendChild(cap);
    box.appendChild(fig);
    // full quality of the best frame: the server asks the camera and waits for it
    api("/events/" + encodeURIComponent(ev.id) + "/snapshot?wait=20", "blob").then((blob) => {
      const url = URL.createObjectURL(blob);
      state.urls.push(url);
      const img = fig.querySelector("img");
      img.onload = () => { fig.dataset.loaded = "1"; };
      img.src = url;
    }).catch((e) => status("snapshot of " + ev.id + ": " + e.message, true));
  }
  box.dataset.loaded = "1";
}

async function downloadClip(ev, button) {
  button.disabled = true;
  status("making the clip of " + ev.id + " ...");
  try {
    const blob = await api("/events/" + encodeURIComponent(ev.id) + "/clip", "blob");
    const a = el("a", { href: URL.createObjectURL(blob), download: ev.id + ".mp4" });
    state.urls.push(a.href);
    document.body.appendChild(a);
    a.click();
    a.remove();
    status("clip of " + ev.id + ": " + kilobytes(blob.size));
  } catch (e) {
    status("clip of " + ev.id + ": " + e.message, true);
  } finally {
    button.disabled = false;
  }
}

// live: every few seconds, the newest frames of the camera join the top of the strip
async function livePoll() {
  if (!state.cam || state.until || document.getElementById("class").value) return;
  const page = await api("/cameras/" + encodeURIComponent(state.cam) + "/frames?limit=10");
  const strip = document.getElementById("strip");
  const shown = new Set([...strip.children].map((f) => f.dataset.id));
  const fresh = page.frames.filter((f) => !shown.has(f.id)).reverse();  // oldest first
  for (const frame of fresh) {
    showFrame(strip, frame, true);
  }
  while (strip.children.length > PAGE_SIZE) strip.lastElementChild.remove();
  if (fresh.length) {
    status("live: " + fresh.length + " new frame(s) of camera " + state.cam);
    loadEvents(state.cam).catch((e) => status("events: " + e.message, true));
  }
}

document.getElementById("live").addEventListener("change", (ev) => {
  clearInterval(state.liveTimer);
  state.liveTimer = null;
  if (ev.target.checked) {
    state.until = null;
    if (state.cam) loadFrames(state.cam).catch((e) => status(e.message, true));
    state.liveTimer = setInterval(() => livePoll().catch((e) => status(e.message, true)), 3000);
  }
});

async function loadClasses(cam) {
  // the classes the index counted for this camera (GET /stats/classes), for the filter
  const { counts } = await api("/stats/classes?cam=" + encodeURIComponent(cam));
  const select = document.getElementById("class");
  const keep = select.value;
  const names = [...new Set(counts.map((c) => c["class"]))].sort();
  if (keep && !names.includes(keep)) names.unshift(keep);
  select.replaceChildren(el("option", { value: "" }, "all"),
                         ...names.map((n) => el("option", { value: n }, n)));
  select.value = keep;
  select.dataset.loaded = "1";
}

document.getElementById("class").addEventListener("change", () => {
  if (state.cam) loadFrames(state.cam).catch((e) => status(e.message, true));
});

async function loadCameras() {
  const nav = document.getElementById("cameras");
  nav.replaceChildren();
  let cameras;
  try {
    ({ cameras } = await api("/cameras"));
  } catch (e) {
    status(e.status === 401 ? "enter a viewer token" : e.message, true);
    return;
  }
  for (const c of cameras) {
    const b = el("button", { type: "button", "data-cam": c.id, "aria-pressed": "false" },
                 c.id + " (" + c.frames + ")");
    b.addEventListener("click", () => loadFrames(c.id).catch((e) => status(e.message, true)));
    nav.appendChild(b);
  }
  const wanted = new URLSearchParams(location.search).get("cam");
  const first = cameras.find((c) => c.id === wanted) || cameras[0];
  if (first) await loadFrames(first.id);
  else status("no frames yet");
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = document.getElementById("token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  document.getElementById("token").value = "";
  state.token = sessionStorage.getItem(TOKEN_KEY);
  loadCameras();
});
takeToken();
loadCameras();
