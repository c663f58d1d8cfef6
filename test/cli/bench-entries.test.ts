/**
 * The benchmarks under bench/ are commands too: `--help` prints the usage in the script's
 * header comment and exits 0 before anything starts, and a bad option stops the script with
 * one line naming it (exit 2), not a stack trace and not a run with the option ignored.
 * Spawned as a user runs them, from dist/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/** Every bench entry point, and an argument each must refuse. */
const ENTRIES: Array<{ name: string; bad: string[] }> = [
  { name: 'control-rtt', bad: ['--no-such-option'] },
  { name: 'datapath-vs-dpdk', bad: ['--seconds', 'x'] },
  { name: 'datapath-vs-dpdk', bad: ['--burst-stats'] }, // only with --sequential
  { name: 'dirty-log', bad: ['--no-such-option'] },
  { name: 'guest-iommu', bad: ['--rows', 'sideways'] },
  { name: 'iommu-table', bad: ['--no-such-option'] },
  { name: 'miss-policy-qemu', bad: ['--no-such-option'] },
  { name: 'run-all', bad: ['--time', '5'] },
  { name: 'serve-ab', bad: ['--direction', 'up'] },
  { name: 'serve-ab', bad: ['--frame-size', '128'] }, // only with --direction rx
  { name: 'soak', bad: ['--no-such-option'] },
  { name: 'strategies-micro', bad: ['--no-such-option'] },
  { name: 'tcp-vs-qemu', bad: ['--rows', 'sideways'] },
  { name: 'virtqueue-split', bad: ['1', '2'] },
  { name: 'worker-scaling', bad: ['--backend-cpus', '0', '--frontend-cpus', '0'] }, // sides sharing a CPU
];

const run = (name: string, args: string[]) =>
  spawnSync(process.execPath, [join(ROOT, 'dist', 'bench', `${name}.js`), ...args], { encoding: 'utf8', timeout: 30_000 });

/** The first line of the source's header comment, which --help must print. */
function headerFirstLine(name: string): string {
  const source = readFileSync(join(ROOT, 'bench', `${name}.ts`), 'utf8');
  const first = /^\/\*\*\s*\n\s*\* (.+)/.exec(source);
  assert.ok(first, `bench/${name}.ts has no header comment`);
  return first[1]!.trim();
}

for (const { name, bad } of ENTRIES) {
  test(`bench/${name}: --help prints its header; ${bad.join(' ')} is refused in one line`, () => {
    const help = run(name, ['--help']);
    assert.equal(help.status, 0, help.stderr);
    assert.ok(help.stdout.includes(headerFirstLine(name)), `--help printed:\n${help.stdout}`);
    assert.doesNotMatch(help.stdout, /^ ?\* /m, 'the comment markers are stripped');

    const wrong = run(name, bad);
    assert.equal(wrong.status, 2, `exit ${wrong.status}\n${wrong.stdout}\n${wrong.stderr}`);
    const lines = wrong.stderr.trim().split('\n');
    assert.equal(lines.length, 1, wrong.stderr);
    assert.match(lines[0]!, new RegExp(`^${name}: `));
  });
}
