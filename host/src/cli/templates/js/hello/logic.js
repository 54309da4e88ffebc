// The agent's logic that needs no host: tested with `npm test`.

/** The request the agent sends: its prompt, capped in length. */
export function requestFor(prompt) {
  const text = String(prompt ?? '').slice(0, 4000);
  return {
    system: 'You are a concise assistant.',
    messages: [{ role: 'user', content: [{ tag: 'text', val: text }], cache: undefined }],
    maxTokens: 256,
  };
}
