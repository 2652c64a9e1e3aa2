// The test page: wires the connection, microphone, player and function-call panel to the DOM.
//
// What the page does with function calls, by design:
// - Calls the backend owns never reach the page as FunctionCallRequest: the gateway runs them on workers and
//   sends BackendFunctionCall notices ("started", any "progress", then "finished" or "cancelled"), which the panel
//   shows.
// - Other calls arrive as FunctionCallRequest. The page runs none by default: it answers each with an error
//   ("not executed in the browser") so the conversation does not hang waiting for it. Only with the
//   "demo only" option does it run its two demo functions (demo-functions.js) and answer with their result.

import { AgentConnection } from "./agent-connection.js";
import { CallsPanel } from "./calls-panel.js";
import { DEMO_FUNCTIONS, isDemoFunction, runDemoFunction } from "./demo-functions.js";
import { Microphone } from "./microphone.js";
import { Player } from "./player.js";

// The audio formats declared in Settings. The microphone is resampled to INPUT_RATE; the agent's speech
// arrives at OUTPUT_RATE. Both are set explicitly: providers disagree on the default input rate.
const INPUT_RATE = 16000;
const OUTPUT_RATE = 24000;
const LOG_LIMIT = 300; // protocol log entries kept

const CLOSE_CODES = {
  1000: "normal closure",
  1001: "going away: the gateway is shutting down or restarting",
  1006: "connection lost without a close frame",
  1008: "policy violation",
  1011: "internal error on the server",
};

const $ = (id) => document.getElementById(id);
const ui = {
  url: $("gateway-url"),
  token: $("gateway-token"),
  connect: $("connect"),
  disconnect: $("disconnect"),
  mic: $("mic"),
  status: $("status"),
  demo: $("demo-functions"),
  notices: $("notices"),
  conversation: $("conversation"),
  sayForm: $("say"),
  sayText: $("say-text"),
  saySend: $("say-send"),
  audioStats: $("audio-stats"),
  log: $("log"),
};

const connection = new AgentConnection();
const calls = new CallsPanel($("calls"), $("calls-empty"));
const player = new Player(OUTPUT_RATE);
const micSent = { frames: 0, bytes: 0 }; // microphone frames that actually went to the gateway
const microphone = new Microphone(INPUT_RATE, (frame) => {
  if (connection.sendAudio(frame)) {
    micSent.frames += 1;
    micSent.bytes += frame.byteLength;
    logFrame("→", "audio", frame.byteLength);
  }
  showAudioStats();
});
let demoOn = false; // the demo option as it was at Connect: it decides what this conversation's Settings declared

// --- Settings -----------------------------------------------------------------------------------------------

/** The first message of every conversation. Backend functions are not listed: the gateway adds them. */
function buildSettings() {
  const think = {
    provider: { type: "open_ai", model: "gpt-4o-mini" },
    prompt: "You are a helpful voice assistant. Use the available functions when they help. Keep answers short.",
  };
  if (demoOn) think.functions = DEMO_FUNCTIONS;
  return {
    type: "Settings",
    audio: {
      input: { encoding: "linear16", sample_rate: INPUT_RATE },
      output: { encoding: "linear16", sample_rate: OUTPUT_RATE, container: "none" },
    },
    agent: {
      listen: { provider: { type: "deepgram", model: "nova-3" } },
      think,
      speak: { provider: { type: "deepgram", model: "aura-2-thalia-en" } },
      greeting: "Hello! Ask me about the weather in a city, the time somewhere, or your notes.",
    },
  };
}

