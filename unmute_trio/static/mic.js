// Microphone → mono 24 kHz Opus (WebCodecs AudioEncoder, 20 ms packets) → Ogg pages of two
// packets (40 ms, like the Unmute frontend), each handed to `onPage` as it is finished.

import { GRANULE_RATE, OggOpusWriter } from "./ogg.js";

export const ENCODER_SAMPLE_RATE = 24000;
const FRAME_US = 20000; // 20 ms Opus packets
const CHUNK_SAMPLES = 960; // what the capture worklet posts: 40 ms at 24 kHz

// Passed to getUserMedia as `{audio: MIC_CONSTRAINTS}`. The Unmute frontend meant to ask for
// these but nested them one level too deep, so browsers applied their defaults instead.
// Echo cancellation keeps the bot's voice out of the microphone; noise suppression stays off
// because it smears speech for the speech-to-text model; the gain control evens out levels.
export const MIC_CONSTRAINTS = {
  echoCancellation: true,
  noiseSuppression: false,
  autoGainControl: true,
  channelCount: 1,
};

export const ENCODER_CONFIG = {
  codec: "opus",
  sampleRate: ENCODER_SAMPLE_RATE,
  numberOfChannels: 1,
  bitrate: 32000,
  // "audio", as the Unmute frontend configured its encoder (OPUS_APPLICATION_AUDIO).
  opus: { frameDuration: FRAME_US, application: "audio" },
};

/** Whether this browser can encode the microphone (WebCodecs with Opus). */
export async function encoderSupported() {
  if (typeof AudioEncoder === "undefined") return false;
  try {
    return (await AudioEncoder.isConfigSupported(ENCODER_CONFIG)).supported === true;
  } catch {
    return false;
  }
}

/** Ask for the microphone (the permission prompt happens here). */
export async function openMicrophone() {
  return navigator.mediaDevices.getUserMedia({ audio: MIC_CONSTRAINTS, video: false });
}

export class MicrophoneStreamer {
  /**
   * @param {MediaStream} stream from openMicrophone()
   * @param {AudioContext} context with capture-worklet.js loaded; best at ENCODER_SAMPLE_RATE
   *   (the browser resamples), else the worklet resamples
   * @param {(page: Uint8Array) => void} onPage called for every Ogg page, headers first
   * @param {(error: Error) => void} onError
   */
  constructor(stream, context, onPage, onError) {
    this.stream = stream;
    this.context = context;
    this.onPage = onPage;
    this.onError = onError;
    this.samplesCaptured = 0;
    this.pagesWritten = 0;
    this.level = 0; // peak of the last chunk, for a meter
    this.writer = new OggOpusWriter({ inputSampleRate: ENCODER_SAMPLE_RATE });
    this.encoder = null;
    this.source = null;
    this.node = null;
  }

  /** The settings the browser actually applied to the microphone track. */
  trackSettings() {
    const [track] = this.stream.getAudioTracks();
    return track ? track.getSettings() : null;
  }

  /**
   * Connect the microphone to the capture worklet (chunks are dropped until start()). Throws
   * NotSupportedError in browsers that cannot feed the microphone to a context running at
   * another rate than the device's: use a context at the default rate then.
   */
  attach() {
    this.source = this.context.createMediaStreamSource(this.stream);
    // No outputs: the node is still processed (an output-less AudioWorkletNode is always
    // pulled), and nothing of the microphone reaches the speakers.
    this.node = new AudioWorkletNode(this.context, "unmute-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { chunkSamples: CHUNK_SAMPLES, targetRate: ENCODER_SAMPLE_RATE },
    });
    this.node.port.onmessage = (event) => this._onChunk(event.data);
    this.source.connect(this.node);
  }

  /** Start encoding: the two header pages at once, then a page every 40 ms. */
  start() {
    this.encoder = new AudioEncoder({
      output: (chunk) => this._onPacket(chunk),
      error: (error) => this.onError(error),
    });
    this.encoder.configure(ENCODER_CONFIG);
    for (const page of this.writer.headerPages()) this._emit(page);
  }

  _onChunk({ samples, peak }) {
    if (this.encoder === null || this.encoder.state !== "configured") return;
    this.level = peak;
    const data = new AudioData({
      format: "f32",
      sampleRate: ENCODER_SAMPLE_RATE,
      numberOfFrames: samples.length,
      numberOfChannels: 1,
      timestamp: Math.round((this.samplesCaptured * 1e6) / ENCODER_SAMPLE_RATE),
      data: samples,
    });
    this.samplesCaptured += samples.length;
    this.encoder.encode(data);
    data.close();
  }

  _onPacket(chunk) {
    const packet = new Uint8Array(chunk.byteLength);
    chunk.copyTo(packet);
    const samples48k = Math.round(((chunk.duration ?? FRAME_US) * GRANULE_RATE) / 1e6);
    const page = this.writer.addPacket(packet, samples48k);
    if (page !== null) this._emit(page);
  }

  _emit(page) {
    this.pagesWritten += 1;
    this.onPage(page);
  }

  stop() {
    if (this.node !== null) {
      this.node.port.onmessage = null;
      this.node.disconnect();
    }
    if (this.source !== null) this.source.disconnect();
    if (this.encoder !== null && this.encoder.state !== "closed") this.encoder.close();
    this.encoder = null;
    for (const track of this.stream.getTracks()) track.stop();
  }
}
