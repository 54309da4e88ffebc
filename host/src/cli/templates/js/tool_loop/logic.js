// The agent's logic that needs no host: tested with `npm test`.

/** Runs one of this agent's own tools; a bad call is an answer, not a crash. */
export function runTool(name, input) {
  if (name !== 'add') return JSON.stringify({ error: `no tool ${name}` });
  const { a, b } = input ?? {};
  if (typeof a !== 'number' || typeof b !== 'number') return JSON.stringify({ error: 'bad input: a and b are numbers' });
  return JSON.stringify({ sum: a + b });
}
