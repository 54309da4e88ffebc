declare module 'clawcage:agent/log@0.2.0' {
  /**
   * Writes one log line.
   */
  export function log(level: Level, message: string): void;
  /**
   * How important a log line is.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * Very detailed tracing.
   * ## `"debug"`
   * 
   * Information for debugging the agent.
   * ## `"info"`
   * 
   * Normal operational messages.
   * ## `"warn"`
   * 
   * Something unexpected that the agent recovered from.
   * ## `"error"`
   * 
   * Something failed.
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
