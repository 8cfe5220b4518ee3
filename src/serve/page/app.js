// lumen serve's page: plain JavaScript over the HTTP API (docs/serve.md); no library, no network.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const state = { models: [], model: null, labels: [], image: null, classes: [], answer: null, job: null, data: [], mask: null };

function authHeaders() { return token ? { Authorization: "Bearer " + token } : {}; }
function withToken(url) { return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url; }

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  const body = await res.json().catch(() => ({ error: "HTTP " + res.status }));
  if (!res.ok) throw new Error(body.error || "HTTP " + res.status);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function label(cls) { return state.labels[cls] !== undefined ? state.labels[cls] : "class " + cls; }

// ---- models, layers, labels, methods ----
async function loadModels() {
  const { models } = await api("/api/models");
  state.models = models;
  $("model").replaceChildren(...models.map((m) => el("option", { value: m.id }, m.name + " (" + m.file + ")")));
  await chooseModel(models[0].id);
}

async function chooseModel(id) {
  state.model = state.models.find((m) => m.id === id);
  const [{ layers, default_layer }, { labels }] = await Promise.all([api(`/api/models/${id}/layers`), api(`/api/models/${id}/labels`)]);
  if (state.model.id !== id) return;  // another model was chosen while these were on their way
  state.labels = labels;
  const usable = layers.filter((l) => l.output === "tensor" && l.shape.length >= 3);
  $("layer").replaceChildren(...usable.map((l) => el("option", { value: l.path }, `${l.path} · ${l.type} · ${l.shape.join("×")}`)));
  if (default_layer) $("layer").value = default_layer;
  $("labels").replaceChildren(...labels.map((name, i) => el("option", { value: `${i} ${name}` })));
  $("status").textContent = `${state.model.name}: ${labels.length} classes, ${usable.length} layers`;
}

async function loadMethods() {
  const { methods } = await api("/api/methods");
  const families = { cam: "CAM family (at the layer)", pixel: "pixel gradients", perturbation: "perturbation (slower)", attention: "attention (transformers)" };
  const groups = {};
  for (const m of methods) (groups[m.family] = groups[m.family] || []).push(m);
  $("methods").replaceChildren(...Object.entries(groups).map(([family, list]) =>
    el("fieldset", {}, el("legend", {}, families[family] || family),
      ...list.map((m) => el("label", { title: m.paper }, el("input", { type: "checkbox", value: m.name, ...(m.name === "gradcam" ? { checked: "" } : {}) }), " " + m.name)))));
}

// ---- images: upload, drop, dataset ----
function setImage(image) {
  state.image = image;
  $("explain").disabled = false;
  $("intro").hidden = true;
  explain();
}

function pickFile(file) {
  if (!file) return;
  setImage({ file, name: file.name, url: URL.createObjectURL(file), boxes: [] });
}

async function loadData() {
  const { images } = await api("/api/data");
  state.data = images;
  if (!images.length) return;
  $("data-panel").hidden = false;
  $("data-count").textContent = images.length;
  renderDataList();
}

function renderDataList() {
  const filter = $("data-filter").value.toLowerCase();
  const shown = state.data.filter((d) => !filter || d.id.toLowerCase().includes(filter) || d.label_name.toLowerCase().includes(filter)).slice(0, 400);
  $("data-list").replaceChildren(...shown.map((d) => el("li", { title: d.id, "data-id": d.id, onclick: () => pickData(d) }, `${d.id} — ${d.label_name || d.label}`)));
}

function pickData(d) {
  for (const li of $("data-list").children) li.classList.toggle("chosen", li.dataset.id === d.id);
  setImage({ dataId: d.id, name: d.id, url: withToken("/api/data/image?id=" + encodeURIComponent(d.id)), boxes: d.boxes, label: d.label });
}

// ---- targets ----
function addClass(text) {
  const n = parseInt(String(text), 10);
  let cls = Number.isInteger(n) ? n : state.labels.findIndex((l) => l.toLowerCase().includes(String(text).toLowerCase()));
  // A model whose card names no labels takes any class number (a segmenter's or detector's own).
  const known = state.labels.length ? cls < state.labels.length : Number.isInteger(n);
  if (!(cls >= 0 && known)) return showError(state.labels.length ? `no class matches "${text}"` : `"${text}": this model has no labels; give a class number`);
  showError("");
  if (!state.classes.includes(cls)) state.classes.push(cls);
  document.querySelector('input[name=targetmode][value=classes]').checked = true;
  renderChips();
}

