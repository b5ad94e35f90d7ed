// Custom voices: an audio file, or a 10 s microphone recording turned into a WAV file, sent to
// `POST /v1/voices`, which answers the new voice's name (`custom:<id>`).

import { MIC_CONSTRAINTS } from "./mic.js";
import { encodeWav } from "./wav.js";

export const MAX_UPLOAD_BYTES = 4 * 1024 * 1024; // the server's default limit (413 beyond)
export const RECORDING_SECONDS = 10;
const RECORDING_SAMPLE_RATE = 24000;

/** Upload `blob`; returns the voice name, or throws an Error with the server's reason. */
export async function uploadVoice(baseUrl, blob, filename) {
  if (blob.size > MAX_UPLOAD_BYTES) {
    throw new Error(`The file is ${(blob.size / 1e6).toFixed(1)} MB; the limit is 4 MB.`);
  }
  const form = new FormData();
  form.append("file", blob, filename);
  const response = await fetch(new URL("v1/voices", baseUrl), {
    method: "POST",
    body: form,
    signal: AbortSignal.timeout(30000),
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's error page): reported with the status below
  }
  if (!response.ok || typeof body?.name !== "string") {
    const detail = body?.detail ?? `HTTP ${response.status}`;
    throw new Error(`Voice upload failed: ${detail}`);
  }
  return body.name;
}

/**
 * Record `seconds` of microphone audio; `onProgress(secondsLeft)` is called as it goes.
 * Returns a WAV Blob.
 */
export async function recordVoiceSample(workletUrl, seconds = RECORDING_SECONDS, onProgress) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: MIC_CONSTRAINTS });
  // At the device's rate: the capture worklet resamples to 24 kHz (works in every browser).
  const context = new AudioContext();
  try {
    await context.resume();
    await context.audioWorklet.addModule(workletUrl);
    const wanted = seconds * RECORDING_SAMPLE_RATE;
    const samples = new Float32Array(wanted); // the whole recording: 10 s, under 1 MB
    let filled = 0;
    await new Promise((resolve) => {
      const node = new AudioWorkletNode(context, "unmute-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        processorOptions: {
          chunkSamples: RECORDING_SAMPLE_RATE / 10,
          targetRate: RECORDING_SAMPLE_RATE,
        },
      });
      const source = context.createMediaStreamSource(stream);
      node.port.onmessage = ({ data }) => {
        const take = Math.min(data.samples.length, wanted - filled);
        samples.set(data.samples.subarray(0, take), filled);
        filled += take;
        onProgress?.(Math.ceil((wanted - filled) / RECORDING_SAMPLE_RATE));
        if (filled >= wanted) {
          node.port.onmessage = null;
          source.disconnect();
          resolve();
        }
      };
      source.connect(node);
    });
    return encodeWav(samples, RECORDING_SAMPLE_RATE);
  } finally {
    for (const track of stream.getTracks()) track.stop();
    await context.close();
  }
}
