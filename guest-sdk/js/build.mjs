// Builds a JavaScript agent into a WebAssembly component of the
// `clawcage:agent` world with componentize-js:
//   node build.mjs <agent.js> <wit dir> <out.wasm>
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

const [source, wit, out] = process.argv.slice(2);
if (!source || !wit || !out) {
  console.error('usage: node build.mjs <agent.js> <wit dir> <out.wasm>');
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: 'agent',
  // The host grants an agent no HTTP of its own: leave it out.
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, component);
console.log(`${out}: ${component.length} bytes`);
