import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runTool } from './logic.js';

test('add adds, and bad input is an answer', () => {
  assert.equal(runTool('add', { a: 19, b: 23 }), '{"sum":42}');
  assert.match(runTool('add', {}), /bad input/);
  assert.match(runTool('divide', {}), /no tool/);
});
