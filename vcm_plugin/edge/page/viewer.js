"use strict";
const TOKEN_KEY = "vcm-edge-token";
const state = { token: null, cam: null, urls: [] };

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
  for (const b of det.boxes) {
    const [x1, y1, x2, y2] = b.xyxy;
    svg.appendChild(svgEl("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1,
                                    class: "box" }));
    const t = svgEl("text", { x: x1 + 2, y: Math.max(14, y1 - 3) });
    t.textContent = (b.name || b.cls || "") + (b.conf != null ? " " + b.conf.toFixed(2) : "");
    svg.appendChild(t);
  }
  fig.querySelector(".boxes-count").textContent = det.boxes.length + " box(es) by " +
      (det.analyst || det.model || "the worker");
}

function analyticsPoint(frame) {
  // the analytics picture: the codec's analytics point, or what is stored if less (a
  // camera that sent layer 0 first); never a request for texture
  return Math.min(frame.analytics_layers, frame.stored_layers);
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

// frames per page: ?limit=N in the page's address (1..1000), else 50
const PAGE_SIZE = (() => {
  const n = Number(new URLSearchParams(location.search).get("limit"));
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : 50;
})();

// one page of a camera's frames, newest first; ``cursor``: the next_cursor of the page before
async function loadFrames(cam, cursor) {
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
  const page = await api(list + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
  const frames = page.frames;
  for (const frame of frames) {
    const fig = frameCard(frame);
    strip.appendChild(fig);
    showImage(fig, frame, analyticsPoint(frame), 0)
      .then(() => { fig.dataset.loaded = "1"; })
      .catch((e) => status("frame " + frame.id + ": " + e.message, true));
    drawBoxes(fig, frame).catch((e) => status("detections " + frame.id + ": " + e.message, true));
  }
  const older = document.getElementById("older");
  older.hidden = !page.next_cursor;
  older.onclick = () => loadFrames(cam, page.next_cursor).catch((e) => status(e.message, true));
  status((cursor ? "" : "the newest ") + frames.length + " frame(s) of camera " + cam +
         (cls ? " with a " + cls : "") + (cursor ? ", older" : ""));
  loadClasses(cam).catch((e) => status("classes: " + e.message, true));
}

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
