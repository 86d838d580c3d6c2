// farm's pages: small, dependency-free. Data is only ever put into the page with textContent and DOM nodes,
// never as HTML; the only HTML swapped in comes from our own templates (which escape everything).
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
window.farmLoadedAt = Date.now(); // tests check this survives live updates: nothing reloads the page

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.hidden = !message;
}

function formatMs(value) {
  if (value === null || value === undefined) return "—";
  return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(1)} s`;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

function badge(status) {
  return el("span", { class: `badge s-${status.toLowerCase()}`, text: status.toLowerCase() });
}

// A form with data-confirm asks first (capturing, so before any handler below sends it).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) { event.preventDefault(); event.stopImmediatePropagation(); }
}, true);

function formatBytes(value) {
  if (value === null || value === undefined) return "—";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
  return i === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[i]}`;
}

// Buttons are plain CSRF-protected forms; with JS they post in the background and the page updates itself.
document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches("form[data-action]")) return;
  event.preventDefault();
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const response = await fetch(form.action, {
      method: "POST", body: new FormData(form), headers: { Accept: "application/json", "X-CSRF-Token": csrf },
    });
    const body = await response.json().catch(() => ({}));
    toast(response.ok ? "" : (body.error && body.error.message) || `failed (${response.status})`);
    document.dispatchEvent(new CustomEvent("farm:acted", { detail: { form, ok: response.ok } }));
  } catch (err) {
    toast(`the farm did not answer: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});

// Lists that refresh themselves: fetch the same page's fragment and swap it in when it changed.
function refreshEvery(box, seconds) {
  let last = box.innerHTML;
  const tick = async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(box.dataset.refresh, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const html = await response.text();
      if (html !== last) { box.innerHTML = html; last = html; }
    } catch (err) { /* the next tick tries again */ }
  };
  setInterval(tick, seconds * 1000);
  document.addEventListener("farm:acted", tick);
}
document.querySelectorAll("[data-refresh]").forEach((box) => refreshEvery(box, 3));

// --- New job: send the file as soon as it is picked, then offer the zip's .blend files and the scene's values.
function newJobPage() {
  const form = document.getElementById("new-job");
  const file = document.getElementById("f-file");
  const token = document.getElementById("f-upload");
  const state = document.getElementById("upload-state");
  const mainField = document.getElementById("main-field");
  const main = document.getElementById("f-main");
  const submit = document.getElementById("submit-job");
  const touched = new Set();
  let fileLine = state.textContent;
  const defaults = ["frame_start", "frame_end", "samples", "resolution_x", "resolution_y", "resolution_percentage", "engine"];
  form.addEventListener("input", (e) => touched.add(e.target.name));
  for (const name of defaults) if (form.elements[name].value) touched.add(name);

  function fieldError(name, message) {
    const box = form.querySelector(`[data-field="${name}"]`);
    box.querySelectorAll("small.error").forEach((n) => n.remove());
    box.classList.toggle("invalid", Boolean(message));
    if (message) box.append(el("small", { class: "error", text: message }));
  }

  function applyScene(scene) {
    if (!scene) return;
    for (const name of defaults) {
      const value = scene[name];
      if (value === null || value === undefined) continue;
      const input = form.elements[name];
      const hint = form.querySelector(`[data-hint="${name}"]`);
      if (hint) hint.textContent = `Scene: ${value}`;
      const allowed = input.options ? [...input.options].map((o) => o.value) : [String(value)];
      if (!touched.has(name) && allowed.includes(String(value))) {
        input.value = value;
      }
    }
    state.textContent = `${fileLine} Scene “${scene.scene}”, camera ${scene.camera || "none"}: frames ${scene.frame_start}–${scene.frame_end}, ${scene.resolution_x}×${scene.resolution_y}.`;
    showFiles(scene.dependencies);
  }

  // Every file the scene reads, found in the upload or not: a missing one would render wrong (magenta, empty).
  function showFiles(found) {
    const box = document.getElementById("files-field");
    box.hidden = !found;
    if (!found) return;
    const lacking = found.missing + found.outside;
    document.getElementById("files-summary").textContent =
      `${found.found} found, ${found.missing} missing, ${found.outside} outside the project` +
      (lacking ? ": those render without their file (or tick the box below to refuse the job)." : ".");
    document.getElementById("files-list").replaceChildren(
      ...found.files.map((f) =>
        el("li", { class: `file ${f.status}`, text: `${f.status}: ${f.kind} ${f.path}${f.project_path && f.project_path !== f.path ? ` (${f.project_path})` : ""}` })
      )
    );
  }

  async function post(url, data) {
    data.append("csrf_token", csrf);
    const response = await fetch(url, { method: "POST", body: data, headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({ error: { message: `failed (${response.status})`, field: "file" } }));
    if (!response.ok) throw body.error;
    return body;
  }

  file.addEventListener("change", async () => {
    if (!file.files.length) return;
    const picked = file.files[0];
    fieldError("file", "");
    state.textContent = `Uploading ${picked.name}…`;
    submit.disabled = true;
    try {
      const data = new FormData();
      data.append("file", picked);
      const body = await post(form.dataset.stage, data);
      token.value = body.upload.token;
      file.value = ""; // sent once: the form now refers to the staged upload
      main.replaceChildren(...body.upload.blend_files.map((name) => el("option", { value: name, text: name })));
      mainField.hidden = !body.upload.blend_files.length;
      if (body.main) main.value = body.main;
      fileLine = `${body.upload.filename} uploaded (${(body.upload.size / 1048576).toFixed(1)} MiB).`;
      state.textContent = fileLine;
      form.elements.namedItem("name").placeholder = body.upload.filename.replace(/\.(blend|zip)$/i, "");
      if (body.scene) applyScene(body.scene);
      else if (body.upload.blend_files.length) main.dispatchEvent(new Event("change")); // the first .blend's scene
    } catch (error) {
      token.value = "";
      state.textContent = "";
      fieldError(error.field || "file", error.message);
    } finally {
      submit.disabled = false;
    }
  });

  main.addEventListener("change", async () => {
    const data = new FormData();
    data.append("upload", token.value);
    data.append("main", main.value);
    fieldError("main", "");
    try {
      applyScene((await post(form.dataset.scene, data)).scene);
    } catch (error) {
      fieldError(error.field || "main", error.message);
    }
  });
}

// --- Job page: one snapshot, then updates over Server-Sent Events (polling if the stream cannot be kept open).
function jobPage() {
  const snapshot = JSON.parse(document.getElementById("snapshot").textContent);
  const job = { current: snapshot.job };
  const chunks = new Map();
  const frames = new Map();
  const links = snapshot.links;
  const eventsUrl = `/api/jobs/${encodeURIComponent(job.current.id)}/events`;
  const grid = document.getElementById("grid");
  const lastShown = Number(grid.dataset.last); // the page shows the job's first frames up to this one, no more
  const tiles = new Map();
  const chunkOf = new Map();
  const chunkRows = new Map();
  const live = document.getElementById("live-state");
  const url = (template, key, value) => template.replace(`{${key}}`, encodeURIComponent(value));

  grid.querySelectorAll(".tile").forEach((tile) => tiles.set(Number(tile.dataset.frame), tile));

  function renderJob() {
    const j = job.current;
    const r = j.render;
    const active = ["QUEUED", "RENDERING", "PACKAGING", "UPLOADING"].includes(j.status);
    document.getElementById("status").replaceChildren(badge(j.status));
    const bar = document.querySelector(".summary .bar");
    bar.max = 100;
    bar.value = r.progress;
    document.getElementById("percent").textContent = `${r.progress.toFixed(1)} %`;
    document.getElementById("frames-done").textContent = r.frames_rendered;
    document.getElementById("eta").textContent = active ? formatDuration(r.eta_seconds) : "—";
    document.getElementById("avg").textContent = formatMs(r.average_render_time);
    document.getElementById("running").textContent = r.chunks_rendering;
    document.getElementById("worker").textContent = j.worker_host || "—";
    document.getElementById("storage").textContent = formatBytes(j.storage.bytes);
    const error = document.getElementById("job-error");
    error.textContent = j.error || "";
    error.hidden = !j.error;
    document.querySelectorAll("[data-show]").forEach((n) => { n.hidden = !n.dataset.show.split(" ").includes(j.status); });
    document.getElementById("download").hidden = !j.asset;
    const movie = document.getElementById("movie");
    document.getElementById("movie-box").hidden = !j.movie;
    if (j.movie && movie.getAttribute("src") !== j.movie.url) movie.src = j.movie.url;
    document.title = `${j.name} · ${j.status.toLowerCase()} · farm`;
  }

  function renderChunk(c) {
    chunks.set(c.index, c);
    for (let f = c.frame_start; f <= Math.min(c.frame_end, lastShown); f++) {
      chunkOf.set(f, c.index);
      const tile = tiles.get(f);
      const wanted = `tile ${c.status.toLowerCase()}`;
      if (tile && !frames.has(f) && tile.className !== wanted) tile.className = wanted;
    }
    const logButton = el("button", { type: "button", class: "small", text: "Log", disabled: !c.log_url });
    logButton.addEventListener("click", () => openLog(c.index));
    const row = el("tr", { "data-chunk": c.index },
      el("td", { class: "num", text: c.index }),
      el("td", { text: c.frame_start === c.frame_end ? `${c.frame_start}` : `${c.frame_start}–${c.frame_end}` }),
      el("td", {}, badge(c.status)),
      el("td", { class: "chunk-progress" }, ...(c.status === "RENDERING"
        ? [el("progress", { class: "bar", max: 100, value: c.progress }), ` ${Math.round(c.progress)} %`]
        : [])),
      el("td", { class: "num", text: c.attempts }),
      el("td", { text: c.worker || "—" }),
      el("td", { class: "small result", text: c.error || "", title: c.error || "" }),
      el("td", {}, logButton));
    const old = chunkRows.get(c.index);
    if (old) old.replaceWith(row);
    else placeRow(row, c.index);
    chunkRows.set(c.index, row);
    if (logIndex === c.index) followLog();
  }

  // Rows stay in index order: a chunk past the first ones the page lists arrives when it starts rendering.
  function placeRow(row, index) {
    const body = document.getElementById("chunks");
    const last = body.lastElementChild;
    if (!last || Number(last.dataset.chunk) < index) return body.append(row);
    const next = [...body.children].find((r) => Number(r.dataset.chunk) > index);
    body.insertBefore(row, next);
  }

  function renderFrame(f) {
    frames.set(f.frame, f);
    const tile = tiles.get(f.frame);
    if (!tile) return;
    tile.className = "tile done";
    tile.href = url(links.frame, "frame", f.frame);
    tile.title = `frame ${f.frame}: ${formatMs(f.render_time)} on ${f.worker}`;
    if (links.thumbnail && !tile.querySelector("img")) {
      const img = el("img", { loading: "lazy", alt: `frame ${f.frame}`, src: url(links.thumbnail, "frame", f.frame) });
      img.addEventListener("error", () => img.remove());
      tile.prepend(img);
    }
  }

  const svgNS = "http://www.w3.org/2000/svg";
  function renderChart() {
    const svg = document.getElementById("chart");
    const r = job.current.render;
    const count = lastShown - r.frame_start + 1;
    const done = [...frames.values()];
    const max = Math.max(1, ...done.map((f) => f.render_time || 0));
    svg.setAttribute("viewBox", `0 0 ${Math.max(count, 40)} 100`); // a short job keeps slim bars
    const bars = done.map((f) => {
      const h = Math.max(1, (100 * (f.render_time || 0)) / max);
      const bar = document.createElementNS(svgNS, "rect");
      bar.setAttribute("x", f.frame - r.frame_start + 0.1);
      bar.setAttribute("width", 0.8);
      bar.setAttribute("y", 100 - h);
      bar.setAttribute("height", h);
      bar.dataset.frame = f.frame;
      const title = document.createElementNS(svgNS, "title");
      title.textContent = `frame ${f.frame}: ${formatMs(f.render_time)} on ${f.worker}`;
      bar.append(title);
      return bar;
    });
    svg.replaceChildren(...bars);
    document.getElementById("chart-max").textContent = done.length ? `max ${formatMs(max)}` : "no frame yet";
  }

  function apply(data, full) {
    if (full) { frames.clear(); }
    if (data.job) job.current = data.job;
    renderJob();
    (data.frames || []).forEach(renderFrame);
    (data.chunks || []).forEach(renderChunk);
    if (full || (data.frames && data.frames.length)) renderChart();
  }

  // Logs: the open chunk's log is fetched again every 3 s while that chunk renders.
  let logIndex = null;
  let logTimer = null;
  const logBox = document.getElementById("log");
  async function loadLog() {
    const c = chunks.get(logIndex);
    if (!c) return;
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 8;
    const response = await fetch(url(links.log, "index", logIndex)).catch(() => null);
    if (!response) return;
    logBox.textContent = response.ok ? await response.text() : ((await response.json().catch(() => ({}))).error || {}).message || "";
    if (atBottom) logBox.scrollTop = logBox.scrollHeight;
    document.getElementById("log-state").textContent = c.status === "RENDERING" ? "following live" : c.status.toLowerCase();
  }
  function followLog() {
    clearInterval(logTimer);
    loadLog();
    if (chunks.get(logIndex) && chunks.get(logIndex).status === "RENDERING") logTimer = setInterval(loadLog, 3000);
  }
  function openLog(index) {
    logIndex = index;
    const c = chunks.get(index);
    document.getElementById("log-panel").hidden = false;
    document.getElementById("log-title").textContent = `Chunk ${index} · frames ${c.frame_start}–${c.frame_end} · attempt ${c.attempts}`;
    logBox.textContent = "";
    followLog();
  }
  document.getElementById("log-close").addEventListener("click", () => {
    clearInterval(logTimer);
    logIndex = null;
    document.getElementById("log-panel").hidden = true;
  });

  // Full image on click.
  const viewer = document.getElementById("viewer");
  function openFrame(n) {
    const f = frames.get(n);
    if (!f || !links.thumbnail) return false; // OpenEXR: no browser shows it, so the link downloads it
    document.getElementById("viewer-img").src = url(links.frame, "frame", n);
    document.getElementById("viewer-cap").textContent = `Frame ${n} · ${formatMs(f.render_time)} · ${f.worker || ""}`;
    viewer.showModal();
    return true;
  }
  grid.addEventListener("click", (e) => {
    const tile = e.target.closest(".tile");
    if (tile && openFrame(Number(tile.dataset.frame))) e.preventDefault();
  });
  document.getElementById("chart").addEventListener("click", (e) => {
    if (e.target.dataset.frame) openFrame(Number(e.target.dataset.frame));
  });
  viewer.addEventListener("click", (e) => { if (e.target === viewer) viewer.close(); });

  // The stream, and polling when it cannot be kept open (a proxy that buffers, an old browser).
  let source = null;
  let failures = 0;
  let pollTimer = null;
  function connect() {
    if (!window.EventSource) return poll();
    source = new EventSource(eventsUrl);
    source.addEventListener("snapshot", (e) => {
      failures = 0;
      live.textContent = "live";
      live.classList.add("on");
      apply(JSON.parse(e.data), true);
    });
    source.addEventListener("update", (e) => { failures = 0; apply(JSON.parse(e.data), false); });
    source.addEventListener("end", () => {
      source.close();
      source = null;
      live.textContent = "finished";
      live.classList.remove("on");
    });
    source.addEventListener("error", () => {
      if (!source) return;
      failures += 1;
      live.textContent = "reconnecting…";
      live.classList.remove("on");
      // A refused stream (503: the server's live streams are all taken) is not retried by the browser: poll.
      if (failures >= 3 || source.readyState === EventSource.CLOSED) { source.close(); source = null; poll(); }
    });
  }
  async function pollOnce() {
    const base = `/api/jobs/${encodeURIComponent(job.current.id)}`;
    try {
      const current = (await (await fetch(base)).json()).job;
      if (current.version === job.current.version && frames.size) return current;
      const shown = `${base}/frames?limit=${lastShown - current.render.frame_start + 1}`;
      // The chunks the stream would carry: the first page, and every one rendering or failed.
      const [c, live, f] = await Promise.all(
        [fetch(`${base}/chunks`), fetch(`${base}/chunks?status=RENDERING,FAILED`), fetch(shown)]
          .map(async (p) => (await p).json()));
      const done = f.frames.filter((x) => x.status === "DONE");
      apply({ job: current, chunks: [...c.chunks, ...live.chunks], frames: done }, true);
      return current;
    } catch (err) {
      return null;
    }
  }
  function poll() {
    live.textContent = "polling every 3 s";
    clearInterval(pollTimer);
    pollTimer = setInterval(async () => {
      const current = await pollOnce();
      if (current && ["COMPLETED", "FAILED", "CANCELED"].includes(current.status)) {
        clearInterval(pollTimer);
        pollTimer = null;
        live.textContent = "finished";
      }
    }, 3000);
  }
  document.addEventListener("farm:acted", (e) => {
    if (e.detail.ok && !source && !pollTimer) connect(); // a retry brings a finished job back to life
  });

  // The server-rendered page paints first; the grid, chart and chunks are filled in right after.
  function addRemainingTiles() {
    const more = document.createDocumentFragment();
    for (let f = Math.max(...tiles.keys()) + 1; f <= lastShown; f++) {
      const tile = el("a", { class: "tile queued", "data-frame": f });
      tiles.set(f, tile);
      more.append(tile);
    }
    grid.append(more);
  }

  requestAnimationFrame(() => setTimeout(() => {
    addRemainingTiles();
    apply(snapshot, true);
    if (["COMPLETED", "FAILED", "CANCELED"].includes(job.current.status)) {
      live.textContent = "finished";
      pollOnce(); // the chunks and frames of a finished job: no stream brings them
    } else connect();
  }, 0));
}

if (document.body.dataset.page === "new-job") newJobPage();
if (document.body.dataset.page === "job") jobPage();
