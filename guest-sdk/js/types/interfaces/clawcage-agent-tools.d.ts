/// <reference path="./clawcage-agent-types.d.ts" />
declare module 'clawcage:agent/tools@0.2.0' {
  export type Json = import('clawcage:agent/types@0.2.0').Json;
  export type RateLimit = import('clawcage:agent/types@0.2.0').RateLimit;
  export type UpstreamError = import('clawcage:agent/types@0.2.0').UpstreamError;
  /**
   * One action the agent may call on a tool.
   */
  export interface ActionInfo {
    /**
     * The action's name, for example `issues.add_labels`.
     */
    name: string,
    /**
     * What the action does.
     */
    description: string,
    /**
     * A JSON Schema for the action's input; the host validates inputs
     * against it before anything is sent.
     */
    inputSchema: Json,
  }
  /**
   * What an opened tool offers this agent.
   */
  export interface ToolInfo {
    /**
     * The tool's name, as opened.
     */
    name: string,
    /**
     * The actions granted to this agent, and only those.
     */
    actions: Array<ActionInfo>,
  }
  /**
   * Why a tool call failed.
   */
  export type Error = ErrorNotGranted | ErrorDenied | ErrorInvalidInput | ErrorUpstream | ErrorRateLimited | ErrorLeakBlocked;
  /**
   * No tool of that name, or no such action, was granted to this agent.
   */
  export interface ErrorNotGranted {
    tag: 'not-granted',
    val: string,
  }
  /**
   * The action is granted, but not on this resource (another
   * repository, channel or page); the message says why.
   */
  export interface ErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * The input does not match the action's schema; the message says where.
   */
  export interface ErrorInvalidInput {
    tag: 'invalid-input',
    val: string,
  }
  /**
   * The service answered with an error.
   */
  export interface ErrorUpstream {
    tag: 'upstream',
    val: UpstreamError,
  }
  /**
   * The service or the host asked to slow down.
   */
  export interface ErrorRateLimited {
    tag: 'rate-limited',
    val: RateLimit,
  }
  /**
   * The answer carried the grant's own credential, so none of it was
   * delivered. The grant is suspended for this agent until an
   * operator resumes it; every call until then fails the same way.
   */
  export interface ErrorLeakBlocked {
    tag: 'leak-blocked',
    val: string,
  }
  
  export class Tool implements Disposable {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * Opens the tool named `name`. Fails with `not-granted` when the
    * operator granted no tool of that name to this agent.
    */
    static open(name: string): Tool;
    /**
    * Describes the granted actions.
    */
    describe(): ToolInfo;
    /**
    * Calls `action` with a JSON `input` and returns the JSON result.
    */
    call(action: string, input: Json): Json;
    [Symbol.dispose](): void;
  }
}
