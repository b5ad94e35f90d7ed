// The voice picker: voices from `GET /v1/voices` (the fields of voices.yaml), their display
// names, characters and attributions.

const CHARACTERS = {
  constant: "Custom character",
  smalltalk: "Small talk",
  guess_animal: "Guess the animal",
  quiz_show: "Quiz show",
  news: "News",
  unmute_explanation: "Explains itself",
};

export const DEFAULT_INSTRUCTIONS = { type: "smalltalk", language: "en/fr" };

export async function fetchVoices(baseUrl) {
  const response = await fetch(new URL("v1/voices", baseUrl), {
    signal: AbortSignal.timeout(3000),
  });
  if (!response.ok) throw new Error(`GET /v1/voices: HTTP ${response.status}`);
  const voices = await response.json();
  if (!Array.isArray(voices)) throw new Error("GET /v1/voices did not answer a list");
  return voices;
}

/** The id sent as `session.voice`. */
export function voiceId(voice) {
  return voice.source.path_on_server;
}

export function displayName(voice) {
  return (
    voice.name || voice.source.sound_instance?.username || voice.source.path_on_server.slice(0, 10)
  );
}

export function characterLabel(instructions) {
  if (!instructions) return CHARACTERS.smalltalk;
  const label = CHARACTERS[instructions.type] ?? instructions.type;
  return instructions.language ? `${label} · ${instructions.language}` : label;
}

/** Like the Unmute frontend: a random voice among those that speak English. */
export function pickDefault(voices) {
  const english = voices.filter((v) => !v.instructions?.language || v.instructions.language === "en");
  const pool = english.length > 0 ? english : voices;
  return pool.length > 0 ? pool[Math.floor(Math.random() * pool.length)] : null;
}

function link(text, href) {
  const a = document.createElement("a");
  a.textContent = text;
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}

/** The attribution line of a voice sample, as DOM nodes (never innerHTML: names are data). */
function attribution(voice) {
  const source = voice.source;
  const line = document.createElement("span");
  line.className = "attribution";
  if (source.source_type === "freesound" && source.sound_instance) {
    const sound = source.sound_instance;
    line.append("“");
    line.append(source.url ? link(sound.name, source.url) : sound.name);
    line.append(`” by ${sound.username} on Freesound`);
    if (sound.license) line.append(" (", link("licence", sound.license), ")");
  } else if (source.description) {
    line.append(source.description);
    if (source.description_link) line.append(" ", link("Source", source.description_link));
  } else if (source.source_type === "custom") {
    line.append("Cloned from your sample; kept for an hour.");
  }
  return line;
}

/** Render the voices as radio buttons into `container`; `onSelect(voice)` on change. */
export function renderVoices(container, voices, selected, onSelect) {
  container.replaceChildren();
  if (voices.length === 0) {
    const empty = document.createElement("p");
    empty.className = "dim";
    empty.textContent = "The server offers no voices; the TTS default voice will speak.";
    container.append(empty);
    return;
  }
  for (const [index, voice] of voices.entries()) {
    const label = document.createElement("label");
    label.className = "voice";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "voice";
    // Several characters may share one voice sample, so the voice id is not a key.
    input.value = String(index);
    input.dataset.voice = voiceId(voice);
    input.dataset.name = displayName(voice);
    input.checked = voice === selected;
    input.addEventListener("change", () => onSelect(voice));
    const name = document.createElement("span");
    name.className = "voice-name";
    name.textContent = displayName(voice);
    const character = document.createElement("span");
    character.className = "character";
    character.textContent = characterLabel(voice.instructions);
    label.append(input, name, character, attribution(voice));
    container.append(label);
  }
}
