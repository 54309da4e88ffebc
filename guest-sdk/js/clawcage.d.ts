// Types of `clawcage.js`, the JavaScript SDK of the `clawcage:agent@0.2.0`
// world. The WIT's own types are generated into `types/` by
// `npm run types` (jco); these wrappers use them.
/// <reference path="./types/agent.d.ts" />

import type {
  CompletionRequest,
  ContentPart,
  Message,
  ModelInfo,
  StopReason,
  ToolChoice,
  ToolResult,
  ToolSpec,
} from 'clawcage:agent/inference@0.2.0';
import type { ToolInfo } from 'clawcage:agent/tools@0.2.0';

export type { CompletionRequest, ContentPart, Message, ModelInfo, StopReason, ToolChoice, ToolResult, ToolSpec, ToolInfo };

/** Any value JSON can carry. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Log lines, by level. */
export declare const log: {
  trace(message: unknown): void;
  debug(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
};

/** The WIT error cases of the inference and tools interfaces. */
export type CapabilityErrorKind =
  | 'not-granted'
  | 'budget-exceeded'
  | 'rate-limited'
  | 'invalid-request'
  | 'provider'
  | 'unavailable'
  | 'timeout'
  | 'leak-blocked'
  | 'denied'
  | 'invalid-input'
  | 'upstream'
  | 'error';

/** A capability refused: `kind` is the WIT error case, `detail` its value. */
export declare class CapabilityError extends Error {
  readonly kind: CapabilityErrorKind;
  readonly detail: unknown;
}

/** JSON text with object keys sorted and no spaces (as serde_json writes it). */
export declare function json(value: unknown): string;

/** A user message of text. */
export declare function user(text: string): Message;
/** An assistant message of text. */
export declare function assistant(text: string): Message;
/** A user message carrying tool results. */
export declare function toolResults(results: Array<{ toolUseId: string; content: string; isError?: boolean }>): Message;
/** A tool the model may call, its input described by a JSON schema. */
export declare function toolSpec(name: string, description: string, inputSchema: JsonValue): ToolSpec;

/** A tool call the model asks for, its input parsed. */
export interface ToolUse<Input = any> {
  id: string;
  name: string;
  input: Input;
}

/** Token counts of a completion, as numbers. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
  estimated: boolean;
}

/** A completion, with helpers. */
export declare class Completion {
  readonly model: string;
  readonly provider: string;
  readonly stopReason: StopReason;
  readonly content: ContentPart[];
  readonly usage: Usage;
  /** Every text part, joined. */
  get text(): string;
  /** The tool calls the model asks for, inputs parsed. */
  get toolUses(): ToolUse[];
  /** The assistant message that continues the conversation. */
  toMessage(): Message;
}

/** What `Model.complete` takes; everything but `messages` has a default. */
export interface Request {
  system?: string;
  messages: Message[];
  /** Default 1024. */
  maxTokens?: number;
  temperature?: number;
  stop?: string[];
  tools?: ToolSpec[];
  toolChoice?: ToolChoice;
}

/** A model binding the operator granted. */
export declare class Model {
  private constructor();
  /** Opens binding `name`; throws `CapabilityError` (`not-granted`, …). */
  static open(name: string): Model;
  describe(): ModelInfo;
  /** Runs a request to completion; throws `CapabilityError`. */
  complete(request: Request): Completion;
}

/** A tool the operator granted. */
export declare class Tool {
  private constructor();
  /** Opens tool `name`; throws `CapabilityError` (`not-granted`, …). */
  static open(name: string): Tool;
  describe(): ToolInfo;
  /** Calls `action` with `input` sent as JSON; answers the parsed JSON result. */
  call<Output = any>(action: string, input?: unknown): Output;
}

/** An event, its payload parsed from JSON (`rawPayload` is the text). */
export interface Event<Payload = any> {
  id: string;
  source: string;
  kind: string;
  payload: Payload;
  rawPayload: string;
}

/** The `handler` export of the world. */
export interface Handler {
  handle(event: import('clawcage:agent/types@0.2.0').Event): string;
}

/**
 * Makes the `handler` export: `export const handler = defineHandler((event) => …)`.
 * A string result is the answer; anything else is sent as JSON. Whatever it
 * throws reaches the host as the agent's error text.
 */
export declare function defineHandler<Payload = any>(handle: (event: Event<Payload>) => unknown): Handler;
