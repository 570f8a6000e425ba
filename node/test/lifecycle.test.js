// The bridge process's life: start hook before readiness, EOF, SIGTERM with and without
// work in progress, oversize and undecodable frames, the 50 MiB round trip.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { BridgeProcess, startBridge, withTimeout } = require('../testlib/helpers');

const HOOKS = path.join(__dirname, '..', 'testlib', 'fixtures', 'hooks_tools.js');

function tempFile(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snakepit-node-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'hook.txt');
}

test('ping waits for an async onStart', async (t) => {
  const b = new BridgeProcess({ args: ['--tools', HOOKS] });
  t.after(() => b.kill());
  const sent = Date.now();
  const id = b.send('ping');
  const r = await b.response(id);
  assert.equal(r.success, true);
  // The fixture's onStart takes 200 ms; a ping answered before it ran would see no config.
  assert.ok(Date.now() - sent >= 200, 'ping answered only after onStart');
  assert.notEqual((await b.call('start_config')).result, null);
});

test('EOF on stdin ends the process within 1 s, even with a call in progress', async (t) => {
  const b = await startBridge(t);
  b.send('sleep', { ms: 10000 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const closed = Date.now();
  b.child.stdin.end();
  const { code } = await withTimeout(b.exited, 3000, 'exit after EOF');
  assert.equal(code, 0);
  assert.ok(b.exitedAt - closed < 1000, `exited ${b.exitedAt - closed} ms after EOF`);
});

test('SIGTERM during a call finishes it, answers, runs onStop and exits 0', async (t) => {
  const hookFile = tempFile(t);
  const b = await startBridge(t, { args: ['--tools', HOOKS], env: { HOOK_FILE: hookFile } });
  const id = b.send('sleep', { ms: 500 });
  await new Promise((resolve) => setTimeout(resolve, 100));
  b.child.kill('SIGTERM');
  const r = await b.response(id);
  assert.equal(r.success, true);
  assert.equal(r.result.slept_ms, 500);
  const { code, signal } = await withTimeout(b.exited, 5000, 'exit after SIGTERM');
  assert.equal(signal, null);
  assert.equal(code, 0);
  assert.equal(fs.readFileSync(hookFile, 'utf8'), 'stopped\n');
});

test('SIGTERM abandons a call that outlives SNAKEPIT_GRACE_MS and still exits 0', async (t) => {
  const hookFile = tempFile(t);
  const b = await startBridge(t, {
    args: ['--tools', HOOKS], env: { HOOK_FILE: hookFile, SNAKEPIT_GRACE_MS: '300' },
  });
  const id = b.send('sleep', { ms: 20000 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const sent = Date.now();
  b.child.kill('SIGTERM');
  const { code } = await withTimeout(b.exited, 5000, 'exit after the grace period');
  assert.equal(code, 0);
  assert.ok(b.exitedAt - sent >= 300, 'waited for the grace period');
  assert.ok(!b.frames.some((f) => f.id === id), 'the abandoned call has no response');
  assert.equal(fs.readFileSync(hookFile, 'utf8'), 'stopped\n');
});

test('an idle bridge exits 0 at once on SIGTERM', async (t) => {
  const b = await startBridge(t);
  b.child.kill('SIGTERM');
  const { code } = await withTimeout(b.exited, 2000, 'exit after SIGTERM');
  assert.equal(code, 0);
});

test('an incoming frame over SNAKEPIT_MAX_MESSAGE_BYTES ends the process non-zero', async (t) => {
  const b = await startBridge(t, { env: { SNAKEPIT_MAX_MESSAGE_BYTES: '1024' } });
  const head = Buffer.alloc(4);
  head.writeUInt32BE(2048, 0);
  b.writeRaw(head);
  const { code } = await withTimeout(b.exited, 3000, 'exit after an oversize frame');
  assert.notEqual(code, 0);
  assert.match(b.stderr, /2048 bytes exceeds SNAKEPIT_MAX_MESSAGE_BYTES \(1024\)/);
});

test('an undecodable frame ends the process non-zero', async (t) => {
  const b = await startBridge(t);
  const body = Buffer.from('{"id": 1, "command": ');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  b.writeRaw(Buffer.concat([head, body]));
  const { code } = await withTimeout(b.exited, 3000, 'exit after a bad frame');
  assert.notEqual(code, 0);
  assert.match(b.stderr, /not valid JSON/);
});

test('crash exits with the given code', async (t) => {
  const b = await startBridge(t);
  b.send('crash', { code: 7 });
  const { code } = await withTimeout(b.exited, 3000, 'exit after crash');
  assert.equal(code, 7);
});

test('a 50 MiB string makes the round trip, in order with a small call', async (t) => {
  const b = await startBridge(t);
  // Multi-byte characters make the byte length differ from the string length.
  const unit = 'abcdefgh\u00e9\u20ac';
  const big = unit.repeat(Math.ceil((50 << 20) / unit.length));
  const id = b.send('echo', { s: big });
  const small = b.send('add', { a: 1, b: 1 });
  const r = await b.response(id, 60000);
  assert.equal(r.success, true);
  assert.equal(r.result.s.length, big.length);
  assert.ok(r.result.s === big, 'the string came back unchanged');
  assert.equal((await b.response(small)).result, 2);
});

test('an onStart that throws ends the process with 1 and no ping answered', async (t) => {
  const b = new BridgeProcess({ args: ['--tools', path.join(__dirname, '..', 'testlib', 'fixtures', 'failing_start.js')] });
  t.after(() => b.kill());
  b.send('ping');
  const { code } = await withTimeout(b.exited, 5000, 'exit after a failed onStart');
  assert.equal(code, 1);
  assert.equal(b.frames.length, 0);
  assert.match(b.stderr, /onStart failed: Error: model file missing/);
});

test('a --tools module that cannot be loaded ends the process with 3', async (t) => {
  const b = new BridgeProcess({ args: ['--tools', path.join(__dirname, 'no_such_module.js')] });
  t.after(() => b.kill());
  const { code } = await withTimeout(b.exited, 5000, 'exit after a bad --tools');
  assert.equal(code, 3);
  assert.match(b.stderr, /cannot load tools from/);
});
