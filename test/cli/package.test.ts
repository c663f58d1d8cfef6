/**
 * What a user installs: `npm pack` of this checkout installed into an empty project (npm
 * builds the native addon there), whose `vhost-iotlb` synthesizes a trace and benchmarks it.
 * Needs the npm registry (for the dependencies) and node-gyp's toolchain, as `npm ci` does.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

test('the packed tarball installs into an empty project and its CLI runs', { timeout: 600_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-pack-'));
  try {
    // As npm publish would: prepack builds and writes oclif.manifest.json, postpack removes it.
    const pack = spawnSync('npm', ['pack', '--pack-destination', dir, '--json'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(pack.status, 0, pack.stderr);
    const [{ filename, files }] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const paths = files.map((f) => f.path);
    assert.ok(paths.includes('LICENSE') && paths.includes('binding.gyp') && paths.includes('dist/commands/bench.js'), 'what a user runs is shipped');
    assert.ok(paths.includes('oclif.manifest.json'), 'the command manifest is shipped');
    assert.ok(!existsSync(join(ROOT, 'oclif.manifest.json')), 'postpack removed the manifest from the checkout');
    assert.deepEqual(paths.filter((p) => /^dist\/(test|bench)\/|\.map$/.test(p)), [], 'tests, benchmarks and source maps stay home');

    const app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', join(dir, filename)], { cwd: app, encoding: 'utf8', timeout: 480_000 });
    assert.equal(install.status, 0, `npm install of the tarball failed (it needs the npm registry and a C++ toolchain):\n${(install.stdout + install.stderr).slice(-3000)}`);
    assert.ok(readdirSync(join(app, 'node_modules', 'vhost-iotlb', 'build', 'Release')).includes('vhost_sys.node'), 'npm built the native addon');

    const manifest = JSON.parse(readFileSync(join(app, 'node_modules', 'vhost-iotlb', 'oclif.manifest.json'), 'utf8')) as { commands: Record<string, unknown> };
    assert.deepEqual(Object.keys(manifest.commands).sort(), ['bench', 'inspect', 'serve', 'trace:decode', 'trace:record', 'trace:synth']);
    const bin = join(app, 'node_modules', '.bin', 'vhost-iotlb');
    const trace = join(dir, 'static-2m.vhtrace');
    const synth = spawnSync(bin, ['trace', 'synth', '--scenario', 'static-2m', '--packets', '50', '-o', trace], { cwd: app, encoding: 'utf8' });
    assert.equal(synth.status, 0, synth.stderr);
    const bench = spawnSync(bin, ['bench', trace, '--json', '--time', '0.01', '--strategy', 'coalescing'], { cwd: app, encoding: 'utf8' });
    assert.equal(bench.status, 0, bench.stderr);
    const doc = JSON.parse(bench.stdout) as { rows: Array<{ strategy: string; hits: number }> };
    assert.equal(doc.rows[0].strategy, 'coalescing');
    assert.ok(doc.rows[0].hits > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
