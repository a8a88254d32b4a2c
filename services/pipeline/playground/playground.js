// The playground: builds requests for the pipeline's public HTTP API from the form, shows the
// faces and what the pipeline measured, and shows API errors as the API words them.
"use strict";

const $ = (id) => document.getElementById(id);
let config = null;

function fmt(v) { return v === null || v === undefined ? "–" : Number(v).toFixed(3); }

function conditionRow(name) {
  const row = document.createElement("div");
  row.className = "condition";
  row.dataset.name = name;
  row.innerHTML = `
    <span class="name">${name}</span>
    <select class="mode" aria-label="${name} mode">
      <option value="value">value</option><option value="range">range</option><option value="any">any</option>
    </select>
    <input class="lo" type="range" min="0" max="1" step="0.05" value="0.5" aria-label="${name}">
    <input class="hi" type="range" min="0" max="1" step="0.05" value="1" aria-label="${name} max" hidden>
    <output class="shown"></output>
    <label class="change-label" title="set this condition when editing an uploaded face"><input class="change" type="checkbox"> change</label>`;
  return row;
}

function conditionValue(row) {
  const mode = row.querySelector(".mode").value;
  const lo = Number(row.querySelector(".lo").value), hi = Number(row.querySelector(".hi").value);
  if (mode === "any") return null;
  if (mode === "range") return { min: Math.min(lo, hi), max: Math.max(lo, hi) };
  return lo;
}

function refreshRow(row) {
  const mode = row.querySelector(".mode").value;
  row.querySelector(".hi").hidden = mode !== "range";
  row.querySelector(".lo").disabled = mode === "any";
  row.querySelector(".lo").setAttribute("aria-label", mode === "range" ? `${row.dataset.name} min` : row.dataset.name);
  const v = conditionValue(row);
  row.querySelector(".shown").textContent =
    v === null ? "any" : typeof v === "number" ? v.toFixed(2) : `${v.min.toFixed(2)}–${v.max.toFixed(2)}`;
}

function rows() { return [...document.querySelectorAll("#conditions .condition")]; }

// The JSON body of POST /generate for the form as it stands (overrides: e.g. a sweep's value).
function generateBody(overrides = {}) {
  const conditions = {};
  for (const row of rows()) {
    const v = conditionValue(row);
    if (v !== null) conditions[row.dataset.name] = v;
  }
  Object.assign(conditions, overrides.conditions || {});
  return {
    conditions,
    count: overrides.count ?? Number($("count").value),
    temperature: Number($("temperature").value),
    // a uint64, sent as the digits typed, as the API writes seeds back (a JavaScript number
    // loses digits past 2^53); the API words the error for anything else
    seed: $("seed").value.trim() || "0",
    retouch: $("retouch").checked,
    oversample: Number($("oversample").value),
  };
}

function showRequest() {
  $("temperature-out").textContent = Number($("temperature").value).toFixed(2);
  $("request").textContent = "POST /generate\n" + JSON.stringify(generateBody(), null, 2);
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

// fetch → the JSON answer, or an Error carrying the API's own message
async function call(path, init) {
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (exc) {
    throw new Error(`${path}: the pipeline did not answer (${exc.message})`);
  }
  const text = await resp.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON: shown as text */ }
  if (!resp.ok) {
    let message = body && typeof body.error === "string" ? body.error : text || resp.statusText;
    if (body && Array.isArray(body.detail)) {  // a field the request model refused: which and why
      message += ": " + body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    }
    const retry = resp.headers.get("retry-after");
    throw new Error(`${resp.status}${body && body.code ? " " + body.code : ""}: ${message}` +
                    (retry ? ` (retry in ${retry} s)` : ""));
  }
  return body;
}

async function busy(work) {
  showError("");
  $("busy").hidden = false;
  for (const b of document.querySelectorAll("button")) b.disabled = true;
  try {
    await work();
  } catch (exc) {
    showError(exc.message);
  } finally {
    $("busy").hidden = true;
    for (const b of document.querySelectorAll("button")) b.disabled = false;
  }
}

function faceFigure(face, caption) {
  const fig = document.createElement("figure");
  fig.className = "face";
  fig.tabIndex = 0;
  const img = document.createElement("img");
  img.src = "data:image/png;base64," + face.png;
  img.alt = `face, seed ${face.seed}`;
  fig.append(img);
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(cap);
  const select = () => {
    for (const f of document.querySelectorAll("#grid .face.selected")) f.classList.remove("selected");
    fig.classList.add("selected");
    showDetails(face);
  };
  fig.addEventListener("click", select);
  fig.addEventListener("keydown", (e) => { if (e.key === "Enter") select(); });
  return fig;
}

