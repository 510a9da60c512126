// The listening page: speaks the text through /v1/audio/speech as raw PCM and plays each piece as it arrives.
"use strict";

const RATE = 24000;
const SAMPLING = ["temperature", "top_p", "repetition_penalty", "seed", "max_new_tokens"];
const $ = (id) => document.getElementById(id);
// A key in the address's fragment (#key=...) is never sent to the server in the URL.
let key = new URLSearchParams(location.hash.slice(1)).get("key") || "";
let modelId = null;
let promptKind = "unknown";
let downloadUrl = null;
let context = null; // the last play's audio, stopped when the next one starts

function say(text) {
  $("status").textContent = text;
}

function headers(extra = {}) {
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function getJson(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new Error(await errorOf(response));
  return response.json();
}

async function connect() {
  try {
    const [models, voices] = await Promise.all([getJson("/v1/models"), getJson("/v1/voices")]);
    modelId = models.data[0].id;
    $("model").textContent = modelId;
    promptKind = voices.prompt;
    const select = $("voice");
    select.replaceChildren();
    for (const voice of voices.data) select.append(new Option(voice.id, voice.id));
    if (promptKind !== "speaker") select.append(new Option("(text-only prompts)", ""));
    $("voice-name").hidden = promptKind !== "unknown";
    for (const name of SAMPLING) $(name).value = voices.sampling[name];
    $("key-row").hidden = true;
    $("play").disabled = false;
    say("Ready.");
  } catch (error) {
    say(`Could not connect: ${error.message}`);
  }
}

function wavHeader(samples) {
  const view = new DataView(new ArrayBuffer(44));
  const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * samples, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true);
  view.setUint16(22, 1, true);
  view.setUint32(24, RATE, true);
  view.setUint32(28, 2 * RATE, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, 2 * samples, true);
  return view.buffer;
}

function request() {
  const body = { model: modelId, input: $("text").value, response_format: "pcm" };
  const voice = $("voice-name").hidden ? $("voice").value : $("voice-name").value.trim();
  if (voice) body.voice = voice;
  for (const name of SAMPLING) body[name] = Number($(name).value);
  return body;
}

async function play() {
  $("play").disabled = true;
  $("download").hidden = true;
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  if (context) context.close();
  context = new AudioContext({ sampleRate: RATE });
  const parts = [];
  let carry = new Uint8Array(0);
  let samples = 0;
  let at = 0;
  say("Speaking…");
  try {
    const response = await fetch("/v1/audio/speech", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(request()),
    });
    if (!response.ok) throw new Error(await errorOf(response));
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      // 16-bit samples may straddle two network chunks.
      const bytes = new Uint8Array(carry.length + value.length);
      bytes.set(carry);
      bytes.set(value, carry.length);
      const whole = bytes.length - (bytes.length % 2);
      carry = bytes.slice(whole);
      if (!whole) continue;
      parts.push(bytes.slice(0, whole));
      const view = new DataView(bytes.buffer, 0, whole);
      const buffer = context.createBuffer(1, whole / 2, RATE);
      const channel = buffer.getChannelData(0);
      for (let i = 0; i < whole / 2; i++) channel[i] = view.getInt16(2 * i, true) / 32768;
      const source = context.createBufferSource();
      source.buffer = buffer;
      source.connect(context.destination);
      at = Math.max(at, context.currentTime + 0.05);
      source.start(at);
      at += buffer.duration;
      samples += whole / 2;
      say(`Playing: ${(samples / RATE).toFixed(2)} s received…`);
    }
    downloadUrl = URL.createObjectURL(new Blob([wavHeader(samples), ...parts], { type: "audio/wav" }));
    const link = $("download");
    link.href = downloadUrl;
    link.dataset.samples = String(samples);
    link.hidden = false;
    say(`Done: ${(samples / RATE).toFixed(2)} s of audio.`);
  } catch (error) {
    say(`Failed: ${error.message}`);
  } finally {
    $("play").disabled = false;
  }
}

async function start() {
  try {
    const health = await (await fetch("/health")).json();
    if (health.auth && !key) {
      $("key-row").hidden = false;
      say("This server needs its API key.");
      return;
    }
    await connect();
  } catch (error) {
    say(`Could not reach the server: ${error.message}`);
  }
}

$("connect").addEventListener("click", () => {
  key = $("key").value.trim();
  connect();
});
$("play").addEventListener("click", play);
start();
