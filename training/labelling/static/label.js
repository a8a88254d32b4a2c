// The labelling page: one image at a time, five sliders, keyboard first; every confirmation is
// saved by the server at once (POST /api/label/<index>).
"use strict";

const $ = (id) => document.getElementById(id);
let sheet = null;      // GET /api/sheet
let current = 0;       // index of the image shown
let active = 0;        // index of the condition the arrow keys move
const drafts = {};     // index → {condition: value} moved but not yet confirmed

function showError(text) { $("error").textContent = text; $("error").hidden = !text; }

async function call(path, init) {
  const resp = await fetch(path, init);
  const text = await resp.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* shown as text */ }
  if (!resp.ok) throw new Error(`${resp.status}: ${body && body.error ? body.error : text}`);
  return body;
}

const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 100) / 100;  // the sliders' 0.01 steps

// what the sliders show for an image, which is exactly what a confirmation saves
function valuesOf(index) {
  const item = sheet.items[index];
  const shown = { ...(item.values || item.suggested), ...(drafts[index] || {}) };
  return Object.fromEntries(Object.entries(shown).map(([c, v]) => [c, item.values && !drafts[index] ? v : round(v)]));
}

function firstUnlabelled(after = -1) {
  const n = sheet.items.length;
  for (let k = 1; k <= n; k++) {
    const i = (after + k + n) % n;
    if (!sheet.items[i].values) return i;
  }
  return null;
}

function buildSliders() {
  const box = $("sliders");
  box.innerHTML = "";
  sheet.conditions.forEach((c, k) => {
    const row = document.createElement("div");
    row.className = "slider";
    row.dataset.name = c;
    row.innerHTML = `
      <span class="key">${k + 1}</span>
      <label class="name" for="slider-${c}">${c}</label>
      <input id="slider-${c}" type="range" min="0" max="1" step="0.01" tabindex="-1">
      <output class="value" id="value-${c}"></output>
      <span class="hint">${sheet.meaning[c] || ""}</span>`;
    const input = row.querySelector("input");
    input.addEventListener("input", () => setValue(c, Number(input.value)));
    input.addEventListener("pointerdown", () => { active = k; render(); });
    box.append(row);
  });
}

function setValue(c, v) {
  drafts[current] = { ...(drafts[current] || {}), [c]: round(v) };
  render();
}

function render() {
  const item = sheet.items[current];
  const values = valuesOf(current);
  const confirmed = Boolean(item.values) && !drafts[current];
  $("image").src = `/api/image/${current}`;
  $("image").alt = `face ${current + 1}: ${item.file}`;
  $("position").textContent = `${current + 1} / ${sheet.items.length}`;
  $("file").textContent = item.file;
  const state = $("state");
  if (confirmed) {
    state.textContent = "labelled";
    state.className = "state-labelled";
  } else {
    const bySource = {};
    sheet.conditions.forEach((c) => {
      if (!(drafts[current] && c in drafts[current]) && !item.values) (bySource[item.sources[c]] ||= []).push(c);
    });
    const parts = Object.entries(bySource).map(([s, cs]) => `${s}: ${cs.join(", ")}`);
    state.textContent = item.values ? "labelled, changed (Enter saves)" :
      `not labelled yet${parts.length ? " — suggested by " + parts.join("; ") : ""}`;
    state.className = "state-suggested";
  }
  sheet.conditions.forEach((c, k) => {
    const row = document.querySelector(`.slider[data-name="${c}"]`);
    row.classList.toggle("active", k === active);
    const moved = drafts[current] && c in drafts[current];
    row.classList.toggle("suggested", !item.values && !moved);
    row.querySelector("input").value = values[c];
    row.querySelector("output").textContent = Number(values[c]).toFixed(2);
  });
  $("progress").max = sheet.total;
  $("progress").value = sheet.labelled;
  $("progress-text").textContent = `${sheet.labelled} / ${sheet.total} labelled`;
  if (!$("grid-view").hidden) renderGrid();
}

function renderGrid() {
  const grid = $("grid");
  if (grid.children.length !== sheet.items.length) {
    grid.innerHTML = "";
    sheet.items.forEach((item, i) => {
      const cell = document.createElement("div");
      cell.className = "cell";
      cell.dataset.index = String(i);
      cell.innerHTML = `<img loading="lazy" src="/api/image/${i}" alt="${item.file}">`;
      cell.addEventListener("click", () => { current = i; showGrid(false); });
      grid.append(cell);
    });
  }
  sheet.items.forEach((item, i) => {
    const cell = grid.children[i];
    cell.classList.toggle("labelled", Boolean(item.values));
    cell.classList.toggle("current", i === current);
    cell.title = item.values ? `${item.file}\n` + sheet.conditions.map((c) => `${c} ${item.values[c].toFixed(2)}`).join("\n")
                             : `${item.file}: not labelled`;
  });
}

function showGrid(on) {
  $("grid-view").hidden = !on;
  $("single").hidden = on;
  render();
}

function go(index) {
  current = (index + sheet.items.length) % sheet.items.length;
  render();
}

async function refresh() {
  const fresh = await call("/api/sheet");
  sheet.items.forEach((item, i) => { item.values = fresh.items[i].values; });
  sheet.labelled = fresh.labelled;
}

async function confirm() {
  const index = current;
  const values = valuesOf(index);
  try {
    const saved = await call(`/api/label/${index}`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ values }),
    });
    delete drafts[index];
    sheet.items[index].values = saved.values;
    await refresh();  // other tabs' labels count too
    showError("");
    const next = firstUnlabelled(index);
    go(next === null ? index + 1 : next);
  } catch (exc) {
    showError(`not saved: ${exc.message}`);
  }
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const c = sheet.conditions[active];
  const step = e.shiftKey ? 0.01 : 0.05;
  const handled = {
    ArrowLeft: () => setValue(c, valuesOf(current)[c] - step),
    ArrowRight: () => setValue(c, valuesOf(current)[c] + step),
    ArrowUp: () => { active = (active + sheet.conditions.length - 1) % sheet.conditions.length; render(); },
    ArrowDown: () => { active = (active + 1) % sheet.conditions.length; render(); },
    Enter: () => confirm(),
    PageUp: () => go(current - 1), "[": () => go(current - 1),
    PageDown: () => go(current + 1), "]": () => go(current + 1),
    g: () => showGrid($("grid-view").hidden),
  }[e.key];
  const digit = Number(e.key);
  if (handled) {
    e.preventDefault();
    handled();
  } else if (Number.isInteger(digit) && digit >= 1 && digit <= sheet.conditions.length) {
    e.preventDefault();
    active = digit - 1;
    render();
  }
}

async function start() {
  sheet = await call("/api/sheet");
  buildSliders();
  current = firstUnlabelled() ?? 0;
  $("prev").addEventListener("click", () => go(current - 1));
  $("next").addEventListener("click", () => go(current + 1));
  $("next-todo").addEventListener("click", () => { const i = firstUnlabelled(current); if (i !== null) go(i); });
  $("toggle-grid").addEventListener("click", () => showGrid($("grid-view").hidden));
  $("confirm").addEventListener("click", confirm);
  document.addEventListener("keydown", onKey);
  render();
  document.body.dataset.ready = "1";
}

start().catch((exc) => showError(exc.message));
