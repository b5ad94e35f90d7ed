// The bot's voice: base64 Ogg/Opus from `response.audio.delta` → Ogg packets → WebCodecs
// AudioDecoder → the playback AudioWorklet (jitter buffer) → speakers.

import { isOpusTags, OggPacketReader, parseOpusHead } from "./ogg.js";

// Opus decodes natively at 48 kHz, and browsers' AudioDecoder hands out 48 kHz whatever rate
// is asked for; a 48 kHz context then needs no resampling.
export const PLAYBACK_SAMPLE_RATE = 48000;

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Linear resampling; only used if a browser's decoder picks another rate than the context. */
function resample(samples, fromRate, toRate) {
  if (fromRate === toRate) return samples;
  const out = new Float32Array(Math.round((samples.length * toRate) / fromRate));
  const step = fromRate / toRate;
  for (let i = 0; i < out.length; i++) {
    const x = i * step;
    const j = Math.floor(x);
    const a = samples[j] ?? 0;
    const b = samples[j + 1] ?? a;
    out[i] = a + (b - a) * (x - j);
  }
  return out;
}

export class BotVoicePlayer {
  /**
   * @param {AudioContext} context with playback-worklet.js loaded
   * @param {(stats: object) => void} onStats the worklet's counters, about every 100 ms
   * @param {(error: Error) => void} onError
   */
  constructor(context, onStats, onError) {
    this.context = context;
    this.onError = onError;
    this.reader = new OggPacketReader();
    this.decoder = null;
    this.skipLeft = 0; // pre-skip samples (decoder warm-up) still to drop, at the output rate
    this.preSkip48k = 0;
    this.timestampUs = 0;
    this.packetsDecoded = 0;
    this.node = new AudioWorkletNode(context, "unmute-playback", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
    });
    this.node.port.onmessage = (event) => onStats(event.data);
    this.node.connect(context.destination);
  }

  /** The base64 `delta` of one response.audio.delta. */
  pushBase64(delta) {
    for (const { data } of this.reader.push(base64ToBytes(delta))) this._onPacket(data);
  }

  _onPacket(packet) {
    const head = parseOpusHead(packet);
    if (head !== null) {
      // A new stream: start a fresh decoder (the server uses one stream per connection).
      this._configure(head.preSkip);
      return;
    }
    if (isOpusTags(packet) || this.decoder === null) return;
    this.decoder.decode(
      new EncodedAudioChunk({ type: "key", timestamp: this.timestampUs, data: packet }),
    );
    this.timestampUs += 20000; // informative only; outputs are played in order
  }

  _configure(preSkip48k) {
    if (this.decoder !== null && this.decoder.state !== "closed") this.decoder.close();
    this.decoder = new AudioDecoder({
      output: (audio) => this._onAudio(audio),
      error: (error) => this.onError(error),
    });
    this.decoder.configure({
      codec: "opus",
      sampleRate: PLAYBACK_SAMPLE_RATE,
      numberOfChannels: 1,
    });
    this.preSkip48k = preSkip48k;
    this.skipLeft = -1; // computed from the first output's rate
  }

  _onAudio(audio) {
    try {
      let samples = new Float32Array(audio.numberOfFrames);
      audio.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
      if (this.skipLeft < 0) {
        this.skipLeft = Math.round((this.preSkip48k * audio.sampleRate) / 48000);
      }
      if (this.skipLeft > 0) {
        const skip = Math.min(this.skipLeft, samples.length);
        samples = samples.slice(skip);
        this.skipLeft -= skip;
      }
      samples = resample(samples, audio.sampleRate, this.context.sampleRate);
      this.packetsDecoded += 1;
      if (samples.length > 0) {
        this.node.port.postMessage({ type: "push", samples }, [samples.buffer]);
      }
    } finally {
      audio.close();
    }
  }

  /** `response.audio.done`: let the tail of the turn play without waiting for more. */
  async endOfTurn() {
    if (this.decoder !== null && this.decoder.state === "configured") {
      try {
        await this.decoder.flush();
      } catch {
        return; // a barge-in reset the decoder meanwhile: nothing left to play
      }
    }
    this.node.port.postMessage({ type: "end" });
  }

  /** `unmute.interrupted_by_vad`: silence the bot now, including audio still being decoded. */
  interrupt() {
    if (this.decoder !== null && this.decoder.state === "configured") {
      this.decoder.reset(); // drops queued packets and outputs not yet delivered
      this.decoder.configure({
        codec: "opus",
        sampleRate: PLAYBACK_SAMPLE_RATE,
        numberOfChannels: 1,
      });
    }
    this.node.port.postMessage({ type: "flush" });
  }

  close() {
    this.node.port.onmessage = null;
    this.node.disconnect();
    if (this.decoder !== null && this.decoder.state !== "closed") this.decoder.close();
  }
}
