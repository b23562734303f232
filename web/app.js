// tinyserve's page: draw a digit or give a photo, POST it to /explanations/<model> on this origin,
// show the answer (top label, one bar per label, model input, saliency) or the 4xx message.
// Plain JavaScript, no build step, nothing fetched from anywhere else.
"use strict";

const INK = "#000";        // dark ink on white paper, like a pen on a page (the server inverts it)
const PAPER = "#fff";
const STROKE = 0.09;       // pen width, a fraction of the side: 12 drawn digits read right by both digit
                           // models at 0.05-0.11 in either polarity; 0.09 gave MNIST-like strokes

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
const modelSelect = $("model");
const keyInput = $("api-key");
// the key stays in this tab (sessionStorage), never in the page's address or in localStorage
keyInput.value = sessionStorage.getItem("apiKey") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("apiKey", keyInput.value.trim()));

let inked = false;         // anything drawn since the last clear
let lastPicture = null;    // {blob, name} last sent, asked again when the model changes
let requestSeq = 0;        // answers to older requests are dropped
let sentURL = null;        // object URL of the picture shown beside the answer

// ---- drawing ----------------------------------------------------------------------------------
function clearPad() {
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
  ctx.lineWidth = pad.width * STROKE;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  inked = false;
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width),
          (event.clientY - box.top) * (pad.height / box.height)];
}

let last = null;           // the pen's previous point while it is down
pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;  // the main button, a finger or a pen's tip
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  last = padPoint(event);
  ctx.beginPath();
  ctx.arc(last[0], last[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
  ctx.fill();
  inked = true;
});
pad.addEventListener("pointermove", (event) => {
  if (!last) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const point = padPoint(e);
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(point[0], point[1]);
    ctx.stroke();
    last = point;
  }
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => { last = null; });
}

$("clear").addEventListener("click", () => {
  clearPad();
  showStatus("Draw a digit or choose a picture.");
});

$("ask").addEventListener("click", () => {
  if (!inked) {
    showProblem("Nothing drawn yet: draw a digit in the white square first.");
    return;
  }
  pad.toBlob((blob) => ask({blob, name: "your drawing"}), "image/png");
});

// ---- photos: picker, camera, drop -------------------------------------------------------------
function takeFile(file) {
  if (!file) return;
  ask({blob: file, name: file.name || "your picture"});
}

for (const id of ["file", "camera"]) {
  $(id).addEventListener("change", (event) => {
    takeFile(event.target.files[0]);
    event.target.value = "";  // choosing the same file again is a new change
  });
}

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const files = event.dataTransfer ? event.dataTransfer.files : [];
  if (!files.length) {
    showProblem("That was not a file: drop a picture file (PNG, JPEG...) from your computer.");
    return;
  }
  takeFile(files[0]);
});
// a file dropped beside the drop zone must not make the browser leave the page to show it
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

modelSelect.addEventListener("change", () => { if (lastPicture) ask(lastPicture); });

// ---- asking the server ------------------------------------------------------------------------
function requestHeaders(picture) {
  // the file's own type (image/png, image/jpeg...); a raw body always needs one
  const headers = {"Content-Type": picture.blob.type || "application/octet-stream"};
  const key = keyInput.value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function ask(picture) {
  lastPicture = picture;
  const model = modelSelect.value;
  const seq = ++requestSeq;
  document.body.setAttribute("aria-busy", "true");
  showStatus(`Asking ${model} about ${picture.name}…`);
  let response, answer;
  try {
    response = await fetch(`explanations/${encodeURIComponent(model)}`, {
      method: "POST",
      headers: requestHeaders(picture),
      body: picture.blob,
    });
    const text = await response.text();
    try { answer = JSON.parse(text); } catch (_) { answer = null; }
  } catch (err) {
    if (seq !== requestSeq) return;
    showProblem("Could not reach the server. Is it still running? (make serve)");
    return;
  } finally {
    if (seq === requestSeq) document.body.removeAttribute("aria-busy");
  }
  if (seq !== requestSeq) return;
  if (response.ok && answer && answer.probabilities) {
    showAnswer(answer, picture);
  } else {
    showProblem(problemText(response.status, answer), answer && answer.error);
  }
}

function problemText(status, body) {
  if (body && typeof body.message === "string" && body.message) {
    return body.message;
  }
  if (status === 413) return "The file is too large: send a picture under 8 MB.";
  if (status === 404) return "This server does not serve that model. Choose another one.";
  if (status === 503) return "The model is not ready yet (or is busy). Try again in a few seconds.";
  if (status >= 500) return `The server failed (HTTP ${status}). Try again; if it keeps failing, see the server's logs.`;
  return `The server refused the picture (HTTP ${status}).`;
}

// ---- showing ----------------------------------------------------------------------------------
function showStatus(text) {
  $("status").textContent = text;
}

function showProblem(text, code) {
  $("result").hidden = true;
  const box = $("error");
  box.replaceChildren();
  const message = document.createElement("p");
  message.id = "error-message";
  message.textContent = text;
  box.append(message);
  if (code) {
    const detail = document.createElement("p");
    detail.className = "code";
    detail.textContent = `Error code: ${code}`;
    box.append(detail);
  }
  box.hidden = false;
  scrollToAnswer();
  showStatus("No answer for this picture.");
}

// on a phone the answer is below the picture: bring its top into view (no-op when it is in view)
function scrollToAnswer() {
  const title = $("answer-title");
  const box = title.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) title.scrollIntoView({block: "start"});
}

function percent(p) {
  const value = 100 * p;
  return value >= 99.95 || value === 0 ? `${value.toFixed(0)}%` : value < 0.1 ? "<0.1%" : `${value.toFixed(1)}%`;
}

function showAnswer(answer, picture) {
  $("error").hidden = true;
  const probabilities = answer.probabilities;
  $("top-label").textContent = answer.label;
  $("top-detail").textContent = `${percent(probabilities[answer.label])} sure (${answer.model})`;

  const chart = $("chart");
  chart.replaceChildren();
  for (const [label, p] of Object.entries(probabilities)) {
    const row = document.createElement("li");
    row.dataset.label = label;
    row.dataset.probability = String(p);
    if (label === answer.label) row.classList.add("top");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(2)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    row.append(name, track, value);
    chart.append(row);
  }

  if (sentURL) URL.revokeObjectURL(sentURL);
  sentURL = URL.createObjectURL(picture.blob);
  $("sent").src = sentURL;
  $("canonical").src = `data:image/png;base64,${answer.canonical_png}`;
  $("saliency").src = `data:image/png;base64,${answer.saliency_png}`;
  $("result").hidden = false;
  scrollToAnswer();
  showStatus(`${answer.model} reads ${picture.name} as ${answer.label}.`);
}

clearPad();
