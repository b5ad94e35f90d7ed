// AudioWorklet processor that plays the bot's voice from a jitter buffer.
//
// Messages in: {type: "push", samples: Float32Array} (at the context's rate), {type: "end"}
// (the turn's audio is complete), {type: "flush"} (barge-in: drop everything now).
// Messages out: {type: "stats", ...} about every 100 ms and right after each flush, with the
// buffer's counters (nonSilentSamples tells that audio really reached the output) and the
// output level of the last period for a meter.
import { JitterBuffer } from "./jitter-buffer.js";

const REPORT_EVERY_S = 0.1;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buffer = new JitterBuffer({ sampleRate });
    this.reportEvery = Math.round(REPORT_EVERY_S * sampleRate);
    this.sinceReport = 0;
    this.peak = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    if (message.type === "push") {
      this.buffer.push(message.samples);
    } else if (message.type === "end") {
      this.buffer.markEnd();
    } else if (message.type === "flush") {
      this.buffer.flush();
      this.report();
    }
  }

  report() {
    this.port.postMessage({
      type: "stats",
      ...this.buffer.stats,
      bufferedSamples: this.buffer.buffered,
      sampleRate,
      level: this.peak,
    });
    this.sinceReport = 0;
    this.peak = 0;
  }

  process(_inputs, outputs) {
    const channels = outputs[0];
    const first = channels[0];
    this.buffer.render(first);
    for (let c = 1; c < channels.length; c++) channels[c].set(first);
    for (let i = 0; i < first.length; i++) {
      const v = Math.abs(first[i]);
      if (v > this.peak) this.peak = v;
    }
    this.sinceReport += first.length;
    if (this.sinceReport >= this.reportEvery) this.report();
    return true;
  }
}

registerProcessor("unmute-playback", PlaybackProcessor);
