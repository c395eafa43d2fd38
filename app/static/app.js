// The Viraliency page: plain JavaScript, no build step, talks to the API with fetch() only.
"use strict";

const OVERLAY_SIDE = 640; // max_side for overlays: enough for a card, cheap to draw
const BUSY_RETRIES = 4; // GET /heatmap and /regions retry a 503 this many times

const $ = (id) => document.getElementById(id);

// ---------- API access and error messages ----------

class ApiError extends Error {
  constructor(status, code, message, accepted, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.accepted = accepted || null;
    this.retryAfter = retryAfter;
  }
}

const HEADLINES = {
  400: "The image could not be read",
  401: "This server needs an API key: enter it under Model, API key",
  403: "This API key may not use this route",
  404: "Not found, or no longer kept: score the image again",
  413: "Too large",
  415: "Not an image in an accepted format",
  422: "The request was not valid",
  429: "Too many requests",
  503: "The server is busy",
  504: "The server took too long",
};

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function toApiError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  const error = (body && body.error) || {};
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new ApiError(
    response.status,
    error.code || `http_${response.status}`,
    error.message || response.statusText || "no details",
    error.accepted,
    Number.isFinite(retry) ? retry : null,
  );
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  } catch (_) {
    throw new ApiError(0, "network", "The server cannot be reached; is it running?", null, null);
  }
  if (!response.ok) throw await toApiError(response);
  return response;
}

function describe(error) {
  if (!(error instanceof ApiError)) return { title: "Unexpected error", detail: String(error) };
  let title = HEADLINES[error.status] || (error.status ? `Server error (${error.status})` : "Offline");
  if ((error.status === 503 || error.status === 429) && error.retryAfter !== null) {
    title += `: retry in ${error.retryAfter} s`;
  }
  let detail = error.message;
  if (error.accepted) detail += ` Accepted: ${error.accepted.join(", ")}.`;
  return { title, detail, code: error.code };
}

function showError(box, error) {
  const { title, detail, code } = describe(error);
  box.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = title;
  const text = document.createElement("span");
  text.textContent = ` ${detail}`;
  box.append(strong, text);
  if (code) box.dataset.code = code;
  box.hidden = false;
}

function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
  delete box.dataset.code;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Drawing heatmaps and regions takes a bounded number of server threads (503 beyond): the page
// asks for one at a time and waits out Retry-After when the server is still busy.
let renderChain = Promise.resolve();

function render(path) {
  const job = renderChain.then(async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await api(path);
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 503 || attempt >= BUSY_RETRIES) throw error;
        await sleep(1000 * Math.max(1, error.retryAfter || 1));
      }
    }
  });
  renderChain = job.catch(() => undefined);
  return job;
}

// ---------- Model ----------