function conditionTable(columns) {
  // columns: [[title, {condition: value} | null], …]
  const head = columns.map(([t]) => `<th>${t}</th>`).join("");
  const body = config.conditions.map((c) =>
    `<tr><th>${c}</th>${columns.map(([, v]) => `<td>${v ? fmt(v[c]) : "–"}</td>`).join("")}</tr>`).join("");
  return `<table><thead><tr><th></th>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function showDetails(face) {
  $("details").innerHTML = `
    <h3>seed ${face.seed}, candidate ${face.candidate}</h3>
    ${conditionTable([["requested", face.requested], ["measured", face.measured], ["error", face.error]])}
    <dl>
      <dt>condition error</dt><dd>${fmt(face.condition_error)}</dd>
      <dt>realness before</dt><dd>${fmt(face.realness_before)}</dd>
      <dt>realness after</dt><dd>${fmt(face.realness_after)}</dd>
      <dt>retouched</dt><dd>${face.retouched ? "yes" : "no"}</dd>
      <dt>P(female)</dt><dd>${fmt(face.p_female)}</dd>
      ${face.missing && face.missing.length ? `<dt>not measured</dt><dd>${face.missing.join(", ")}</dd>` : ""}
    </dl>`;
}

function showFaces(faces, captions, note) {
  const grid = $("grid");
  grid.innerHTML = "";
  faces.forEach((f, i) => grid.append(faceFigure(f, captions[i])));
  grid.dataset.count = String(faces.length);
  $("details").innerHTML = `<p class="hint">${note}</p>`;
}

async function generate() {
  const body = generateBody();
  const answer = await call("/generate", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const degraded = answer.degraded.length ? ` Not measured this time: ${answer.degraded.join(", ")}.` : "";
  showFaces(answer.faces, answer.faces.map((f) => `seed ${f.seed}`),
            `${answer.faces.length} faces from ${answer.candidates} candidates. Click one for details.${degraded}`);
}

async function sweep() {
  const name = $("sweep-condition").value;
  const steps = Math.max(2, Math.min(16, Number($("sweep-steps").value) || 8));
  const faces = [], captions = [];
  for (let i = 0; i < steps; i++) {
    const v = Math.round((i / (steps - 1)) * 1000) / 1000;
    const body = generateBody({ count: 1, conditions: { [name]: v } });
    $("request").textContent = "POST /generate\n" + JSON.stringify(body, null, 2);
    const answer = await call("/generate", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    faces.push(answer.faces[0]);
    captions.push(`${name} ${v.toFixed(2)}`);
  }
  showFaces(faces, captions, `${name} swept 0 → 1 with seed ${$("seed").value}; the other conditions as set.`);
}

async function edit() {
  const file = $("edit-file").files[0];
  if (!file) throw new Error("choose an image file to edit first");
  const form = new FormData();
  form.append("image", file, file.name);
  for (const row of rows()) {
    if (row.querySelector(".change").checked) form.append(row.dataset.name, row.querySelector(".lo").value);
  }
  form.append("retouch", $("retouch").checked ? "true" : "false");
  form.append("seed", $("seed").value);
  const answer = await call("/edit", { method: "POST", body: form });
  const original = URL.createObjectURL(file);
  $("edit-result").innerHTML = `
    <div class="pair">
      <figure class="face"><img src="${original}" alt="your face"><figcaption>yours</figcaption></figure>
      <figure class="face"><img src="data:image/png;base64,${answer.png}" alt="edited face"><figcaption>edited (${answer.changed.join(", ")})</figcaption></figure>
    </div>
    ${conditionTable([["measured before", answer.measured_before], ["requested", answer.requested],
                      ["measured after", answer.measured_after]])}
    <p>realness ${fmt(answer.realness_before)} → ${fmt(answer.realness_after)}</p>`;
}

async function start() {
  config = await call("/playground/config.json");
  const fieldset = $("conditions");
  for (const name of config.conditions) {
    const row = conditionRow(name);
    fieldset.append(row);
    const option = document.createElement("option");
    option.value = option.textContent = name;
    $("sweep-condition").append(option);
    row.addEventListener("input", () => { refreshRow(row); showRequest(); });
    refreshRow(row);
  }
  $("temperature").value = config.default_temperature;
  $("count").max = config.max_faces;
  $("oversample").max = config.max_oversample;
  $("oversample").value = config.default_oversample;
  $("controls").addEventListener("input", showRequest);
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); busy(generate); });
  $("sweep").addEventListener("click", () => busy(sweep));
  $("edit-run").addEventListener("click", () => busy(edit));
  showRequest();
  document.body.dataset.ready = "1";
}

start().catch((exc) => showError(exc.message));
