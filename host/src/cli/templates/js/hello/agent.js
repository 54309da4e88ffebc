// A new ClawCage agent: asks its model once and answers with the text.
import { defineHandler, Model, log } from './clawcage.js';
import { requestFor } from './logic.js';

export const handler = defineHandler((event) => {
  log.info(`asking the model for a ${event.kind} event`);
  const answer = Model.open('default').complete(requestFor(event.payload.prompt));
  return answer.text;
});
