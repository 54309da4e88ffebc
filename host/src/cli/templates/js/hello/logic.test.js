import assert from 'node:assert/strict';
import { test } from 'node:test';
import { requestFor } from './logic.js';

test('the prompt is capped', () => {
  const request = requestFor('x'.repeat(10000));
  assert.equal(request.messages[0].content[0].val.length, 4000);
});
