// One conversation: microphone and speakers, and the `/v1/realtime` WebSocket between them.
//
// Order of start (from a click, so that audio may start): audio contexts, microphone
// permission, worklets, then the socket. The microphone encoder starts only once the socket is
// open, so the first message is always the Ogg beginning-of-stream page and nothing is queued
// from an earlier connection (the Unmute frontend's library replayed such queues).

import { ENCODER_SAMPLE_RATE, MicrophoneStreamer, openMicrophone } from "./mic.js";
import { BotVoicePlayer, PLAYBACK_SAMPLE_RATE } from "./player.js";

// Bytes the socket may hold unsent before we give up: ~25 s of microphone pages. Beyond that
// the network cannot keep up with real time and the conversation is lost anyway.
const MAX_SEND_BACKLOG_BYTES = 256 * 1024;
const CAPTURE_WORKLET = new URL("capture-worklet.js", import.meta.url);

export function realtimeUrl(baseUrl) {
  const url = new URL("v1/realtime", baseUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function bytesToBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export class ConversationSession {
  /**
   * @param {string} baseUrl where the page was served from (ends with "/")
   * @param {object} config the `session` of session.update
   * @param {object} on handlers: event(e), stats(s), error(message), open(), closed({code, reason})
   */
  constructor(baseUrl, config, on, apiKey = "") {
    this.baseUrl = baseUrl;
    this.apiKey = apiKey;
    this.config = config;
    this.on = on;
    this.stopped = false;
    this.ws = null;
    this.stream = null;
    this.mic = null;
    this.player = null;
    this.pagesSent = 0;
    this.bytesSent = 0;
    // Created now, inside the click handler: browsers let a page start audio on a gesture.
    this.playbackContext = new AudioContext({
      sampleRate: PLAYBACK_SAMPLE_RATE,
      latencyHint: "interactive",
    });
    this.captureContext = new AudioContext({
      sampleRate: ENCODER_SAMPLE_RATE,
      latencyHint: "interactive",
    });
    // Failures surface later, as worklets that cannot load.
    this.playbackContext.resume().catch(() => {});
    this.captureContext.resume().catch(() => {});
  }

  async start() {
    let stream;
    try {
      stream = await openMicrophone();
    } catch (error) {
      throw new Error(`No microphone: ${error.message || error.name}`);
    }
    this.stream = stream;
    if (this.stopped) {
      this._stopStream();
      return;
    }
    await Promise.all([
      this.playbackContext.audioWorklet.addModule(new URL("playback-worklet.js", import.meta.url)),
      this.captureContext.audioWorklet.addModule(CAPTURE_WORKLET),
    ]);
    if (this.stopped) {
      this._stopStream(); // cancelled while the worklets loaded
      return;
    }
    const fail = (error) => this._fail(error.message || String(error));
    this.player = new BotVoicePlayer(this.playbackContext, (s) => this.on.stats(s), fail);
    this.mic = new MicrophoneStreamer(stream, this.captureContext, (p) => this._sendPage(p), fail);
    try {
      this.mic.attach();
    } catch (error) {
      if (error.name !== "NotSupportedError") throw error;
      // This browser cannot resample a microphone into a 24 kHz context (Firefox): capture at
      // the device's rate and let the worklet resample.
      await this.captureContext.close();
      this.captureContext = new AudioContext({ latencyHint: "interactive" });
      await this.captureContext.resume();
      await this.captureContext.audioWorklet.addModule(CAPTURE_WORKLET);
      this.mic = new MicrophoneStreamer(stream, this.captureContext, (p) => this._sendPage(p), fail);
      this.mic.attach();
    }
    if (this.stopped) {
      this._release();
      return;
    }
    // A browser cannot set headers on a WebSocket: the key travels as a subprotocol, the form
    // OpenAI's browser clients use (the server still answers with "realtime").
    const protocols = ["realtime"];
    if (this.apiKey) protocols.push(`openai-insecure-api-key.${this.apiKey}`);
    let ws;
    try {
      ws = new WebSocket(realtimeUrl(this.baseUrl), protocols);
    } catch (error) {
      this._release();
      if (error.name === "SyntaxError" && this.apiKey) {
        throw new Error("The API key has characters a browser cannot send; check it.");
      }
      throw error;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.stopped) return;
      this._send({ type: "session.update", session: this.config });
      this.mic.start();
      this.on.open();
    };
    ws.onmessage = (message) => this._onMessage(message.data);
    ws.onclose = (event) => {
      this._release();
      this.on.closed({ code: event.code, reason: event.reason });
    };
  }

  /** Change voice, instructions or recording consent; applies to the next reply. */
  updateConfig(config) {
    this.config = config;
    if (this.ws !== null && this.ws.readyState === WebSocket.OPEN) {
      this._send({ type: "session.update", session: config });
    }
  }

  micSettings() {
    return this.mic === null ? null : this.mic.trackSettings();
  }

  micLevel() {
    return this.mic === null ? 0 : this.mic.level;
  }

  stop() {
    if (this.ws !== null && this.ws.readyState <= WebSocket.OPEN) {
      this.ws.close(1000, "user disconnected");
    }
    this._release();
  }

  _onMessage(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      console.warn("not JSON from the server:", text);
      return;
    }
    // Audio is handled here, before the UI sees the event, so a barge-in silences the bot at
    // once whatever the UI does.
    if (event.type === "response.audio.delta") {
      try {
        this.player?.pushBase64(event.delta);
      } catch (error) {
        this._fail(`Bad audio from the server: ${error.message}`);
        return;
      }
    } else if (event.type === "unmute.interrupted_by_vad") {
      this.player?.interrupt();
    } else if (event.type === "response.audio.done") {
      this.player?.endOfTurn();
    }
    this.on.event(event);
  }

  _send(event) {
    this.ws.send(JSON.stringify(event));
  }

  _sendPage(page) {
    const ws = this.ws;
    if (ws === null || ws.readyState !== WebSocket.OPEN) return; // closing: nobody to hear it
    if (ws.bufferedAmount > MAX_SEND_BACKLOG_BYTES) {
      this._fail("The network is too slow to send the microphone in real time.");
      return;
    }
    this._send({ type: "input_audio_buffer.append", audio: bytesToBase64(page) });
    this.pagesSent += 1;
    this.bytesSent += page.length;
  }

  _fail(message) {
    if (this.stopped) return;
    this.on.error(message);
    this.stop();
  }

  _release() {
    if (this.stopped) return;
    this.stopped = true;
    this.mic?.stop();
    this._stopStream();
    this.player?.close();
    this.playbackContext.close().catch(() => {});
    this.captureContext.close().catch(() => {});
  }

  _stopStream() {
    for (const track of this.stream?.getTracks() ?? []) track.stop();
  }
}
