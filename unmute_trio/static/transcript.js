// The live transcript: user words from `conversation.item.input_audio_transcription.delta`,
// bot words from `response.text.delta` (timed to the voice), one block per turn.
//
// An interruption (`unmute.interrupted_by_vad`) marks the block of the reply being spoken, not
// the last block: when the user's first word interrupts the bot, the server sends that word
// before the interruption, so by then the last block is the user's.

export class Transcript {
  constructor(container) {
    this.container = container;
    this.last = null; // {role, element, text}
    this.botTurnPending = false; // response.created seen: the next bot word opens a new turn
    this.reply = null; // the block of the bot reply in progress, until it is interrupted or replaced
  }

  clear() {
    const hint = document.createElement("p");
    hint.className = "empty dim";
    hint.textContent = "Your words and the bot's appear here as they are spoken.";
    this.container.replaceChildren(hint);
    this.last = null;
    this.botTurnPending = false;
    this.reply = null;
  }

  userWord(word) {
    // The STT's first word is empty: it must not open an empty block, which would also split
    // the bot's greeting in two.
    if (!word.trim()) return;
    if (this.last?.role !== "user") this._open("user");
    this._append(word);
  }

  botTurnStarted() {
    this.botTurnPending = true;
    this.reply = null; // a new reply: the previous one can no longer be interrupted
  }

  botWord(word) {
    if (this.last?.role !== "assistant" || this.botTurnPending) this._open("assistant");
    this.botTurnPending = false;
    this.reply = this.last;
    this._append(word);
  }

  botInterrupted() {
    // Nothing to mark if the reply was interrupted before its first word was spoken.
    this.reply?.element.classList.add("interrupted");
    this.reply = null;
    this.botTurnPending = false;
  }

  /** Texts of all turns, for tests and debugging: [{role, text, interrupted}]. */
  turns() {
    return [...this.container.querySelectorAll(".turn")].map((el) => ({
      role: el.dataset.role,
      text: el.querySelector(".text").textContent,
      interrupted: el.classList.contains("interrupted"),
    }));
  }

  _open(role) {
    this.container.querySelector(".empty")?.remove();
    const element = document.createElement("div");
    element.className = `turn ${role}`;
    element.dataset.role = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Bot";
    const text = document.createElement("p");
    text.className = "text";
    element.append(who, text);
    this.container.append(element);
    this.last = { role, element, text };
  }

  _append(word) {
    const text = this.last.text;
    const words = word.trim();
    if (!words) return;
    text.textContent = text.textContent ? `${text.textContent} ${words}` : words;
    this.container.scrollTop = this.container.scrollHeight;
  }
}