function row(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function text(value) {
  if (value === undefined || value === null || value === "") return "not recorded";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

async function loadModel() {
  const list = $("model");
  try {
    const info = await (await api("model")).json();
    const net = info.checkpoint.network || {};
    const training = info.checkpoint.training || {};
    list.replaceChildren();
    row(list, "Backbone", text(net.backbone));
    row(list, "Pooling", text(net.pooling));
    row(list, "Device", text(info.device));
    row(list, "Training data", text(training.data));
    row(list, "Licence", text(training.licence || training.license));
    showPlatforms(net.platforms || []);
  } catch (error) {
    list.replaceChildren();
    const { title, detail } = describe(error);
    row(list, "Status", `${title}. ${detail}`);
  }
}

// A checkpoint with a head per platform scores with the one the user picks (?platform=).
function showPlatforms(platforms) {
  const select = $("platform");
  for (const name of platforms) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    select.append(option);
  }
  $("platform-row").hidden = platforms.length === 0;
}

function withPlatform(path) {
  const platform = $("platform").value;
  return platform === "auto" ? path : `${path}?platform=${encodeURIComponent(platform)}`;
}

// ---------- Overlays and region boxes ----------

function overlayQuery(imageId) {
  const params = new URLSearchParams({
    image_id: imageId,
    alpha: $("alpha").value,
    colormap: $("colormap").value,
    max_side: String(OVERLAY_SIDE),
  });
  return params.toString();
}

function setImage(img, blob) {
  if (img.dataset.objectUrl) URL.revokeObjectURL(img.dataset.objectUrl);
  const url = URL.createObjectURL(blob);
  img.dataset.objectUrl = url;
  img.src = url;
}

// A view shows one scored image (by its figure): its overlay, its boxes, its own error line.
const views = new Map();

async function drawOverlay(view) {
  const query = overlayQuery(view.imageId);
  view.figure.setAttribute("aria-busy", "true");
  try {
    const blob = await (await render(`heatmap?${query}`)).blob();
    setImage(view.img, blob);
    view.img.alt = `Viraliency overlay of ${view.name}`;
    view.img.dataset.heatmap = "loaded";
    clearError(view.error);
  } catch (error) {
    showError(view.error, error);
  } finally {
    view.figure.removeAttribute("aria-busy");
  }
}

async function drawRegions(view) {
  try {
    const found = await (await render(`regions?image_id=${view.imageId}`)).json();
    view.boxes.replaceChildren();
    for (const [index, box] of found.regions.entries()) {
      const div = document.createElement("div");
      div.className = "box";
      div.style.left = `${(100 * box.x) / found.width}%`;
      div.style.top = `${(100 * box.y) / found.height}%`;
      div.style.width = `${(100 * box.width) / found.width}%`;
      div.style.height = `${(100 * box.height) / found.height}%`;
      div.title = `region ${index + 1}: peak ${box.peak.toFixed(3)}, mean ${box.mean.toFixed(3)}`;
      view.boxes.append(div);
    }
    view.boxes.dataset.count = String(found.regions.length);
  } catch (error) {
    showError(view.error, error);
  }
}

function makeView(figure, entry, name) {
  const frame = figure.querySelector(".frame");
  let boxes = frame.querySelector(".boxes");
  if (!boxes) {
    boxes = document.createElement("div");
    boxes.className = "boxes";
    boxes.setAttribute("aria-hidden", "true");
    frame.append(boxes);
  }
  let error = figure.querySelector(".error");
  if (!error) {
    error = document.createElement("div");
    error.className = "error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    figure.append(error);
  }
  const view = { figure, img: frame.querySelector("img"), boxes, error, imageId: entry.image_id, name };
  figure.style.setProperty("--aspect", `${entry.width} / ${entry.height}`);
  views.set(figure, view);
  return view;
}

function showView(view) {
  if (!view.imageId) return;
  drawOverlay(view);
  drawRegions(view);
}

function redrawAll() {
  for (const view of views.values()) if (view.figure.isConnected) drawOverlay(view);
}

function formatScore(entry) {
  const pct = entry.percentile === null ? "no calibration" : `${entry.percentile.toFixed(1)}th percentile`;
  return { score: entry.score.toFixed(3), percentile: pct };
}

// ---------- Score ----------

function scoreCard(file) {
  const item = document.createElement("li");
  item.className = "card";
  item.innerHTML = `
    <figure class="shot"><div class="frame"><img alt=""></div>
      <figcaption><span class="name"></span>
        <dl class="numbers"><dt>Score</dt><dd class="score">…</dd><dt>Percentile</dt><dd class="percentile">…</dd></dl>
      </figcaption>
    </figure>`;
  item.querySelector(".name").textContent = file.name;
  const img = item.querySelector("img");
  img.alt = `Preview of ${file.name}`;
  img.addEventListener("error", () => {
    if (!img.dataset.heatmap) img.hidden = true; // the browser cannot show it either
  });
  img.src = URL.createObjectURL(file);
  img.dataset.objectUrl = img.src;
  return item;
}

async function scoreFile(file, item) {
  const figure = item.querySelector("figure");
  const form = new FormData();
  form.append("images", file, file.name);
  try {
    const body = await (await api(withPlatform("score"), { method: "POST", body: form })).json();
    const entry = body.results[0];
    const { score, percentile } = formatScore(entry);
    item.querySelector(".score").textContent = score;
    item.querySelector(".percentile").textContent = percentile;
    item.dataset.imageId = entry.image_id;
    const view = makeView(figure, entry, file.name);
    if (entry.heatmap_url) showView(view);
  } catch (error) {
    item.classList.add("failed");
    item.querySelector(".score").textContent = "not scored";
    item.querySelector(".percentile").textContent = "-";
    const box = document.createElement("div");
    box.className = "error";
    box.setAttribute("role", "alert");
    figure.append(box);
    showError(box, error);
  }
}

async function scoreFiles(files) {
  clearError($("score-error"));
  const list = [...files];
  if (!list.length) return;
  const results = $("score-results");
  const jobs = list.map((file) => {
    const item = scoreCard(file);
    results.prepend(item);
    return () => scoreFile(file, item);
  });
  // A few uploads at a time: the server batches them; the page stays responsive.
  const running = [];
  for (const job of jobs) {
    const promise = job().finally(() => running.splice(running.indexOf(promise), 1));
    running.push(promise);
    if (running.length >= 4) await Promise.race(running);
  }
  await Promise.all(running);
}

function setUpDrop() {
  const zone = $("score-drop");
  const input = $("score-files");
  input.addEventListener("change", () => {
    scoreFiles(input.files);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    scoreFiles(event.dataTransfer.files);
  });
}

// ---------- Compare ----------

function previewSide(side, file) {
  const figure = $(side).querySelector("figure");
  const img = figure.querySelector("img");
  if (img.dataset.objectUrl) URL.revokeObjectURL(img.dataset.objectUrl);
  img.src = URL.createObjectURL(file);
  img.dataset.objectUrl = img.src;
  img.removeAttribute("data-heatmap");
  figure.querySelector(".boxes")?.replaceChildren();
  figure.querySelector("figcaption").textContent = file.name;
  figure.classList.remove("winner");
  figure.hidden = false;
}

async function compare(event) {
  event.preventDefault();
  const a = $("compare-a").files[0];
  const b = $("compare-b").files[0];
  const errorBox = $("compare-error");
  const verdict = $("compare-result");
  clearError(errorBox);
  verdict.hidden = true;
  if (!a || !b) {
    showError(errorBox, new ApiError(0, "missing_image", "Choose an image for A and for B.", null, null));
    errorBox.querySelector("strong").textContent = "Two images needed:";
    return;
  }
  const form = new FormData();
  form.append("image_a", a, a.name);
  form.append("image_b", b, b.name);
  const button = $("compare-button");
  button.disabled = true;
  try {
    const body = await (await api(withPlatform("compare"), { method: "POST", body: form })).json();
    const p = body.probability_a_more_viral;
    const winner = body.winner.toUpperCase();
    const chance = body.winner === "a" ? p : 1 - p;
    verdict.textContent = `Image ${winner} is more likely to be viral (probability ${(100 * chance).toFixed(1)}%; P(A more viral) = ${p.toFixed(3)}).`;
    verdict.dataset.winner = body.winner;
    verdict.hidden = false;
    for (const [side, entry, file] of [["side-a", body.a, a], ["side-b", body.b, b]]) {
      const figure = $(side).querySelector("figure");
      const { score, percentile } = formatScore(entry);
      figure.querySelector("figcaption").textContent = `${file.name}: score ${score}, ${percentile}`;
      figure.classList.toggle("winner", side === `side-${body.winner}`);
      showView(makeView(figure, entry, file.name));
    }
  } catch (error) {
    showError(errorBox, error);
  } finally {
    button.disabled = false;
  }
}

// ---------- Start ----------

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function start() {
  const redraw = debounce(redrawAll, 250);
  $("alpha").addEventListener("input", () => {
    $("alpha-value").textContent = Number($("alpha").value).toFixed(2);
    redraw();
  });
  $("colormap").addEventListener("change", redrawAll);
  $("show-regions").addEventListener("change", () => {
    document.body.classList.toggle("hide-regions", !$("show-regions").checked);
  });
  $("api-key").addEventListener("change", loadModel);
  setUpDrop();
  for (const [input, side] of [["compare-a", "side-a"], ["compare-b", "side-b"]]) {
    $(input).addEventListener("change", () => {
      if ($(input).files[0]) previewSide(side, $(input).files[0]);
    });
  }
  $("compare-form").addEventListener("submit", compare);
  loadModel();
}

document.addEventListener("DOMContentLoaded", start);
