// fastsr serve: the page. No dependencies; talks to /v1 on this server only.
"use strict";

const $ = (id) => document.getElementById(id);
const FORMAT_OF_EXT = { png: "PNG", jpg: "JPEG", jpeg: "JPEG", tif: "TIFF", tiff: "TIFF", bmp: "BMP", webp: "WEBP" };
const state = { file: null, inputUrl: null, outputUrl: null, models: [], outW: 0, outH: 0 };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function errorText(response) {
  // The server's errors are JSON {"error": "..."}; anything else is shown as it came.
  const text = await response.text();
  try { return JSON.parse(text).error || text; } catch (e) { return text || response.statusText; }
}

async function loadModels() {
  const response = await fetch("v1/models", { headers: authHeaders() });
  if (response.status === 401) {
    $("token-row").hidden = false;
    showError("This server needs a token: enter it above. (" + (await errorText(response)) + ")");
    return false;
  }
  if (!response.ok) { showError("Cannot list the models: " + (await errorText(response))); return false; }
  const body = await response.json();
  state.models = body.models;
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => new Option(m.name + " (" + m.arch + ")", m.name, m.default, m.default)));
  $("model-row").hidden = state.models.length < 2;
  const m = state.models.find((x) => x.default) || state.models[0];
  $("server-info").textContent = m ? m.device + ", " + m.precision : "";
  fillScales();
  showError("");
  return true;
}

function fillScales() {
  const m = state.models.find((x) => x.name === $("model").value) || state.models[0];
  if (!m) return;
  $("scale").replaceChildren(...m.scales.map((s) => new Option("\u00d7" + s, s, s === m.default_scale, s === m.default_scale)));
}

function choose(file) {
  if (!file) return;
  state.file = file;
  if (state.inputUrl) URL.revokeObjectURL(state.inputUrl);
  state.inputUrl = URL.createObjectURL(file);
  $("drop-text").textContent = file.name + " (" + Math.round(file.size / 1024) + " KiB)";
  $("go").disabled = false;
  showError("");
}

function parseEvents(buffer, onEvent) {
  // Server-Sent Events: blocks separated by a blank line, "event:" and "data:" lines. Returns the rest.
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    onEvent(event, data ? JSON.parse(data) : {});
  }
  return buffer;
}

async function upscale() {
  if (!state.file) return;
  if (!state.models.length && !(await loadModels())) return;
  showError("");
  $("go").disabled = true;
  const progress = $("progress");
  progress.hidden = false; progress.removeAttribute("value");
  $("status").textContent = "uploading\u2026";
  const params = new URLSearchParams({ scale: $("scale").value });
  if (state.models.length > 1) params.set("model", $("model").value);
  if ($("ensemble").checked) params.set("ensemble", "1");
  let result = null, failure = null;
  try {
    const response = await fetch("v1/upscale/stream?" + params, {
      method: "POST", body: state.file,
      headers: { "Content-Type": state.file.type || "application/octet-stream", ...authHeaders() },
    });
    if (!response.ok) throw new Error(await errorText(response));
    $("status").textContent = "waiting for the model\u2026";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = parseEvents(buffer + value.replace(/\r\n/g, "\n"), (event, data) => {
        if (event === "progress") {
          progress.max = data.tiles_total; progress.value = data.tiles_done;
          $("status").textContent = "tiles " + data.tiles_done + " / " + data.tiles_total;
        } else if (event === "result") result = data;
        else if (event === "error") failure = data.error;
      });
    }
    if (failure) throw new Error(failure);
    if (!result) throw new Error("the server closed the connection without a result");
    await show(result);
  } catch (e) {
    showError(e.message || String(e));
    $("status").textContent = "";
  } finally {
    progress.hidden = true;
    $("go").disabled = false;
  }
}

function downloadName(result) {
  // The CLI's rule: <stem>_x<scale> with the input's extension when the format was kept, else the server's.
  const name = state.file.name || "image";
  const dot = name.lastIndexOf(".");
  const stem = dot > 0 ? name.slice(0, dot) : name;
  const ext = dot > 0 ? name.slice(dot + 1) : "";
  const kept = FORMAT_OF_EXT[ext.toLowerCase()] === result.format;
  const serverExt = result.filename.slice(result.filename.lastIndexOf(".") + 1);
  return stem + "_x" + result.scale + "." + (kept ? ext : serverExt);
}

async function show(result) {
  const blob = await (await fetch("data:" + result.media_type + ";base64," + result.data)).blob();
  if (state.outputUrl) URL.revokeObjectURL(state.outputUrl);
  state.outputUrl = URL.createObjectURL(blob);
  const link = $("download");
  link.href = state.outputUrl;
  link.download = downloadName(result);
  const after = $("after"), before = $("before");
  const loaded = (img) => new Promise((resolve) => { img.onload = () => resolve(true); img.onerror = () => resolve(false); });
  const ready = Promise.all([loaded(after), loaded(before)]);
  after.src = state.outputUrl;
  before.src = state.inputUrl;
  const [okAfter] = await ready;
  $("result").hidden = false;
  const t = result.timings;
  $("status").textContent = "done: \u00d7" + result.scale + " with " + result.model + ", " +
    Math.round(t.upscale) + " ms on the server";
  if (!okAfter) {
    showError("This browser cannot show " + result.format + " images; the download has the result.");
    return;
  }
  state.outW = after.naturalWidth; state.outH = after.naturalHeight;
  $("info").textContent = state.outW + "\u00d7" + state.outH + " " + result.format;
  layout();
}

function layout() {
  const zoom = Number($("zoom").value);
  const w = state.outW * zoom, h = state.outH * zoom;
  const stage = $("stage");
  stage.style.width = w + "px"; stage.style.height = h + "px";
  for (const img of [$("after"), $("before")]) { img.style.width = w + "px"; img.style.height = h + "px"; }
  $("after").classList.toggle("pixelated", zoom > 1);
  split();
}

function split() {
  // The "before" (the input drawn at the output's size, nearest-neighbour) is shown left of the divider.
  const s = Number($("split").value);
  $("before").style.clipPath = "inset(0 " + (100 - s) + "% 0 0)";
  $("divider").style.left = s + "%";
}

function dragSplit(event) {
  if (event.type !== "pointerdown" && !(event.buttons & 1)) return;
  const box = $("stage").getBoundingClientRect();
  $("split").value = String(Math.max(0, Math.min(100, ((event.clientX - box.left) / box.width) * 100)));
  split();
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => choose(e.dataTransfer.files[0]));
  $("model").addEventListener("change", fillScales);
  $("token").addEventListener("change", () => { sessionStorage.setItem("fastsr-token", $("token").value); loadModels(); });
  $("token").value = sessionStorage.getItem("fastsr-token") || "";
  $("go").addEventListener("click", upscale);
  $("zoom").addEventListener("change", layout);
  $("split").addEventListener("input", split);
  $("stage").addEventListener("pointerdown", dragSplit);
  $("stage").addEventListener("pointermove", dragSplit);
  loadModels().catch((e) => showError("Cannot reach the server: " + e.message));
});
