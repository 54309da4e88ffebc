// Generates the TypeScript declarations of the `clawcage:agent` world into
// `types/` from `wit/agent.wit` with jco's `generateGuestTypes`:
//   node types.mjs           write them
//   node types.mjs --check   fail when the files differ from the WIT's
//
// jco 1.35 (jco-transpile 0.15) runs its WebAssembly tools on a
// preview2-shim whose file system starts with no preopened directory, so
// they cannot read any path ("failed to get path metadata", os error 44).
// Opening `/` before the first call is the whole workaround.
import { createRequire } from 'node:module';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes('--check');
const require = createRequire(import.meta.resolve('@bytecodealliance/jco-transpile'));
const shim = await import(pathToFileURL(require.resolve('@bytecodealliance/preview2-shim/filesystem')));
shim._setPreopens({ '/': '/' });
const { generateGuestTypes } = await import('@bytecodealliance/jco-transpile');

const outDir = join(here, 'types');
const files = await generateGuestTypes(join(here, 'wit'), { worldName: 'agent', outDir });
let stale = 0;
for (const [name, data] of Object.entries(files)) {
  const path = resolve(outDir, name);
  const text = new TextDecoder().decode(data);
  if (check) {
    const shipped = await readFile(path, 'utf8').catch(() => null);
    if (shipped !== text) {
      console.error(`${relative(here, path)} differs from what wit/agent.wit gives`);
      stale++;
    }
  } else {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, text);
    console.log(relative(here, path));
  }
}
if (stale) {
  console.error('run `npm run types` in guest-sdk/js and commit the result');
  process.exit(1);
}
