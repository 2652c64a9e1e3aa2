// The WebSocket to the gateway, speaking the Deepgram Voice Agent protocol (API v1):
// JSON control messages in text frames, audio in binary frames, in both directions.
//
// Events (an EventTarget, so the page wires it like any DOM object):
//   "open"     the socket is open; Settings has just been sent (it must be the first message)
//   "message"  detail: a parsed JSON message from the gateway or the provider
//   "audio"    detail: an ArrayBuffer of agent speech (PCM16 at the declared output rate)
//   "close"    detail: {code, reason, opened, byUser}; `opened` is false when the connection never opened

const KEEPALIVE_MS = 5000; // the provider closes a connection that sends nothing for ~10 s

export class AgentConnection extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.ready = false; // true once the provider answered SettingsApplied: audio may flow from then on
    this.received = []; // every JSON message received, for the test hooks and the protocol log
    this.sent = []; // every JSON message sent
    this.lastSend = 0;
    this.state = null;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Open the socket and send `settings` as soon as it opens (the protocol requires Settings first).
   * A `token` travels as the subprotocol pair ["token", token]: browsers cannot set an Authorization header,
   * and this is how Deepgram's own browser clients authenticate.
   */
  connect(url, settings, token = "") {
    const ws = token ? new WebSocket(url, ["token", token]) : new WebSocket(url);
    ws.binaryType = "arraybuffer"; // agent audio as ArrayBuffer, ready for a DataView
    this.ws = ws;
    this.ready = false;
    // Per socket, so a late close event of an old socket cannot be mistaken for the new one's.
    const state = { opened: false, byUser: false, keepAliveTimer: null };
    this.state = state;

    ws.addEventListener("open", () => {
      state.opened = true;
      this.send(settings);
      state.keepAliveTimer = setInterval(() => this.keepAlive(), 1000);
      this.dispatchEvent(new Event("open"));
    });
    ws.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        this.dispatchEvent(new CustomEvent("audio", { detail: event.data }));
        return;
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        message = { type: "(not JSON)", raw: event.data };
      }
      this.received.push(message);
      if (message.type === "SettingsApplied") this.ready = true;
      this.dispatchEvent(new CustomEvent("message", { detail: message }));
    });
    // A failed connection fires "error" then "close"; the close event has everything the page needs to say.
    ws.addEventListener("close", (event) => {
      clearInterval(state.keepAliveTimer);
      this.ready = false;
      if (this.ws === ws) this.ws = null;
      const detail = { code: event.code, reason: event.reason, opened: state.opened, byUser: state.byUser };
      this.dispatchEvent(new CustomEvent("close", { detail }));
    });
  }

  /** Send a JSON message. Returns false when the socket is not open (nothing was sent). */
  send(message) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(message));
    this.sent.push(message);
    this.lastSend = performance.now();
    return true;
  }

  /** Send one binary audio frame. Audio before SettingsApplied is a fatal protocol error, so it is dropped. */
  sendAudio(buffer) {
    if (!this.isOpen || !this.ready) return false;
    this.ws.send(buffer);
    this.lastSend = performance.now();
    return true;
  }

  /** Keep an idle conversation open: a KeepAlive after KEEPALIVE_MS without anything sent (no reply comes). */
  keepAlive() {
    if (this.ready && performance.now() - this.lastSend >= KEEPALIVE_MS) this.send({ type: "KeepAlive" });
  }

  /** Close on the user's request (code 1000): the page reports it as a normal disconnect, not a failure. */
  close() {
    if (!this.ws) return;
    this.state.byUser = true;
    this.ws.close(1000, "client disconnected");
  }
}
