/// <reference path="./clawcage-agent-types.d.ts" />
declare module 'clawcage:agent/inference@0.2.0' {
  export type Json = import('clawcage:agent/types@0.2.0').Json;
  export type RateLimit = import('clawcage:agent/types@0.2.0').RateLimit;
  export type UpstreamError = import('clawcage:agent/types@0.2.0').UpstreamError;
  /**
   * Who wrote a message.
   * # Variants
   * 
   * ## `"user"`
   * 
   * The user, or tool results sent back to the model.
   * ## `"assistant"`
   * 
   * The model.
   */
  export type Role = 'user' | 'assistant';
  /**
   * The model asks the agent to run a tool.
   */
  export interface ToolUse {
    /**
     * Id chosen by the provider; quote it in the matching `tool-result`.
     */
    id: string,
    /**
     * Name of the tool, one of the request's `tools`.
     */
    name: string,
    /**
     * The tool's input as a JSON object.
     */
    input: Json,
  }
  /**
   * The outcome of a tool the model asked for.
   */
  export interface ToolResult {
    /**
     * The `id` of the `tool-use` this answers.
     */
    toolUseId: string,
    /**
     * The result, usually JSON or plain text.
     */
    content: string,
    /**
     * Whether the tool failed; the model sees this.
     */
    isError: boolean,
  }
  /**
   * One part of a message's content.
   */
  export type ContentPart = ContentPartText | ContentPartToolUse | ContentPartToolResult;
  /**
   * Plain text.
   */
  export interface ContentPartText {
    tag: 'text',
    val: string,
  }
  /**
   * A request from the model to run a tool (assistant messages only).
   */
  export interface ContentPartToolUse {
    tag: 'tool-use',
    val: ToolUse,
  }
  /**
   * The result of a tool run (user messages only).
   */
  export interface ContentPartToolResult {
    tag: 'tool-result',
    val: ToolResult,
  }
  /**
   * How long a provider keeps a cached prompt prefix.
   * # Variants
   * 
   * ## `"five-minutes"`
   * 
   * About five minutes, refreshed on every hit (the cheaper write).
   * ## `"one-hour"`
   * 
   * About an hour (a dearer write, for prefixes reused less often).
   */
  export type CacheTtl = 'five-minutes' | 'one-hour';
  /**
   * One turn of the conversation.
   */
  export interface Message {
    /**
     * Who wrote it.
     */
    role: Role,
    /**
     * What it says, in order. Text parts must not be empty.
     */
    content: Array<ContentPart>,
    /**
     * Marks the end of this message as a prompt-cache breakpoint: the
     * provider may cache everything up to here (tools, system and the
     * conversation so far) and bill later reads of it at the cached
     * rate. Anthropic takes at most 4 breakpoints per request, counting
     * `system-cache` and tool breakpoints; OpenAI caches long prefixes
     * by itself and ignores breakpoints.
     */
    cache?: CacheTtl,
  }
  /**
   * A tool that the model may ask to use.
   */
  export interface ToolSpec {
    /**
     * Name the model will use: 1 to 64 letters, digits, `_` and `-`.
     */
    name: string,
    /**
     * What the tool does, for the model.
     */
    description: string,
    /**
     * A JSON Schema (an object schema) for the tool's input.
     */
    inputSchema: Json,
    /**
     * Marks this tool as a prompt-cache breakpoint: the tool
     * definitions up to and including this one may be cached (see
     * `message.cache`).
     */
    cache?: CacheTtl,
  }
  /**
   * Whether and how the model should use the request's tools.
   */
  export type ToolChoice = ToolChoiceAuto | ToolChoiceNone | ToolChoiceAny | ToolChoiceTool;
  /**
   * The model decides (the default when tools are given).
   */
  export interface ToolChoiceAuto {
    tag: 'auto',
  }
  /**
   * The model must not use tools.
   */
  export interface ToolChoiceNone {
    tag: 'none',
  }
  /**
   * The model must use some tool.
   */
  export interface ToolChoiceAny {
    tag: 'any',
  }
  /**
   * The model must use the named tool.
   */
  export interface ToolChoiceTool {
    tag: 'tool',
    val: string,
  }
  /**
   * A request for one completion.
   */
  export interface CompletionRequest {
    /**
     * The system prompt, if any.
     */
    system?: string,
    /**
     * Marks the end of the system prompt (and the tools before it) as a
     * prompt-cache breakpoint (see `message.cache`).
     */
    systemCache?: CacheTtl,
    /**
     * The conversation so far; it must not be empty and must start with
     * a user message.
     */
    messages: Array<Message>,
    /**
     * The most tokens the model may generate. The operator's cap for the
     * binding applies on top of this.
     */
    maxTokens: number,
    /**
     * Sampling temperature; the host rejects values outside the range
     * the operator allowed for the binding.
     */
    temperature?: number,
    /**
     * Text sequences that end generation when produced.
     */
    stopSequences: Array<string>,
    /**
     * Tools the model may ask for.
     */
    tools: Array<ToolSpec>,
    /**
     * How the model may use `tools`; `none` of the record means `auto`.
     */
    toolChoice?: ToolChoice,
  }
  /**
   * Why the model stopped generating.
   * # Variants
   * 
   * ## `"end-turn"`
   * 
   * The model finished its turn.
   * ## `"max-tokens"`
   * 
   * The `max-tokens` limit was reached.
   * ## `"stop-sequence"`
   * 
   * One of the `stop-sequences` was produced.
   * ## `"tool-use"`
   * 
   * The model asks for one or more tools to be run.
   * ## `"content-filter"`
   * 
   * The provider withheld or cut the output.
   * ## `"other"`
   * 
   * Any other reason the provider gave.
   */
  export type StopReason = 'end-turn' | 'max-tokens' | 'stop-sequence' | 'tool-use' | 'content-filter' | 'other';
  /**
   * Tokens counted for one completion.
   */
  export interface Usage {
    /**
     * Every token read by the model (prompt, history, tool specs),
     * cached or not.
     */
    inputTokens: bigint,
    /**
     * Tokens generated by the model.
     */
    outputTokens: bigint,
    /**
     * The part of `input-tokens` read from the provider's prompt cache
     * (billed at the cheaper cached rate).
     */
    cacheReadTokens: bigint,
    /**
     * The part of `input-tokens` written to the provider's prompt cache
     * (billed at the cache-write rate).
     */
    cacheWriteTokens: bigint,
    /**
     * The provider reported no token counts (some OpenAI-compatible
     * servers send none in streams), so the host counted upper bounds
     * from the request's and the answer's bytes; the operator's usage
     * reports mark such calls.
     */
    estimated: boolean,
  }
  /**
   * A finished completion.
   */
  export interface Completion {
    /**
     * The model id that answered, as the provider reports it (the
     * configured id when it reports none). With fallbacks, this is the
     * fallback's model when a fallback answered.
     */
    model: string,
    /**
     * The provider kind that answered, for example `anthropic`.
     */
    provider: string,
    /**
     * Which of the binding's models answered: 0 for the binding's own,
     * 1 for its first fallback, and so on.
     */
    fallback: number,
    /**
     * The generated content, in order.
     */
    content: Array<ContentPart>,
    /**
     * Why generation stopped.
     */
    stopReason: StopReason,
    /**
     * Tokens used.
     */
    usage: Usage,
  }
  /**
   * The start of a tool use in a stream.
   */
  export interface ToolUseStart {
    /**
     * Id chosen by the provider.
     */
    id: string,
    /**
     * Name of the tool.
     */
    name: string,
  }
  /**
   * One increment of a streamed completion.
   */
  export type StreamEvent = StreamEventTextDelta | StreamEventToolUseStart | StreamEventToolUseInputDelta | StreamEventFinished;
  /**
   * More text for the current text part.
   */
  export interface StreamEventTextDelta {
    tag: 'text-delta',
    val: string,
  }
  /**
   * The model started a tool use; its input follows as deltas.
   */
  export interface StreamEventToolUseStart {
    tag: 'tool-use-start',
    val: ToolUseStart,
  }
  /**
   * More of the current tool use's JSON input. The pieces are not valid
   * JSON on their own; `finished` carries the assembled input.
   */
  export interface StreamEventToolUseInputDelta {
    tag: 'tool-use-input-delta',
    val: string,
  }
  /**
   * The completion ended; this is the whole completion, assembled, with
   * the stop reason and usage. It is always the last event.
   */
  export interface StreamEventFinished {
    tag: 'finished',
    val: Completion,
  }
  /**
   * What a binding is. It never includes a credential.
   */
  export interface ModelInfo {
    /**
     * The binding name the agent opened.
     */
    binding: string,
    /**
     * The provider kind, for example `anthropic`, `openai` or
     * `openai-compatible`.
     */
    provider: string,
    /**
     * The model id the operator configured.
     */
    model: string,
  }
  /**
   * Which time limit a call ran out of.
   * # Variants
   * 
   * ## `"connect"`
   * 
   * Connecting to the provider took longer than the binding allows.
   * ## `"first-byte"`
   * 
   * The provider accepted the request but sent no answer (for a
   * stream: no first event) within the binding's first-byte limit.
   * ## `"idle"`
   * 
   * A stream went quiet for longer than the binding's idle limit.
   * ## `"deadline"`
   * 
   * The event's deadline came first.
   */
  export type TimeoutKind = 'connect' | 'first-byte' | 'idle' | 'deadline';
  /**
   * Why an inference call failed.
   */
  export type Error = ErrorNotGranted | ErrorBudgetExceeded | ErrorRateLimited | ErrorInvalidRequest | ErrorProvider | ErrorUnavailable | ErrorTimeout | ErrorLeakBlocked;
  /**
   * No binding of that name was granted to this agent.
   */
  export interface ErrorNotGranted {
    tag: 'not-granted',
    val: string,
  }
  /**
   * The agent's token or spend budget does not allow this call.
   */
  export interface ErrorBudgetExceeded {
    tag: 'budget-exceeded',
    val: string,
  }
  /**
   * The provider or the host asked to slow down.
   */
  export interface ErrorRateLimited {
    tag: 'rate-limited',
    val: RateLimit,
  }
  /**
   * The request is malformed or outside the binding's caps; the message
   * says which field.
   */
  export interface ErrorInvalidRequest {
    tag: 'invalid-request',
    val: string,
  }
  /**
   * The provider answered with an error.
   */
  export interface ErrorProvider {
    tag: 'provider',
    val: UpstreamError,
  }
  /**
   * The provider could not be reached, or the binding's key was revoked.
   */
  export interface ErrorUnavailable {
    tag: 'unavailable',
    val: string,
  }
  /**
   * The provider did not answer in time; the variant says which
   * limit ran out. Stream events delivered before it stay valid.
   */
  export interface ErrorTimeout {
    tag: 'timeout',
    val: TimeoutKind,
  }
  /**
   * The answer carried the binding's own key (an echoing provider,
   * or a model told to repeat it), so none of it was delivered. The
   * binding is suspended for this agent until an operator resumes
   * it; every call until then fails the same way.
   */
  export interface ErrorLeakBlocked {
    tag: 'leak-blocked',
    val: string,
  }
  
  export class CompletionStream implements Disposable {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * The next increment, or `none` after `finished` was returned.
    */
    next(): StreamEvent | undefined;
    [Symbol.dispose](): void;
  }
  
  export class Model implements Disposable {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * Opens the binding named `binding`. Fails with `not-granted` when the
    * operator did not bind that name for this agent.
    */
    static open(binding: string): Model;
    /**
    * Describes the binding.
    */
    describe(): ModelInfo;
    /**
    * Runs a completion and waits for the whole answer.
    */
    complete(request: CompletionRequest): Completion;
    /**
    * Runs a completion and returns its increments as they arrive.
    */
    stream(request: CompletionRequest): CompletionStream;
    [Symbol.dispose](): void;
  }
}