function renderChips() {
  $("chips").replaceChildren(...state.classes.map((c) => el("span", { class: "chip" }, `${c} ${label(c)}`,
    el("button", { title: "remove", onclick: () => { state.classes = state.classes.filter((x) => x !== c); renderChips(); } }, "×"))));
}

// The task's own settings are shown; classification's (top-k, counterfactual, contrast) only for it.
function taskChanged() {
  const task = $("task").value;
  for (const e of document.querySelectorAll(".for-classification")) e.hidden = task !== "classification";
  $("task-detection").hidden = task !== "detection";
  $("task-area").hidden = task === "classification";
  $("task-mask").hidden = task !== "segmentation";
  $("area-name").textContent = task === "segmentation" ? "region" : "box";
  $("task-hint").hidden = task === "classification";
  $("task-hint").textContent = task === "segmentation"
    ? "Each chosen class: why these pixels are that class (its scores summed over the pixels the model predicts as it, or over the region)."
    : "Each box the detector finds (of the chosen classes, if any); with a box and one class: why that box.";
}

// A segmentation mask: sent as the request's part "mask"; the page draws its outline (the pixels inside
// with a neighbour outside) at the mask's own size, stretched over each map as the server stretches the
// mask itself.
async function pickMask(file) {
  if (!file) return;
  const bitmap = await createImageBitmap(file).catch(() => null);
  if (!bitmap) return showError(file.name + " is not an image this browser can read");
  const canvas = el("canvas", { width: bitmap.width, height: bitmap.height });
  const g = canvas.getContext("2d");
  g.drawImage(bitmap, 0, 0);
  const px = g.getImageData(0, 0, bitmap.width, bitmap.height);
  const w = bitmap.width, h = bitmap.height, inside = new Uint8Array(w * h);
  for (let i = 0; i < w * h; ++i) inside[i] = px.data[4 * i] || px.data[4 * i + 1] || px.data[4 * i + 2] ? 1 : 0;
  const edge = g.createImageData(w, h);
  let count = 0;
  for (let y = 0; y < h; ++y)
    for (let x = 0; x < w; ++x) {
      const i = y * w + x;
      if (!inside[i]) continue;
      count += 1;
      if (x > 0 && x < w - 1 && y > 0 && y < h - 1 && inside[i - 1] && inside[i + 1] && inside[i - w] && inside[i + w]) continue;
      edge.data.set([0, 229, 255, 255], 4 * i);
    }
  if (!count) return showError(file.name + ": no pixel of the mask is nonzero, so it marks no region");
  g.putImageData(edge, 0, 0);
  state.mask = { file, name: file.name, outline: canvas.toDataURL("image/png") };
  $("mask-name").textContent = `${file.name} (${w}×${h}, ${(100 * count / (w * h)).toFixed(0)} % inside)`;
  $("mask-clear").hidden = false;
  $("area").value = "";
  $("area").disabled = true;  // one region: the server refuses a rectangle and a mask together
  showError("");
}

function clearMask() {
  state.mask = null;
  $("mask").value = "";
  $("mask-name").textContent = "";
  $("mask-clear").hidden = true;
  $("area").disabled = false;
}

// ---- explain ----
function params() {
  const methods = [...document.querySelectorAll("#methods input:checked")].map((i) => i.value);
  const p = { model: state.model.id, methods, layers: [$("layer").value], raw: true, job: "j" + Math.random().toString(36).slice(2, 12) };
  const task = $("task").value;
  if (task !== "classification") {
    p.task = task;
    if (state.classes.length) p.classes = state.classes;
    const area = $("area").value.trim();
    if (area) p[task === "segmentation" ? "region" : "box"] = area.split(/[\s,]+/).map(Number);
    if (task === "detection") {
      p.score_threshold = parseFloat($("score-threshold").value) || 0;
      p.max_boxes = Math.max(1, parseInt($("max-boxes").value, 10) || 1);
    }
    return p;
  }
  const mode = document.querySelector("input[name=targetmode]:checked").value;
  if (mode === "classes" && state.classes.length) p.classes = state.classes;
  else p.top_k = Math.max(1, parseInt($("topk").value, 10) || 1);
  if ($("counterfactual").checked) p.counterfactual = true;
  if ($("contrast").checked) p.contrast = true;
  return p;
}

