// Builds a JavaScript or TypeScript agent into a WebAssembly component of
// the `clawcage:agent` world:
//   node build.mjs <agent.js|agent.ts> <wit dir> <out.wasm>
//
// 1. A TypeScript entry is type-checked first (strict), so a wrong call
//    fails the build with the compiler's message rather than at run time.
// 2. esbuild bundles the entry with what it imports (relative modules, npm
//    packages, `@clawcage/sdk`) into one ES module; the world's
//    `clawcage:agent/*` imports stay imports.
// 3. componentize-js turns the bundle into a component.
import { componentize } from '@bytecodealliance/componentize-js';
import { build } from 'esbuild';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

const [source, wit, out] = process.argv.slice(2);
if (!source || !wit || !out) {
  console.error('usage: node build.mjs <agent.js|agent.ts> <wit dir> <out.wasm>');
  process.exit(2);
}

if (source.endsWith('.ts')) {
  await typecheck(resolve(source));
}

const work = await mkdtemp(join(tmpdir(), 'clawcage-js-'));
try {
  const bundle = join(work, 'agent.js');
  await build({
    entryPoints: [resolve(source)],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    outfile: bundle,
    external: ['clawcage:agent/*'],
    logLevel: 'error',
  });
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: resolve(wit),
    worldName: 'agent',
    // The host grants an agent no HTTP of its own: leave it out.
    disableFeatures: ['http', 'fetch-event'],
  });
  await mkdir(dirname(resolve(out)), { recursive: true });
  await writeFile(out, component);
  console.log(`${out}: ${component.length} bytes`);
} finally {
  await rm(work, { recursive: true, force: true });
}

/** Type-checks a TypeScript entry with the project's tsconfig.json, or strict defaults. */
async function typecheck(entry) {
  const ts = (await import('typescript')).default;
  const configPath = ts.findConfigFile(dirname(entry), ts.sys.fileExists, 'tsconfig.json');
  let options = {
    strict: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
    skipLibCheck: true,
  };
  let files = [entry];
  if (configPath) {
    const config = ts.getParsedCommandLineOfConfigFile(configPath, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: report });
    options = config.options;
    files = [...new Set([entry, ...config.fileNames])];
  }
  const program = ts.createProgram(files, { ...options, noEmit: true });
  const diagnostics = ts.getPreEmitDiagnostics(program);
  if (diagnostics.length) {
    report(...diagnostics);
    process.exit(1);
  }

  function report(...all) {
    const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: ts.sys.getCurrentDirectory, getNewLine: () => '\n' };
    const format = process.stderr.isTTY ? ts.formatDiagnosticsWithColorAndContext : ts.formatDiagnostics;
    console.error(format(all, host));
  }
}
