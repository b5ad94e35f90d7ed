// The page: service health, voice picker, instructions, recording consent, custom voices,
// connect / disconnect, live transcript and error messages.
//
// `window.__unmuteStats` exposes counters (pages sent, events received, the playback worklet's
// rendered samples...) for end-to-end tests and for curious people in the console.

import { encoderSupported } from "./mic.js";
import { ConversationSession } from "./session.js";
import { Transcript } from "./transcript.js";
import { recordVoiceSample, uploadVoice } from "./voice-upload.js";
import { DEFAULT_INSTRUCTIONS, fetchVoices, pickDefault, renderVoices, voiceId } from "./voices.js";

// Where the page was served from: the API lives next to it (also behind a path prefix).
const BASE_URL = new URL(".", window.location.href).href;
const HEALTH_RECHECK_MS = 15000;
const ERROR_SHOWN_MS = 15000;
const CONSENT_KEY = "recordingConsent"; // the Unmute frontend's localStorage key
const API_KEY_KEY = "unmuteTrioApiKey"; // kept in this browser only, sent as a subprotocol

const $ = (selector) => document.querySelector(selector);

const stats = {
  state: "idle", // idle | connecting | connected
  health: null,
  voices: 0,
  pagesSent: 0,
  bytesSent: 0,
  events: {}, // event type → count
  micSettings: null,
  playback: null, // the playback worklet's last report
  errors: [], // messages shown to the user
  closes: [], // {code, reason} of each closed connection
};
window.__unmuteStats = stats;

const state = {
  voices: [],
  voice: null,
  session: null,
  healthOk: false,
  encoderOk: null,
  userStopped: false,
  errorEventsBefore: 0, // error events seen before the current connection
  meterFrame: 0,
};

const transcript = new Transcript($("#transcript"));
window.__unmuteTranscript = transcript;

// ------------------------------------------------------------------ messages

function showError(message) {
  stats.errors.push(message);
  console.error(message);
  const toast = document.createElement("div");
  toast.className = "error";
  const text = document.createElement("span");
  text.textContent = message;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.textContent = "×";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => toast.remove());
  toast.append(text, close);
  $("#errors").append(toast);
  setTimeout(() => toast.remove(), ERROR_SHOWN_MS);
}

function setStatus(text) {
  $("#status").textContent = text;
}

function setNotice(text) {
  const notice = $("#notice");
  notice.textContent = text ?? "";
  notice.hidden = !text;
}

// ------------------------------------------------------------------ health