async function explain() {
  if (!state.image) return;
  const p = params();
  if (!p.methods.length) return showError("choose at least one method");
  showError("");
  const form = new FormData();
  if (state.image.file) form.append("image", state.image.file, state.image.name);
  else form.append("data_id", state.image.dataId);
  form.append("params", JSON.stringify(p));
  // What the maps explain beyond the class, drawn on them: the rectangle or the mask's outline.
  const region = p.task === "segmentation" ? (state.mask ? { outline: state.mask.outline } : p.region ? { box: p.region } : null) : null;
  if (region && region.outline) form.append("mask", state.mask.file, state.mask.name);
  state.job = p.job;
  $("explain").disabled = true;
  $("cancel").hidden = false;
  $("progress").hidden = false;
  $("progress").removeAttribute("value");
  $("status").textContent = "explaining " + state.image.name + "…";
  const poll = setInterval(async () => {
    try {
      const s = await api("/api/jobs/" + p.job);
      if (s.total > 0) { $("progress").max = s.total; $("progress").value = s.done; }
      $("status").textContent = `${s.state}: ${state.image.name}` + (s.total ? ` (${s.done}/${s.total})` : "");
    } catch (e) { /* finished between two polls */ }
  }, 300);
  const started = performance.now();
  try {
    const answer = await api("/api/explain", { method: "POST", body: form });
    answer.region = region;
    state.answer = answer;
    render(answer);
    $("status").textContent = `${state.image.name}: ${answer.maps.length} map(s) in ${((performance.now() - started) / 1000).toFixed(2)} s`;
  } catch (e) {
    showError(e.message);
    $("status").textContent = "stopped";
  } finally {
    clearInterval(poll);
    state.job = null;
    $("explain").disabled = false;
    $("cancel").hidden = true;
    $("progress").hidden = true;
  }
}

async function cancel() {
  if (!state.job) return;
  try { await api("/api/jobs/" + state.job, { method: "DELETE" }); } catch (e) { /* it ended first */ }
}

// ---- the grid ----
function decodeMap(m) {
  if (!m.map) return null;
  const bytes = Uint8Array.from(atob(m.map.float32_base64), (c) => c.charCodeAt(0));
  return { h: m.map.shape[0], w: m.map.shape[1], values: new Float32Array(bytes.buffer) };
}

