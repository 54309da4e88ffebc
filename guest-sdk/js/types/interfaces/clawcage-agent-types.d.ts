declare module 'clawcage:agent/types@0.2.0' {
  /**
   * A JSON document, encoded as UTF-8 text.
   */
  export type Json = string;
  /**
   * An event that the host delivers to the agent's handler.
   */
  export interface Event {
    /**
     * Unique id of this event, chosen by the host or the sender (for
     * example a webhook delivery id). Logs and audit records quote it.
     */
    id: string,
    /**
     * Where the event came from. Well-known values: `http`, `github`,
     * `slack`, `notion`, `schedule`, `webhook`, `cli`. Other values may
     * appear in later versions, so match it with a fallback.
     */
    source: string,
    /**
     * What happened, in the source's own vocabulary, for example
     * `issues.opened` for GitHub or `message` for Slack.
     */
    kind: string,
    /**
     * The event's body as JSON. Always a valid JSON document.
     */
    payload: Json,
  }
  /**
   * Details of a rate limit that the host or an upstream service applied.
   */
  export interface RateLimit {
    /**
     * How long to wait before trying again, in milliseconds, when known.
     */
    retryAfterMs?: bigint,
    /**
     * A human-readable explanation, safe to log.
     */
    message: string,
  }
  /**
   * An error reported by an upstream service (a model provider or a tool).
   */
  export interface UpstreamError {
    /**
     * The HTTP status the service answered with, if it answered at all.
     */
    status?: number,
    /**
     * The service's explanation, with any credential scrubbed out.
     */
    message: string,
  }
}