function defaultGatewayUrl() {
  if (location.protocol !== "http:" && location.protocol !== "https:") return "ws://127.0.0.1:8080/v1/agent/converse";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/agent/converse`;
}

// --- connection lifecycle -----------------------------------------------------------------------------------

function connect() {
  clearNotices();
  demoOn = ui.demo.checked;
  player.unlock(); // inside the click: browsers allow audio output only after a user gesture
  setStatus("connecting", "Connecting…");
  setConnectedControls(true);
  connection.connect(ui.url.value.trim(), buildSettings(), ui.token.value.trim());
}

async function disconnect() {
  await stopMicrophone();
  connection.close();
}

connection.addEventListener("open", () => {
  setStatus("connecting", "Connected, applying settings…");
  logMessage("→", connection.sent[connection.sent.length - 1]);
});

connection.addEventListener("close", async (event) => {
  const { code, reason, opened, byUser } = event.detail;
  await stopMicrophone();
  player.stop();
  setConnectedControls(false);
  setReadyControls(false);
  if (byUser) {
    setStatus("disconnected", "Disconnected");
    addEvent("Disconnected.");
    return;
  }
  const url = ui.url.value.trim();
  if (!opened) {
    setStatus("failed", "Connection failed");
    // Browsers hide the HTTP status of a refused handshake (a 401 for a bad token looks like no server).
    const hint = "Is it running and reachable, and is the token right if it requires one?";
    showNotice("error", `Could not connect to the gateway at ${url}. ${hint}`);
    return;
  }
  const why = CLOSE_CODES[code] ? `: ${CLOSE_CODES[code]}` : "";
  const because = reason ? `, reason: ${reason}` : "";
  setStatus("failed", "Connection closed");
  showNotice(
    "error",
    `The connection to the gateway closed (code ${code}${why}${because}). Press Connect to start a new conversation.`,
  );
  addEvent(`Connection closed (code ${code}).`);
});

connection.addEventListener("audio", (event) => {
  player.play(event.detail);
  logFrame("←", "audio", event.detail.byteLength);
  showAudioStats();
});

connection.addEventListener("message", (event) => {
  const message = event.detail;
  logMessage("←", message);
  const handler = HANDLERS[message.type];
  if (handler) handler(message);
});

// --- messages from the gateway and the provider -----------------------------------------------------------

const HANDLERS = {
  Welcome(message) {
    if (message.simulated) addEvent("Connected to the simulated agent (offline, no provider account).");
  },
  SettingsApplied() {
    setStatus("ready", "Connected");
    setReadyControls(true);
  },
  ConversationText(message) {
    addTurn(message.role, message.content);
  },
  AgentThinking(message) {
    if (message.content) addEvent(`Agent thinking: ${message.content}`);
  },
  UserStartedSpeaking() {
    player.stop(); // barge-in: the agent stops talking when the user does
  },
  BackendFunctionCall(notice) {
    // Sent by the gateway about the calls it runs on backend workers (unknown to other clients, ignored there).
    if (notice.status === "started") {
      calls.update(notice.id, { name: notice.name, arguments: notice.arguments, where: "backend", status: "running" });
    } else if (notice.status === "finished") {
      calls.update(notice.id, {
        name: notice.name,
        where: "backend",
        worker: notice.worker || "",
        status: notice.ok ? "ok" : "error",
        detail: notice.ok ? "" : notice.error || "",
        ms: notice.duration_ms,
      });
    } else if (notice.status === "progress") {
      // A worker's report or the filler the agent said: shown until the call finishes.
      calls.update(notice.id, { name: notice.name, where: "backend", status: "running", detail: notice.message || "" });
    } else if (notice.status === "cancelled") {
      calls.update(notice.id, { name: notice.name, where: "backend", status: "cancelled", detail: "" });
    }
  },
  FunctionCallRequest(message) {
    for (const call of message.functions || []) handleClientCall(call);
  },
  FunctionCallCancelled(message) {
    for (const call of message.functions || []) calls.update(call.id, { name: call.name, status: "cancelled" });
  },
  Error(message) {
    showNotice("error", `Error from the gateway or provider (${message.code || "no code"}): ${describe(message)}`);
  },
  Warning(message) {
    showNotice("warning", `Warning from the gateway or provider (${message.code || "no code"}): ${describe(message)}`);
  },
  InjectionRefused(message) {
    showNotice("warning", `The agent refused the message: ${describe(message)}`);
  },
};

function describe(message) {
  return message.description || message.message || JSON.stringify(message);
}

/** A call the backend does not own. Every client-side call gets exactly one FunctionCallResponse. */
function handleClientCall(call) {
  const fields = { name: call.name, arguments: call.arguments };
  if (call.client_side === false) {
    calls.update(call.id, { ...fields, where: "provider", status: "provider" }); // the provider runs it
    return;
  }
  if (demoOn && isDemoFunction(call.name)) {
    calls.update(call.id, { ...fields, where: "browser-demo", status: "running" });
    const started = performance.now();
    const result = runDemoFunction(call.name, call.arguments);
    const ms = performance.now() - started;
    respond(call, result.content);
    calls.update(call.id, { status: result.ok ? "ok" : "error", detail: result.ok ? "" : result.content, ms });
    return;
  }
  // Not run here. An error answer (a valid answer) tells the agent, so it does not wait forever.
  const error = `Function ${call.name} is not executed in the browser: this page runs no function logic.`;
  respond(call, JSON.stringify({ error }));
  calls.update(call.id, { ...fields, where: "browser-not-executed", status: "not-executed" });
}

function respond(call, content) {
  const response = { type: "FunctionCallResponse", id: call.id, name: call.name, content };
  if (connection.send(response)) logMessage("→", response);
}

// --- microphone -------------------------------------------------------------------------------------------

async function toggleMicrophone() {
  if (microphone.running) {
    await stopMicrophone();
    return;
  }
  ui.mic.disabled = true;
  try {
    await microphone.start();
    ui.mic.textContent = "Stop microphone";
    ui.mic.setAttribute("aria-pressed", "true");
  } catch (error) {
    showNotice("error", `Microphone unavailable (${error.name}): ${error.message}`);
  } finally {
    ui.mic.disabled = !connection.ready;
  }
  showAudioStats();
}

async function stopMicrophone() {
  await microphone.stop();
  ui.mic.textContent = "Start microphone";
  ui.mic.setAttribute("aria-pressed", "false");
  showAudioStats();
}

function showAudioStats() {
  const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;
  const mic = microphone.running
    ? `Microphone on: ${micSent.frames} frames (${kb(micSent.bytes)}) sent as PCM16 at ${INPUT_RATE} Hz.`
    : `Microphone off (${micSent.frames} frames sent).`;
  const agent = player.frames
    ? `Agent audio: ${player.frames} frames (${kb(player.bytes)}) received, ` +
      `${player.scheduledSeconds.toFixed(2)} s played at ${OUTPUT_RATE} Hz.`
    : "Agent audio: none received.";
  ui.audioStats.textContent = `${mic} ${agent}`;
}

// --- page rendering ---------------------------------------------------------------------------------------

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

/** Controls that depend on whether a socket exists (connecting or open). */
function setConnectedControls(connected) {
  ui.connect.disabled = connected;
  ui.disconnect.disabled = !connected;
  ui.url.disabled = connected;
  ui.token.disabled = connected;
  ui.demo.disabled = connected; // Settings are sent once per conversation: the option applies at Connect
}

/** Controls usable only after SettingsApplied (text and audio before it are fatal protocol errors). */
function setReadyControls(ready) {
  ui.sayText.disabled = !ready;
  ui.saySend.disabled = !ready;
  ui.mic.disabled = !ready;
  if (ready) ui.sayText.focus();
}

function showNotice(kind, text) {
  const notice = document.createElement("div");
  notice.className = `notice ${kind}`;
  notice.setAttribute("role", kind === "error" ? "alert" : "status");
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.title = "Dismiss";
  dismiss.setAttribute("aria-label", "Dismiss");
  dismiss.textContent = "×";
  dismiss.addEventListener("click", () => notice.remove());
  notice.append(body, dismiss);
  ui.notices.append(notice);
}

function clearNotices() {
  ui.notices.replaceChildren();
}

function addTurn(role, text) {
  const item = document.createElement("li");
  item.className = role === "user" ? "user" : "assistant";
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role === "user" ? "You:" : "Agent:";
  item.append(label, document.createTextNode(text));
  appendToConversation(item);
}

function addEvent(text) {
  const item = document.createElement("li");
  item.className = "event";
  item.textContent = text;
  appendToConversation(item);
}

function appendToConversation(item) {
  ui.conversation.append(item);
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

/** One line per JSON message, with the fields that tell messages of a type apart; the full JSON on hover. */
function logMessage(direction, message) {
  const names = (functions) => (functions || []).map((f) => f.name).join(", ");
  const details = {
    ConversationText: message.role,
    FunctionCallRequest: names(message.functions),
    FunctionCallCancelled: names(message.functions),
    FunctionCallResponse: message.name,
    BackendFunctionCall: `${message.name} ${message.status}`,
    Error: message.code,
    Warning: message.code,
  };
  const detail = details[message.type];
  appendLog(`${direction} ${message.type}${detail ? ` (${detail})` : ""}`, JSON.stringify(message));
}

/** Binary frames in a row are collapsed into one line: "← audio ×10 (9600 bytes)". */
function logFrame(direction, kind, bytes) {
  const last = ui.log.lastElementChild;
  if (last && last.dataset.kind === `${direction}${kind}`) {
    last.dataset.count = Number(last.dataset.count) + 1;
    last.dataset.bytes = Number(last.dataset.bytes) + bytes;
  } else {
    const item = appendLog("", "");
    item.dataset.kind = `${direction}${kind}`;
    item.dataset.count = 1;
    item.dataset.bytes = bytes;
  }
  const item = ui.log.lastElementChild;
  item.textContent = `${direction} ${kind} ×${item.dataset.count} (${item.dataset.bytes} bytes)`;
}

function appendLog(text, title) {
  const item = document.createElement("li");
  item.textContent = text;
  item.title = title;
  ui.log.append(item);
  while (ui.log.childElementCount > LOG_LIMIT) ui.log.firstElementChild.remove();
  return item;
}

// --- start ------------------------------------------------------------------------------------------------

// ?gateway=ws://… and ?token=… in the page's address prefill the fields (handy for links and bookmarks).
const pageParams = new URLSearchParams(location.search);
ui.url.value = pageParams.get("gateway") || defaultGatewayUrl();
ui.token.value = pageParams.get("token") || "";
ui.connect.addEventListener("click", connect);
ui.disconnect.addEventListener("click", disconnect);
ui.mic.addEventListener("click", toggleMicrophone);
ui.sayForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = ui.sayText.value.trim();
  if (!content) return;
  const message = { type: "InjectUserMessage", content };
  if (connection.send(message)) logMessage("→", message);
  ui.sayText.value = "";
});

// Small hooks for the end-to-end tests and for poking at the protocol from the devtools console.
window.vfg = {
  get messages() {
    return connection.received;
  },
  get sent() {
    return connection.sent;
  },
  send(message) {
    const sent = connection.send(message);
    if (sent) logMessage("→", message);
    return sent;
  },
  calls: calls.calls,
  audio: { microphone, micSent, player },
};
