// A new ClawCage agent with a tool loop: it offers the model a tool of its
// own (`add`), runs every call the model asks for, sends the results back,
// and stops when the model answers in text (or after a few rounds).
import { defineHandler, Model, log, toolResults, toolSpec, user } from './clawcage.js';
import { runTool } from './logic.js';

const MAX_ROUNDS = 5;
const ADD = toolSpec('add', 'Adds two numbers.', {
  type: 'object',
  properties: { a: { type: 'number' }, b: { type: 'number' } },
  required: ['a', 'b'],
});

export const handler = defineHandler((event) => {
  const model = Model.open('default');
  const messages = [user(event.payload.prompt)];
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const answer = model.complete({ messages, maxTokens: 512, tools: [ADD] });
    if (answer.stopReason !== 'tool-use') return answer.text;
    messages.push(answer.toMessage());
    messages.push(toolResults(answer.toolUses.map((call) => {
      log.info(`round ${round}: the model calls ${call.name}`);
      return { toolUseId: call.id, content: runTool(call.name, call.input) };
    })));
  }
  throw new Error(`no answer after ${MAX_ROUNDS} rounds`);
});
