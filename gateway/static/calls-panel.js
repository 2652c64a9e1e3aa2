// The "Function calls" panel: one table row per call id, updated as the call progresses.
//
// Rows carry data-call-id, data-name, data-where and data-status attributes, so the state of a call can
// be read without parsing its text (the end-to-end tests do).
//
//   where:  "backend"               run by a backend worker (the gateway's BackendFunctionCall notices)
//           "browser-demo"          run in this page by the demo option
//           "browser-not-executed"  reached the page, which answered with an error instead of running it
//           "provider"              run by the provider itself (client_side: false): nothing to do here
//   status: "running", "ok", "error", "not-executed", "cancelled", "provider"

const WHERE_TEXT = {
  backend: "backend worker",
  "browser-demo": "browser (demo)",
  "browser-not-executed": "browser: not executed",
  provider: "provider (server-side)",
};

const STATUS_TEXT = {
  running: "running…",
  ok: "ok",
  error: "error",
  "not-executed": "not executed: answered with an error",
  cancelled: "cancelled",
  provider: "run by the provider",
};

export class CallsPanel {
  constructor(tbody, emptyHint) {
    this.tbody = tbody;
    this.emptyHint = emptyHint;
    this.calls = new Map(); // call id → record; kept for the test hooks
  }

  /** Create or update the record of call `id` with `fields`, then redraw its row. */
  update(id, fields) {
    const record = this.calls.get(id) || { id, name: "", arguments: "", where: "", worker: "", status: "" };
    Object.assign(record, fields);
    this.calls.set(id, record);
    this.render(record);
    return record;
  }

  render(record) {
    let row = this.tbody.querySelector(`tr[data-call-id="${CSS.escape(record.id)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.callId = record.id;
      for (const name of ["name", "arguments", "where", "status", "time"]) {
        const cell = document.createElement("td");
        cell.className = name;
        row.append(cell);
      }
      this.tbody.append(row);
      this.emptyHint.hidden = true;
    }
    row.dataset.name = record.name;
    row.dataset.where = record.where;
    row.dataset.status = record.status;
    const cell = (name) => row.querySelector(`td.${name}`);
    cell("name").textContent = record.name;
    cell("arguments").textContent = record.arguments || "{}";
    const whereText = WHERE_TEXT[record.where] || record.where;
    cell("where").textContent = record.worker ? `${whereText} ${record.worker}` : whereText;
    const statusText = STATUS_TEXT[record.status] || record.status;
    cell("status").textContent = record.detail ? `${statusText}: ${record.detail}` : statusText;
    cell("time").textContent = record.ms === undefined ? "" : formatMs(record.ms);
  }
}

function formatMs(ms) {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}