async function checkHealth() {
  let health;
  try {
    const response = await fetch(new URL("v1/health", BASE_URL), {
      signal: AbortSignal.timeout(3000),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    health = await response.json();
  } catch (error) {
    stats.health = null;
    state.healthOk = false;
    for (const item of document.querySelectorAll("#health li")) item.className = "unknown";
    setNotice(`Cannot reach the server (${error.message}).`);
    updateControls();
    return;
  }
  stats.health = health;
  state.healthOk = health.ok === true;
  for (const item of document.querySelectorAll("#health li")) {
    const up = health[item.dataset.service] === true;
    item.classList.toggle("up", up);
    item.classList.toggle("down", !up);
    item.title = up ? "up" : "down";
  }
  $("#voice-upload").hidden = health.voice_cloning_up !== true;
  $("#api-key-row").hidden = health.api_key_required !== true;
  showEngines(health.engines ?? {});
  if (!state.healthOk) {
    const down = ["stt_up", "llm_up", "tts_up"].filter((k) => health[k] !== true);
    const names = { stt_up: "speech-to-text", llm_up: "LLM", tts_up: "text-to-speech" };
    // A role the server reaches but finds misconfigured comes with a message saying what to
    // change (`problems` in /v1/health); the others are unreachable.
    const problems = health.problems ?? {};
    const unreachable = down.filter((k) => !problems[k.replace("_up", "")]);
    const parts = unreachable.length
      ? [`The server is up but cannot reach: ${unreachable.map((k) => names[k]).join(", ")}.`]
      : [];
    for (const [role, text] of Object.entries(problems)) parts.push(`${role.toUpperCase()}: ${text}`);
    setNotice(parts.join(" "));
  } else if (state.encoderOk !== false) {
    setNotice(null);
  }
  updateControls();
}

// Which engine answers each role, from /v1/health; the simulators say what they are.
function showEngines(engines) {
  const labels = { stt: "Speech-to-text", llm: "LLM", tts: "Text-to-speech" };
  const known = Object.entries(labels).filter(([role]) => engines[role]);
  const line = $("#engines");
  line.hidden = known.length === 0;
  const parts = known.map(([role, label]) => `${label}: ${engines[role]}`);
  const simulated = Object.values(engines).some((name) => /sim/i.test(name ?? ""));
  if (simulated) {
    parts.push(
      "Simulators replay scripted words and hum instead of speaking: " +
        "run `make run` for real local engines.",
    );
  }
  line.textContent = parts.join(" · ");
  line.classList.toggle("simulated", simulated);
}

// ------------------------------------------------------------------ settings

function sessionConfig() {
  const text = $("#instructions").value.trim();
  const voice = state.voice;
  return {
    instructions: text
      ? { type: "constant", text, language: "en/fr" }
      : (voice?.instructions ?? DEFAULT_INSTRUCTIONS),
    voice: voice === null ? null : voiceId(voice),
    allow_recording: $("#allow-recording").checked,
  };
}

function configChanged() {
  state.session?.updateConfig(sessionConfig());
}

function selectVoice(voice) {
  state.voice = voice;
  const instructions = voice?.instructions;
  $("#instructions").placeholder =
    instructions?.type === "constant"
      ? instructions.text
      : "Leave empty to use the voice's own character.";
  renderVoices($("#voices"), state.voices, state.voice, selectVoice);
  configChanged();
}

async function loadVoices() {
  try {
    state.voices = await fetchVoices(BASE_URL);
  } catch (error) {
    console.warn("voices unavailable:", error);
    state.voices = [];
  }
  stats.voices = state.voices.length;
  selectVoice(pickDefault(state.voices));
}

function addCustomVoice(name) {
  const voice = {
    name: `Your voice ${state.voices.filter((v) => v.source.source_type === "custom").length + 1}`,
    instructions: null,
    source: { source_type: "custom", path_on_server: name },
  };
  state.voices.unshift(voice); // first, where the user sees it
  selectVoice(voice);
}

async function uploadCustomVoice(getBlob, busyText) {
  const status = $("#voice-upload-status");
  const buttons = [$("#voice-record"), $("#voice-file")];
  for (const b of buttons) b.disabled = true;
  try {
    status.textContent = busyText;
    const { blob, filename } = await getBlob((text) => {
      status.textContent = text;
    });
    status.textContent = "Uploading…";
    addCustomVoice(await uploadVoice(BASE_URL, blob, filename));
    status.textContent = "Voice ready and selected.";
  } catch (error) {
    status.textContent = "";
    showError(error.message || String(error));
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

// ------------------------------------------------------------------ conversation

function updateControls() {
  const button = $("#connect");
  if (stats.state === "idle") {
    button.textContent = "Connect";
    button.disabled = !state.healthOk || state.encoderOk !== true;
    button.classList.remove("stop");
  } else {
    button.textContent = stats.state === "connecting" ? "Cancel" : "Disconnect";
    button.disabled = false;
    button.classList.add("stop");
  }
  if (stats.state === "idle") {
    setStatus(state.healthOk ? "Ready." : "Waiting for the server…");
  }
}

function onServerEvent(event) {
  stats.events[event.type] = (stats.events[event.type] ?? 0) + 1;
  switch (event.type) {
    case "conversation.item.input_audio_transcription.delta":
      transcript.userWord(event.delta);
      break;
    case "response.created":
      transcript.botTurnStarted();
      break;
    case "response.text.delta":
      transcript.botWord(event.delta);
      break;
    case "unmute.interrupted_by_vad":
      transcript.botInterrupted();
      break;
    case "error":
      if (event.error?.type === "warning") {
        console.warn("server warning:", event.error.message);
      } else {
        showError(event.error?.message ?? "The server reported an error.");
      }
      break;
    default:
      break; // audio is played by the session; other events need nothing here
  }
}

function onStats(report) {
  stats.playback = report;
}

function refreshMeters() {
  const session = state.session;
  if (session === null) {
    $("#mic-meter").style.width = "0%";
    $("#bot-meter").style.width = "0%";
    return;
  }
  stats.pagesSent = session.pagesSent;
  stats.bytesSent = session.bytesSent;
  const meter = (level) => `${Math.min(100, Math.round(Math.sqrt(level) * 100))}%`;
  $("#mic-meter").style.width = meter(session.micLevel());
  $("#bot-meter").style.width = meter(stats.playback?.level ?? 0);
  state.meterFrame = requestAnimationFrame(refreshMeters);
}

async function connect() {
  stats.state = "connecting";
  state.userStopped = false;
  state.errorEventsBefore = stats.events.error ?? 0;
  updateControls();
  setStatus("Starting the microphone…");
  transcript.clear();
  const session = new ConversationSession(BASE_URL, sessionConfig(), {
    event: onServerEvent,
    stats: onStats,
    error: showError,
    open: () => {
      stats.state = "connected";
      stats.micSettings = session.micSettings();
      updateControls();
      setStatus("Connected. Speak!");
    },
    closed: ({ code, reason }) => onClosed(session, code, reason),
  }, stats.health?.api_key_required ? $("#api-key").value.trim() : "");
  state.session = session;
  state.meterFrame = requestAnimationFrame(refreshMeters);
  try {
    await session.start();
    if (stats.state === "connecting") setStatus("Connecting…");
  } catch (error) {
    if (state.session !== session) return; // cancelled by the user meanwhile
    showError(error.message || String(error));
    disconnect();
  }
}

function onClosed(session, code, reason) {
  stats.closes.push({ code, reason });
  if (state.session !== session) return;
  const expected = state.userStopped || code === 1000;
  const gotError = (stats.events.error ?? 0) > state.errorEventsBefore;
  if (!expected && !gotError) {
    // A refused key is an HTTP 401 before the upgrade, which a browser reports as 1006.
    const keyHint =
      code === 1006 && stats.health?.api_key_required && stats.state === "connecting"
        ? " Check the API key."
        : "";
    showError(`The connection closed (${code}${reason ? `: ${reason}` : ""}).${keyHint}`);
  }
  finish(code === 1000 && !state.userStopped ? "The conversation ended." : "Disconnected.");
}

function disconnect() {
  state.userStopped = true;
  state.session?.stop();
  finish("Disconnected.");
}

function finish(status) {
  state.session = null;
  cancelAnimationFrame(state.meterFrame);
  refreshMeters();
  stats.state = "idle";
  updateControls();
  setStatus(status);
}

// ------------------------------------------------------------------ wiring

function init() {
  const consent = $("#allow-recording");
  consent.checked = localStorage.getItem(CONSENT_KEY) === "true";
  consent.addEventListener("change", () => {
    localStorage.setItem(CONSENT_KEY, String(consent.checked));
    configChanged();
  });
  const apiKey = $("#api-key");
  apiKey.value = localStorage.getItem(API_KEY_KEY) ?? "";
  apiKey.addEventListener("change", () => localStorage.setItem(API_KEY_KEY, apiKey.value.trim()));
  let typing = 0;
  $("#instructions").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(configChanged, 600); // one session.update per pause in typing
  });
  $("#connect").addEventListener("click", () => {
    if (stats.state === "idle") connect();
    else disconnect();
  });
  $("#voice-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file) uploadCustomVoice(async () => ({ blob: file, filename: file.name }), "Uploading…");
  });
  $("#voice-record").addEventListener("click", () =>
    uploadCustomVoice(async (progress) => {
      const worklet = new URL("capture-worklet.js", import.meta.url);
      const blob = await recordVoiceSample(worklet, 10, (left) =>
        progress(`Recording… ${left} s`),
      );
      return { blob, filename: "unmute-mic-recording.wav" };
    }, "Recording…"),
  );

  if (!window.isSecureContext) {
    // Microphone, AudioWorklet and WebCodecs only exist on https:// pages and on localhost.
    state.encoderOk = false;
    setNotice(
      "Browsers only allow the microphone on https:// pages or on localhost. " +
        "Serve it over HTTPS (behind a TLS proxy), or reach it through an SSH tunnel as " +
        "http://localhost.",
    );
  } else {
    encoderSupported().then((ok) => {
      state.encoderOk = ok;
      if (!ok) {
        setNotice(
          "This browser cannot encode Opus audio (WebCodecs). Use a recent Chrome, Edge or " +
            "Firefox.",
        );
      }
      updateControls();
    });
  }
  loadVoices();
  checkHealth();
  setInterval(() => {
    if (stats.state === "idle") checkHealth();
  }, HEALTH_RECHECK_MS);
}

init();
