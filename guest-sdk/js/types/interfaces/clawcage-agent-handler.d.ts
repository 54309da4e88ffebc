/// <reference path="./clawcage-agent-types.d.ts" />
declare module 'clawcage:agent/handler@0.2.0' {
  /**
   * Handles one event. `ok` carries the agent's result (often JSON) and
   * `err` a message that the host reports as an agent error. The host
   * bounds the size of both.
   */
  export function handle(event: Event): string;
  export type Event = import('clawcage:agent/types@0.2.0').Event;
}
