import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { closeFd, fdKind, openTap } from '../../src/sys/index.js';

test('openTap creates a tap device and closing it removes it', (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root (CAP_NET_ADMIN) to create a tap device');
  if (!existsSync('/dev/net/tun')) return t.skip('/dev/net/tun does not exist on this machine');
  const name = `vit${Math.random().toString(36).slice(2, 10)}`;
  let tap: { fd: number; name: string };
  try {
    tap = openTap(name, true);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EPERM' || code === 'EACCES') return t.skip(`TUNSETIFF refused (${code}): no CAP_NET_ADMIN here`);
    throw error;
  }
  try {
    assert.equal(tap.name, name);
    assert.equal(fdKind(tap.fd).kind, 'other');
    assert.ok(readFileSync('/proc/net/dev', 'utf8').includes(`${name}:`));
  } finally {
    closeFd(tap.fd);
  }
  assert.ok(!readFileSync('/proc/net/dev', 'utf8').includes(`${name}:`), 'a non-persistent tap goes away with its fd');
  assert.throws(() => openTap('x'.repeat(16)), RangeError);
});
