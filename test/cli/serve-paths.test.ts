/**
 * serve's socket paths, through the spawned CLI: each bad one is refused before anything
 * listens, in one line naming the flag, the path and the cause (exit 2), nothing is left
 * behind, and a serve that stops removes its sockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { BIN, runCli } from '../support/cli.js';
import { waitForPath } from '../peers/util.js';

/** oclif wraps long error lines with "›" continuation marks: one line per message again. */
const message = (stderr: string): string => stderr.replace(/\s*\n\s*›\s*/g, ' ');

test('bad socket paths are refused up front, naming flag, path and cause', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-paths-'));
  try {
    const file = join(dir, 'plain-file');
    writeFileSync(file, 'not a socket');
    const long = join(dir, `${'x'.repeat(120)}.sock`);
    const ok = join(dir, 'ok.sock');
    const cases: Array<[string[], RegExp]> = [
      [['-s', join(dir, 'missing', 'v.sock')], /--socket \S+missing\/v\.sock: directory \S+missing does not exist/],
      [['-s', file], /--socket \S+plain-file: exists and is not a socket/],
      [['-s', long], /--socket .*\.sock: \d+ bytes; a Unix socket path holds at most 107/],
      [['-s', ok, '-s', ok], /--socket \S+ok\.sock: given twice/],
      [['-s', ok, '--control', join(dir, 'nodir', 'c.ctl')], /--control \S+nodir\/c\.ctl: directory \S+nodir does not exist/],
      [['-s', ok, '--control', ok], /--control \S+ok\.sock: the same path as a --socket/],
    ];
    for (const [args, why] of cases) {
      const r = runCli(['serve', '--net', 'sink', ...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(message(r.stderr), why);
    }
    assert.deepEqual(readdirSync(dir).sort(), ['plain-file'], 'nothing was left behind');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a socket another serve listens on is refused; a serve that stops removes its sockets', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-paths-'));
  const sock = join(dir, 'v.sock');
  const first = spawn(process.execPath, [BIN, 'serve', '--net', 'sink', '-s', sock, '--quiet'], { stdio: 'ignore' });
  try {
    await waitForPath(`${sock}.ctl`, 20_000, 'serve control socket');
    const second = runCli(['serve', '--net', 'sink', '-s', sock]);
    assert.equal(second.status, 2, second.stderr);
    assert.match(message(second.stderr), /--socket \S+v\.sock: another process is listening on it/);
    // inspect pointed at the vhost-user socket instead of the control socket: told at once, with a hint.
    const started = Date.now();
    const wrong = runCli(['inspect', '-c', sock]);
    assert.notEqual(wrong.status, 0);
    assert.match(wrong.stderr.replace(/\s+/g, ' '), /closed the connection without an answer: is it serve's control socket/);
    assert.ok(Date.now() - started < 4000, 'not after a 5 s timeout');
    const exited = new Promise((resolve) => first.once('exit', resolve));
    first.kill('SIGTERM');
    await exited;
    assert.equal(existsSync(sock), false, 'the vhost socket is removed on exit');
    assert.equal(existsSync(`${sock}.ctl`), false, 'the control socket is removed on exit');
  } finally {
    first.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
