// The playback jitter buffer, kept free of AudioWorklet globals so that it can run (and be
// tested) anywhere. The playback worklet owns one and calls render() once per render quantum.
//
// Policy: wait until `startS` of audio is buffered (absorbs network jitter), then play; on an
// underrun go back to waiting. At the end of a bot turn, markEnd() lets the last few
// milliseconds play without waiting for more. flush() drops everything at once (barge-in), with
// a fade of a millisecond or so instead of a click.

// Below this a sample counts as silence (-80 dBFS): Opus-coded silence decodes to tiny values.
export const SILENCE_THRESHOLD = 1e-4;

export class JitterBuffer {
  constructor({ sampleRate, startS = 0.08, maxS = 10, fadeS = 0.0015 }) {
    this.startSamples = Math.round(startS * sampleRate);
    // Bound on buffered audio: the server sends at most ~320 ms ahead of real time, so 10 s is
    // only reached if playback is stalled; the oldest audio is dropped beyond it.
    this.maxSamples = Math.round(maxS * sampleRate);
    this.fadeSamples = Math.max(1, Math.round(fadeS * sampleRate));
    this.chunks = []; // Float32Arrays waiting to be played
    this.readOffset = 0; // samples of chunks[0] already played
    this.buffered = 0;
    this.playing = false;
    this.ending = false; // end of turn: play the rest without waiting for startSamples
    this.fadeInLeft = 0;
    this.stats = {
      pushedSamples: 0,
      renderedSamples: 0, // samples of bot audio written to the output
      nonSilentSamples: 0, // of those, the ones above SILENCE_THRESHOLD
      underruns: 0,
      overflowDroppedSamples: 0,
      flushes: 0,
      flushedSamples: 0,
    };
  }

  push(samples) {
    if (samples.length === 0) return;
    this.chunks.push(samples);
    this.buffered += samples.length;
    this.stats.pushedSamples += samples.length;
    if (this.buffered > this.maxSamples) {
      const dropped = this._drop(this.buffered - this.maxSamples);
      this.stats.overflowDroppedSamples += dropped;
    }
  }

  markEnd() {
    this.ending = true;
  }

  /** Drop all buffered audio now; returns how many samples were dropped. */
  flush() {
    const keep = this.playing ? Math.min(this.fadeSamples, this.buffered) : 0;
    const tail = new Float32Array(keep);
    this._read(tail, 0, keep);
    const dropped = this.buffered;
    this._drop(this.buffered);
    for (let i = 0; i < keep; i++) tail[i] *= 1 - (i + 1) / keep; // fade out to zero
    this.stats.flushes += 1;
    this.stats.flushedSamples += dropped;
    if (keep > 0) {
      this.chunks.push(tail);
      this.buffered = keep;
      this.ending = true; // play the fade, then wait for new audio
    } else {
      this.playing = false;
      this.ending = false;
    }
    return dropped;
  }

  /** Fill `out` (a Float32Array) with the next samples, or silence. */
  render(out) {
    out.fill(0);
    if (!this.playing) {
      if (this.buffered === 0) return;
      if (this.buffered < this.startSamples && !this.ending) return;
      this.playing = true;
      this.fadeInLeft = this.fadeSamples;
    }
    const n = Math.min(out.length, this.buffered);
    this._read(out, 0, n);
    for (let i = 0; i < n && this.fadeInLeft > 0; i++, this.fadeInLeft--) {
      out[i] *= 1 - this.fadeInLeft / (this.fadeSamples + 1);
    }
    this.stats.renderedSamples += n;
    for (let i = 0; i < n; i++) {
      if (Math.abs(out[i]) > SILENCE_THRESHOLD) this.stats.nonSilentSamples += 1;
    }
    if (this.buffered === 0) {
      if (!this.ending) this.stats.underruns += 1;
      this.playing = false;
      this.ending = false;
    }
  }

  _read(out, at, count) {
    let written = 0;
    while (written < count) {
      const chunk = this.chunks[0];
      const take = Math.min(count - written, chunk.length - this.readOffset);
      out.set(chunk.subarray(this.readOffset, this.readOffset + take), at + written);
      written += take;
      this.readOffset += take;
      if (this.readOffset === chunk.length) {
        this.chunks.shift();
        this.readOffset = 0;
      }
    }
    this.buffered -= count;
  }

  _drop(count) {
    let left = count;
    while (left > 0 && this.chunks.length > 0) {
      const available = this.chunks[0].length - this.readOffset;
      if (available <= left) {
        this.chunks.shift();
        this.readOffset = 0;
        left -= available;
      } else {
        this.readOffset += left;
        left = 0;
      }
    }
    const dropped = count - left;
    this.buffered -= dropped;
    return dropped;
  }
}
