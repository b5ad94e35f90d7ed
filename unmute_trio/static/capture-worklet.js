// AudioWorklet processor that cuts the microphone into fixed chunks for the encoder.
//
// Normally the context already runs at the encoder's rate (24 kHz) and the browser resamples the
// microphone. Browsers that cannot connect a microphone to a context at another rate than the
// device's (Firefox) get a context at the device's rate, and this processor resamples to
// `targetRate` itself: a moving average over the rate ratio (a crude anti-aliasing filter, fine
// for speech), then linear interpolation.
//
// Each chunk of `chunkSamples` mono samples is posted (transferred) to the main thread with its
// peak level; at most one chunk is held here.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { chunkSamples, targetRate = sampleRate } = options.processorOptions;
    this.chunkSamples = chunkSamples;
    this.chunk = new Float32Array(chunkSamples);
    this.filled = 0;
    this.ratio = sampleRate / targetRate; // input samples per output sample
    this.window = new Float32Array(Math.max(1, Math.round(this.ratio))); // moving average
    this.windowAt = 0;
    this.windowSum = 0;
    this.previous = 0; // last filtered input sample
    this.position = 0; // where the next output falls, in input samples after `previous`
  }

  process(inputs) {
    const input = inputs[0];
    if (input.length === 0) return true; // no source connected yet
    const n = input[0].length;
    for (let i = 0; i < n; i++) {
      let v = 0;
      for (let c = 0; c < input.length; c++) v += input[c][i];
      v /= input.length; // mix down to mono
      if (this.ratio === 1) {
        this.emit(v);
        continue;
      }
      this.windowSum += v - this.window[this.windowAt];
      this.window[this.windowAt] = v;
      this.windowAt = (this.windowAt + 1) % this.window.length;
      const filtered = this.windowSum / this.window.length;
      while (this.position < 1) {
        this.emit(this.previous + (filtered - this.previous) * this.position);
        this.position += this.ratio;
      }
      this.position -= 1;
      this.previous = filtered;
    }
    return true;
  }

  emit(sample) {
    this.chunk[this.filled++] = sample;
    if (this.filled === this.chunkSamples) {
      let peak = 0;
      for (const s of this.chunk) peak = Math.max(peak, Math.abs(s));
      this.port.postMessage({ samples: this.chunk, peak }, [this.chunk.buffer]);
      this.chunk = new Float32Array(this.chunkSamples);
      this.filled = 0;
    }
  }
}

registerProcessor("unmute-capture", CaptureProcessor);