function npyBlob(map) {
  // NumPy .npy 1.0: magic, header length, a dict padded with spaces to a multiple of 64, the data.
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${map.h}, ${map.w}), }`;
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const head = new Uint8Array(10 + header.length);
  head.set([0x93, 78, 85, 77, 80, 89, 1, 0, header.length & 255, header.length >> 8]);
  for (let i = 0; i < header.length; ++i) head[10 + i] = header.charCodeAt(i);
  return new Blob([head, map.values.buffer], { type: "application/octet-stream" });
}

function pngBlob(base64) { return new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], { type: "image/png" }); }

function svgBoxes(width, height, m, region) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const rect = (b, cls, colour) => {
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", b[0]); r.setAttribute("y", b[1]); r.setAttribute("width", b[2] - b[0]); r.setAttribute("height", b[3] - b[1]);
    r.setAttribute("fill", "none"); r.setAttribute("stroke", colour); r.setAttribute("stroke-width", Math.max(2, width / 150));
    r.setAttribute("class", cls);
    svg.append(r);
    return r;
  };
  for (const b of state.image.boxes || []) rect(b, "truth", "#00e000");
  if (region && region.box) rect(region.box, "region", "#00e5ff").setAttribute("stroke-dasharray", `${Math.max(6, width / 60)} ${Math.max(4, width / 90)}`);
  if (m.box) rect(m.box, "paper", "#fff200");
  // A detector's box explained, labelled as the detector scored it.
  for (const d of m.detections || []) {
    rect(d.box, "detection", "#ff40ff");
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", d.box[0] + 2); t.setAttribute("y", Math.max(d.box[1] - 4, 12 * Math.max(1, width / 400)));
    t.setAttribute("font-size", 12 * Math.max(1, width / 400)); t.setAttribute("class", "detection");
    t.textContent = `${d.label || "class " + d.class} ${d.score.toFixed(2)}`;
    svg.append(t);
  }
  return svg;
}

function stack(answer, m, map) {
  const s = el("div", { class: "stack" },
    el("img", { class: "base", src: state.image.url, alt: state.image.name }),
    el("img", { class: "heat", src: "data:image/png;base64," + m.heat_png, alt: `${m.method} map` }));
  s.querySelector(".heat").style.opacity = $("opacity").value;
  if (answer.region && answer.region.outline) s.append(el("img", { class: "region", src: answer.region.outline, alt: "the mask's outline" }));
  s.append(svgBoxes(answer.width, answer.height, m, answer.region));
  s.addEventListener("mousemove", (ev) => {
    if (!map) return;
    const r = s.getBoundingClientRect();
    const x = Math.min(map.w - 1, Math.floor(((ev.clientX - r.left) / r.width) * map.w));
    const y = Math.min(map.h - 1, Math.floor(((ev.clientY - r.top) / r.height) * map.h));
    const tip = $("tip");
    tip.hidden = false;
    tip.textContent = `(${x}, ${y}): ${map.values[y * map.w + x].toFixed(3)}`;
    tip.style.left = ev.clientX + 12 + "px";
    tip.style.top = ev.clientY + 12 + "px";
  });
  s.addEventListener("mouseleave", () => { $("tip").hidden = true; });
  return s;
}

function cell(answer, m) {
  const map = decodeMap(m);
  const name = `${state.image.name}.${m.method}.${m.layer}.${m.class >= 0 ? m.class : m.target}`.replace(/[^A-Za-z0-9._-]/g, "_");
  const downloads = el("div", { class: "downloads" },
    el("a", { href: URL.createObjectURL(pngBlob(m.overlay_png)), download: name + ".overlay.png" }, "PNG"));
  if (map) downloads.append(el("a", { href: URL.createObjectURL(npyBlob(map)), download: name + ".npy" }, ".npy"));
  const s = stack(answer, m, map);
  s.addEventListener("click", () => openLarge(answer, m, map));
  const caption = `${m.method}${m.contrastive ? " (contrast)" : ""} · ${m.layer} · peak ${m.stats.peak[0]},${m.stats.peak[1]}` + (m.box ? "" : " · no box");
  return el("figure", { class: "cell" + (m.empty ? " empty" : ""), "data-method": m.method, "data-target": m.target, "data-layer": m.layer }, s, el("figcaption", {}, caption), downloads);
}

// A row's name: the class, or the target (a box, a segmentation class) with what it found.
function rowName(m) {
  if (m.class >= 0) return `${m.class} ${m.label}`;
  const d = (m.detections || [])[0];
  return d ? `${m.target}: ${d.label || "class " + d.class} ${d.score.toFixed(2)}` : m.target;
}

function render(answer) {
  $("predictions").hidden = !(answer.predictions || []).length;
  $("top5").replaceChildren(...(answer.predictions || []).map((p) =>
    el("li", { onclick: () => addClass(p.class), title: "explain this class" }, `${p.label || "class " + p.class} (${p.class}): ${(100 * p.probability).toFixed(1)} %`)));
  $("legend").hidden = false;
  $("legend-detection").hidden = !answer.maps.some((m) => (m.detections || []).length);
  $("legend-region").hidden = !answer.region;
  const signed = answer.maps.some((m) => m.signed);
  $("legend").querySelector("i").className = signed ? "bar-diverging" : "bar-jet";
  $("legend").querySelector(".bar span").textContent = signed ? "− (against)" : "0 (least)";
  $("legend").querySelector(".bar span:last-child").textContent = signed ? "+ (for the class)" : "1 (most evidence, the map's maximum)";
  if (!answer.maps.length) {
    $("grid").replaceChildren(el("p", { class: "hint" }, $("task").value === "detection"
      ? "The detector found no box scoring at least the threshold (of the chosen classes): lower the score, or choose other classes."
      : "Nothing to explain for these settings."));
    return;
  }
  // Rows: targets; columns: method (and layer, and contrast) in the order the answer gives them.
  const rows = [], columns = [];
  const col = (m) => `${m.method}${m.contrastive ? " (contrast)" : ""} @ ${m.layer}`;
  const rowOf = (m) => (m.class >= 0 ? `${m.class}` : m.target) + (m.counterfactual ? " (against)" : "");
  for (const m of answer.maps) {
    if (!rows.includes(rowOf(m))) rows.push(rowOf(m));
    if (!columns.includes(col(m))) columns.push(col(m));
  }
  // Cells share the view's width, between 200 and 480 pixels each.
  const cellWidth = Math.max(200, Math.min(480, Math.floor(($("view").clientWidth - 200) / columns.length) - 16));
  const table = el("table", { class: "grid" }, el("tr", {}, el("th"), ...columns.map((c) => el("th", {}, c))));
  for (const r of rows) {
    const first = answer.maps.find((m) => rowOf(m) === r);
    const where = answer.region ? (answer.region.outline ? " · in the mask" : " · in the region") : "";
    const tr = el("tr", {}, el("th", { class: "row" }, rowName(first) + where,
      el("br"), el("small", {}, `score ${first.target_value.toFixed(3)}` + (first.counterfactual ? ", against" : ""))));
    for (const c of columns) {
      const m = answer.maps.find((x) => rowOf(x) === r && col(x) === c);
      const figure = m ? cell(answer, m) : "";
      if (m) figure.style.width = cellWidth + "px";
      tr.append(el("td", {}, figure));
    }
    table.append(tr);
  }
  const json = new Blob([JSON.stringify(answer, null, 1)], { type: "application/json" });
  $("grid").replaceChildren(table, el("p", {}, el("a", { href: URL.createObjectURL(json), download: "run.json" }, "Download run.json"),
    ` · ${answer.seconds.toFixed(3)} s on the server, batched with ${answer.batched_with - 1} other image(s)`));
}

function openLarge(answer, m, map) {
  const s = stack(answer, m, map);
  const what = `${m.method}${m.contrastive ? " (contrast)" : ""} at ${m.layer} for ${rowName(m)}` +
    `${m.counterfactual ? " (evidence against)" : ""}: score ${m.target_value.toFixed(3)}; hover the map to read its values.`;
  $("large-body").replaceChildren(el("p", { class: "large-title" }, what), s,
    el("p", { class: "hint" }, "The same map as lumen writes it, with its caption and colour bar:"),
    el("img", { src: "data:image/png;base64," + m.overlay_png, alt: "overlay with caption", class: "captioned" }));
  $("large").hidden = false;
}

// ---- report ----
function number(v) {
  if (typeof v !== "number") return "";
  return Number.isInteger(v) ? String(v) : v.toFixed(3);
}

async function loadReport() {
  let report;
  try { report = await api("/api/report"); } catch (e) { return; }
  $("report").hidden = false;
  $("report-link").href = withToken(report.index);
  const summary = report.summary || {};
  const methods = Object.keys(summary);
  const metrics = [...new Set(methods.flatMap((m) => Object.keys(summary[m]).filter((k) => typeof summary[m][k] === "number")))];
  $("report-table").replaceChildren(el("tr", {}, el("th", {}, "method"), ...metrics.map((k) => el("th", {}, k))),
    ...methods.map((m) => el("tr", {}, el("td", {}, m), ...metrics.map((k) => el("td", {}, number(summary[m][k]))))));
  $("report-examples").replaceChildren(...report.examples.map((x) => el("img", {
    src: withToken(x.file), alt: x.method, title: `${x.method}: ${x.data_id || "not in --data"} (click to explain live)`,
    onclick: () => {
      const d = state.data.find((d) => d.id === x.data_id);
      if (!d) return showError("this image is not in --data");
      for (const i of document.querySelectorAll("#methods input")) i.checked = i.value === x.method;
      pickData(d);
    } })));
}

// ---- wiring ----
function wire() {
  $("model").addEventListener("change", (e) => chooseModel(e.target.value).catch((x) => showError(x.message)));
  $("file").addEventListener("change", (e) => pickFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); pickFile(e.dataTransfer.files[0]); });
  $("data-filter").addEventListener("input", renderDataList);
  $("class-search").addEventListener("change", (e) => { if (e.target.value) { addClass(e.target.value); e.target.value = ""; } });
  $("explain").addEventListener("click", explain);
  $("task").addEventListener("change", taskChanged);
  $("mask").addEventListener("change", (e) => pickMask(e.target.files[0]));
  $("mask-clear").addEventListener("click", clearMask);
  $("layer").addEventListener("change", explain);
  $("cancel").addEventListener("click", cancel);
  $("opacity").addEventListener("input", (e) => { for (const h of document.querySelectorAll("img.heat")) h.style.opacity = e.target.value; });
  $("large-close").addEventListener("click", () => { $("large").hidden = true; });
  $("large").addEventListener("click", (e) => { if (e.target === $("large")) $("large").hidden = true; });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("large").hidden = true; });
}

wire();
Promise.all([loadModels(), loadMethods()]).then(loadData).then(loadReport).catch((e) => { showError(e.message); $("status").textContent = "error"; });
