// DEMO ONLY: functions this page runs in the browser when "run client-side functions in the browser" is on.
//
// The point of the gateway is that real functions run on backend workers, where the secrets and the data
// are, and the browser never executes function logic. These two exist to show the other case: functions
// the backend does not own reach the client as FunctionCallRequest, and only a client that chose to run
// them answers with a result. They touch nothing but this page.

/** Definitions declared in Settings (agent.think.functions) when the demo option is on. */
export const DEMO_FUNCTIONS = [
  {
    name: "get_browser_time",
    description: "The current time and timezone of the user's browser",
    parameters: { type: "object", properties: {} },
  },
  {
    name: "toggle_theme",
    description: "Switch this page between light and dark theme",
    parameters: {
      type: "object",
      properties: {
        theme: { type: "string", enum: ["light", "dark"], description: "Theme to switch to; omit to toggle" },
      },
    },
  },
];

const IMPLEMENTATIONS = {
  get_browser_time() {
    const now = new Date();
    return {
      time: now.toLocaleTimeString([], { hour12: false }),
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
      iso: now.toISOString(),
    };
  },

  toggle_theme({ theme } = {}) {
    const root = document.documentElement;
    if (theme !== undefined && theme !== "light" && theme !== "dark") {
      throw new Error(`theme must be "light" or "dark", not ${JSON.stringify(theme)}`);
    }
    root.dataset.theme = theme || (root.dataset.theme === "dark" ? "light" : "dark");
    return { theme: root.dataset.theme };
  },
};

export function isDemoFunction(name) {
  return Object.hasOwn(IMPLEMENTATIONS, name);
}

/**
 * Run a demo function with the provider's arguments (a JSON string).
 * Returns the FunctionCallResponse content: a string, as the protocol requires. Failures become
 * {"error": "..."} text the agent can read, never an exception.
 */
export function runDemoFunction(name, argumentsJson) {
  try {
    const args = argumentsJson ? JSON.parse(argumentsJson) : {};
    return { ok: true, content: JSON.stringify(IMPLEMENTATIONS[name](args)) };
  } catch (error) {
    return { ok: false, content: JSON.stringify({ error: `${name} failed: ${error.message}` }) };
  }
}
