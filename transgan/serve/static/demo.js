// The demo page of `transgan serve`: one image in, its translation out; or a class, a seed and a grid.
"use strict";

const $ = (id) => document.getElementById(id);
let limits = { max_side: 2048, max_samples: 64 };

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// The server answers errors as JSON {"error": "..."}: show that line, not a status number.
async function failure(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.error}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

// Photos from a phone are often larger than the server takes: scale them down in the browser first.
async function fitted(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, limits.max_side / Math.max(bitmap.width, bitmap.height));
  if (scale === 1) return file;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function translate(file) {
  if (!file || !file.type.startsWith("image/")) {
    status("that is not an image file", true);
    return;
  }
  $("input").src = URL.createObjectURL(file);
  $("output").removeAttribute("src");
  status("translating...");
  const started = performance.now();
  const body = await fitted(file);
  const response = await fetch("translate", {
    method: "POST",
    body,
    headers: { "Content-Type": body.type || "application/octet-stream", Accept: "image/png" },
  });
  if (!response.ok) {
    status(await failure(response), true);
    return;
  }
  $("output").src = URL.createObjectURL(await response.blob());
  const ms = Math.round(performance.now() - started);
  const batch = response.headers.get("X-Batch-Size");
  $("output-caption").textContent = `output (${ms} ms, batch of ${batch})`;
  status("done");
}

async function generate() {
  const params = { seed: Number($("seed").value), n: Number($("n").value) };
  const truncation = Number($("truncation").value);
  if (truncation > 0) params.truncation = truncation;
  if (!$("class-field").hidden) params.class = $("class").value;
  status("generating...");
  const response = await fetch("generate", {
    method: "POST",
    body: JSON.stringify(params),
    headers: { "Content-Type": "application/json", Accept: "image/png" },
  });
  if (!response.ok) {
    status(await failure(response), true);
    return;
  }
  $("grid").src = URL.createObjectURL(await response.blob());
  status(`seed ${params.seed}, ${params.n} images`);
}

function setUpTranslator() {
  const drop = $("drop");
  $("translator").hidden = false;
  $("file").addEventListener("change", () => translate($("file").files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    translate(event.dataTransfer.files[0]);
  });
}

function setUpSampler(model) {
  $("sampler").hidden = false;
  // Small samples (MNIST's 28 px) are shown enlarged, pixel for pixel, up to about 640 px wide.
  $("grid").addEventListener("load", () => {
    const scale = Math.max(1, Math.floor(640 / $("grid").naturalWidth));
    $("grid").style.width = `${$("grid").naturalWidth * scale}px`;
  });
  const names = model.class_names || [];
  $("class-field").hidden = names.length === 0;
  for (const name of names) $("class").add(new Option(name, name));
  $("n").max = limits.max_samples;
  $("truncation").addEventListener("input", () => {
    const value = Number($("truncation").value);
    $("truncation-value").textContent = value > 0 ? value.toFixed(1) : "off";
  });
  $("generate").addEventListener("click", generate);
  $("random-seed").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * 1e9);
    generate();
  });
  generate();
}

async function start() {
  const response = await fetch("info");
  if (!response.ok) {
    status(await failure(response), true);
    return;
  }
  const info = await response.json();
  const model = info.model;
  limits = info.limits;
  $("model").textContent = `${model.name}: ${model.kind}, ${model.arch} (${model.task || "no task"}), ${model.engine}`;
  if (model.kind === "sampler") setUpSampler(model);
  else setUpTranslator();
}

start().catch((error) => status(String(error), true));
