// Runs every compiled test file under dist/test with node's own test runner.
// Node 20 has no glob support in `node --test`, so the file list is built here.
// tsc never deletes outputs, so dist/test still holds the .js of tests whose .ts was deleted
// or renamed; only compiled files whose source test/**/*.test.ts still exists are run.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const compiled = join(root, 'dist', 'test');

function findTests(dir) {
  const found = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    else if (name.endsWith('.test.js')) found.push(path);
  }
  return found;
}

/** test/<same path>.test.ts for dist/test/<path>.test.js. */
function sourceOf(file) {
  return join(root, 'test', relative(compiled, file)).replace(/\.js$/, '.ts');
}

const only = process.argv.slice(2);
const all = existsSync(compiled) ? findTests(compiled) : [];
const stale = all.filter((f) => !existsSync(sourceOf(f)));
for (const f of stale) console.error(`run-tests: skipping ${relative(root, f)}: its source ${relative(root, sourceOf(f))} no longer exists`);
const files = all
  .filter((f) => existsSync(sourceOf(f)))
  .map((f) => relative(root, f))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)));
if (files.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}
// Node 20 applies --test-timeout to each file's process as well as to each test: it is the
// backstop for a file that hangs, so it sits well above the slowest file (the QEMU suites spread
// their guest boots over several files to stay under it on a slow machine); tests set their own.
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=420000', ...files], { stdio: 'inherit', cwd: root });
process.exit(result.status ?? 1);
