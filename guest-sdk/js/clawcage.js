// ClawCage agents in JavaScript: thin wrappers over the `clawcage:agent@0.2.0`
// world (wit/agent.wit), for componentize-js. Import it relatively
// (`import { defineHandler, Model } from './clawcage.js'`); `clawcage new
// --lang js` copies it into the project.
//
// - `defineHandler(fn)` makes the `handler` export: `fn(event)` gets the
//   event with its payload parsed, returns a string (or anything, sent as
//   JSON), and may throw: every error reaches the host as the agent's error
//   text, never as a crash.
// - `Model.open(binding).complete({...})`, `Tool.open(name).call(action,
//   input)`: capabilities the operator granted; a refusal throws a
//   `CapabilityError` whose `kind` is the WIT error case (`not-granted`,
//   `rate-limited`, …).
// - `log.info(...)` and friends.
//
// 64-bit counts (token usage) come back as numbers, not BigInts. Types for
// all of it are in `clawcage.d.ts` (TypeScript agents import them from
// `@clawcage/sdk`); the WIT's own are generated into `types/`.

import { log as witLog } from 'clawcage:agent/log@0.2.0';
import { Model as WitModel } from 'clawcage:agent/inference@0.2.0';
import { Tool as WitTool } from 'clawcage:agent/tools@0.2.0';

/** Log lines, by level. */
export const log = Object.fromEntries(
  ['trace', 'debug', 'info', 'warn', 'error'].map((level) => [level, (message) => witLog(level, String(message))]),
);

/** A capability refused: `kind` is the WIT error case, `detail` its value. */
export class CapabilityError extends Error {
  constructor(where, payload) {
    const kind = payload?.tag ?? 'error';
    const detail = payload?.val;
    super(`${where}: ${kind}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(plain(detail))}`}`);
    this.kind = kind;
    this.detail = plain(detail);
  }
}

/** A value with every BigInt turned into a number. */
function plain(value) {
  if (value === undefined) return undefined;
  return JSON.parse(JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? Number(v) : v)));
}

function call(where, f) {
  try {
    return f();
  } catch (e) {
    if (e && typeof e === 'object' && 'payload' in e) throw new CapabilityError(where, e.payload);
    throw e;
  }
}

/** A user message of text. */
export const user = (text) => ({ role: 'user', content: [{ tag: 'text', val: String(text) }], cache: undefined });
/** An assistant message of text. */
export const assistant = (text) => ({ role: 'assistant', content: [{ tag: 'text', val: String(text) }], cache: undefined });
/** A user message carrying tool results: `[{toolUseId, content, isError}]`. */
export const toolResults = (results) => ({
  role: 'user',
  content: results.map((r) => ({ tag: 'tool-result', val: { toolUseId: r.toolUseId, content: String(r.content), isError: Boolean(r.isError) } })),
  cache: undefined,
});
/**
 * JSON text with object keys sorted and no spaces: the bytes the Rust SDK
 * (serde_json) writes for the same value, so one agent written in either
 * language sends the same requests and replays the same cassettes.
 */
export function json(value) {
  return JSON.stringify(value, (_, v) => {
    if (typeof v === 'bigint') return Number(v);
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]));
    }
    return v;
  });
}

/** A tool the model may call: its input described by a JSON schema object. */
export const toolSpec = (name, description, inputSchema) => ({ name, description, inputSchema: json(inputSchema), cache: undefined });

/** A completion, with helpers. */
export class Completion {
  constructor(raw) {
    this.model = raw.model;
    this.provider = raw.provider;
    this.stopReason = raw.stopReason;
    this.content = raw.content;
    this.usage = plain(raw.usage);
  }
  /** Every text part, joined. */
  get text() {
    return this.content.filter((p) => p.tag === 'text').map((p) => p.val).join('');
  }
  /** The tool calls the model asks for: `{id, name, input}` with the input parsed. */
  get toolUses() {
    return this.content.filter((p) => p.tag === 'tool-use').map((p) => ({ id: p.val.id, name: p.val.name, input: JSON.parse(p.val.input) }));
  }
  /** The assistant message that continues the conversation. */
  toMessage() {
    return { role: 'assistant', content: this.content, cache: undefined };
  }
}

/** A model binding the operator granted. */
export class Model {
  constructor(inner) {
    this.inner = inner;
  }
  /** Opens binding `name` (`default`, …). */
  static open(name) {
    return new Model(call(`model ${name}`, () => WitModel.open(name)));
  }
  /** The binding's provider and model. */
  describe() {
    return this.inner.describe();
  }
  /**
   * Runs a request: `{system, messages, maxTokens = 1024, temperature,
   * stop = [], tools = [], toolChoice}`.
   */
  complete({ system, messages, maxTokens = 1024, temperature, stop = [], tools = [], toolChoice } = {}) {
    const request = {
      system,
      systemCache: undefined,
      messages,
      maxTokens,
      temperature,
      stopSequences: stop,
      tools,
      toolChoice,
    };
    return new Completion(call('complete', () => this.inner.complete(request)));
  }
}

/** A tool the operator granted. */
export class Tool {
  constructor(inner) {
    this.inner = inner;
  }
  /** Opens tool `name` (`github`, …). */
  static open(name) {
    return new Tool(call(`tool ${name}`, () => WitTool.open(name)));
  }
  /** Its actions and their input schemas. */
  describe() {
    return this.inner.describe();
  }
  /** Calls `action` with `input` (sent as JSON); answers the parsed JSON result. */
  call(action, input) {
    return JSON.parse(call(action, () => this.inner.call(action, json(input ?? {}))));
  }
}

/**
 * The `handler` export: `export const handler = defineHandler((event) => …)`.
 * The event's `payload` is parsed JSON (`rawPayload` is the text).
 */
export function defineHandler(handle) {
  return {
    handle(event) {
      let payload;
      try {
        payload = JSON.parse(event.payload);
      } catch {
        payload = event.payload;
      }
      try {
        const result = handle({ id: event.id, source: event.source, kind: event.kind, payload, rawPayload: event.payload });
        return typeof result === 'string' ? result : JSON.stringify(plain(result) ?? null);
      } catch (e) {
        // The host takes only a string as the error.
        throw String(e?.message ?? e);
      }
    },
  };
}
