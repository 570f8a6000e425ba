// Calls through a real `node node/bridge.js` child: ping, results, errors, binary
// values, streaming, concurrency and framing, as the C++ host would see them.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startBridge, encodeFrame } = require('../testlib/helpers');

const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const FIXTURES = path.join(__dirname, '..', 'testlib', 'fixtures');

test('ping answers with the bridge facts and the tool list', async (t) => {
  const b = await startBridge(t);
  const r = b.readyPing;
  assert.equal(r.success, true);
  assert.match(r.timestamp, ISO_UTC);
  assert.equal(r.result.pong, true);
  assert.equal(r.result.bridge, 'node');
  assert.match(r.result.version, /^\d+\.\d+\.\d+$/);
  assert.equal(r.result.streaming, true);
  const tools = Object.fromEntries(r.result.tools.map((x) => [x.name, x]));
  for (const name of ['ping', 'echo', 'add', 'fail', 'sleep', 'crash', 'stream_progress']) {
    assert.ok(tools[name], `tool ${name} listed`);
    assert.equal(typeof tools[name].description, 'string');
  }
  assert.equal(tools.echo.streaming, false);
  assert.equal(tools.stream_progress.streaming, true);
  assert.equal(tools.stream_record.streaming, true);
});

test('echo returns its arguments and add adds', async (t) => {
  const b = await startBridge(t);
  const echo = await b.call('echo', { value: 42, nested: { list: [1, 'two', null] } });
  assert.equal(echo.success, true);
  assert.deepEqual(echo.result, { value: 42, nested: { list: [1, 'two', null] } });
  assert.match(echo.timestamp, ISO_UTC);
  assert.ok(Number.isInteger(echo.execution_time_ms));
  const sum = await b.call('add', { a: 2, b: 40 });
  assert.equal(sum.result, 42);
});

test('a thrown error comes back with its type, message and stack', async (t) => {
  const b = await startBridge(t);
  const r = await b.call('fail', { message: 'no' });
  assert.equal(r.success, false);
  assert.equal(r.error, 'no');
  assert.equal(r.error_type, 'ValueError');
  assert.match(r.traceback, /^ValueError: no\n\s+at /);
  assert.match(r.traceback, /showcase\.js/);
  const dflt = await b.call('fail');
  assert.equal(dflt.error, 'boom');
});

test('an unknown tool is an UnknownToolError naming the tool', async (t) => {
  const b = await startBridge(t);
  const r = await b.call('no_such_tool', {});
  assert.equal(r.success, false);
  assert.equal(r.error_type, 'UnknownToolError');
  assert.match(r.error, /no_such_tool/);
});

test('arguments that do not fit a tool are an InvalidArgumentError', async (t) => {
  const b = await startBridge(t);
  const missing = await b.call('add', { a: 1 });
  assert.equal(missing.error_type, 'InvalidArgumentError');
  assert.match(missing.error, /'b'/);
  const extra = await b.call('add', { a: 1, b: 2, c: 3 });
  assert.equal(extra.error_type, 'InvalidArgumentError');
  const notObject = await b.call('echo', [1, 2]);
  assert.equal(notObject.error_type, 'InvalidArgumentError');
});

test('a streaming call sends its chunks, then the final response', async (t) => {
  const b = await startBridge(t);
  const id = b.send('stream_progress', { steps: 3, delay_ms: 5 }, { stream: true });
  const final = await b.response(id);
  assert.deepEqual(final.success, true);
  assert.equal(final.result, null);
  const mine = b.frames.filter((f) => f.id === id);
  assert.deepEqual(mine.slice(0, 3).map((f) => f.chunk),
    [{ step: 1, total: 3 }, { step: 2, total: 3 }, { step: 3, total: 3 }]);
  assert.equal(mine.length, 4, 'the final response is the last frame of the call');
});

test('a failing stream sends its chunks, then the failure', async (t) => {
  const b = await startBridge(t);
  const id = b.send('stream_fail', { after: 2 }, { stream: true });
  const final = await b.response(id);
  assert.equal(final.success, false);
  assert.equal(final.error_type, 'RuntimeError');
  assert.equal(final.error, 'failed after 2 chunks');
  assert.deepEqual(b.frames.filter((f) => f.id === id && 'chunk' in f).map((f) => f.chunk),
    [{ step: 1 }, { step: 2 }]);
});

test('streaming a plain tool gives its result as one chunk; a plain call of a generator collects', async (t) => {
  const b = await startBridge(t);
  const id = b.send('echo', { x: 1 }, { stream: true });
  const final = await b.response(id);
  assert.equal(final.success, true);
  assert.equal(final.result, null);
  assert.deepEqual(b.frames.filter((f) => f.id === id && 'chunk' in f).map((f) => f.chunk), [{ x: 1 }]);
  const collected = await b.call('stream_progress', { steps: 2 });
  assert.deepEqual(collected.result, [{ step: 1, total: 2 }, { step: 2, total: 2 }]);
});

test('calls in flight are answered as they finish, out of order', async (t) => {
  const b = await startBridge(t);
  const slow = b.send('sleep', { ms: 400 });
  const fast = b.send('sleep', { ms: 20 });
  const [rs, rf] = await Promise.all([b.response(slow), b.response(fast)]);
  assert.deepEqual(rs.result.slept_ms, 400);
  assert.deepEqual(rf.result.slept_ms, 20);
  const order = b.frames.filter((f) => f.id === slow || f.id === fast).map((f) => f.id);
  assert.deepEqual(order, [fast, slow]);
});

test('console.log and process.stdout.write in a tool reach stderr, not the frames', async (t) => {
  const b = await startBridge(t);
  const r = await b.call('print_stdout', { message: 'printed-by-a-tool' });
  assert.equal(r.result, true);
  const after = await b.call('add', { a: 1, b: 1 });
  assert.equal(after.result, 2);
  assert.match(b.stderr, /printed-by-a-tool\n/);
  assert.match(b.stderr, /printed-by-a-tool \(process\.stdout\.write\)/);
});

test('with the json log format printed lines become records on stderr', async (t) => {
  const b = await startBridge(t, { env: { SNAKEPIT_LOG_FORMAT: 'json', SNAKEPIT_LOG_LEVEL: 'info' } });
  await b.call('print_stdout', { message: 'as-json' });
  await b.call('log', { message: 'logged-line', level: 'warning' }, { correlation_id: 'cid-7' });
  const records = b.stderr.trim().split('\n').map((l) => JSON.parse(l));
  const printed = records.find((r) => r.msg === 'as-json');
  assert.equal(printed.stream, 'stdout');
  assert.equal(printed.worker_id, 'test-w1');
  const logged = records.find((r) => r.msg === 'logged-line');
  assert.equal(logged.level, 'WARNING');
  assert.equal(logged.correlation_id, 'cid-7');
  assert.equal(typeof logged.logger, 'string');
});

test('partial frames and many frames in one write are all decoded', async (t) => {
  const b = await startBridge(t);
  // One frame a byte at a time.
  const frame = encodeFrame({ id: 1000, command: 'add', args: { a: 1, b: 2 } });
  for (const byte of frame) {
    b.writeRaw(Buffer.from([byte]));
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.equal((await b.response(1000)).result, 3);
  // Two hundred frames in one write, the last one split across two writes.
  const many = [];
  for (let i = 0; i < 200; i++) many.push(encodeFrame({ id: 2000 + i, command: 'add', args: { a: i, b: 1 } }));
  const all = Buffer.concat(many);
  b.writeRaw(all.subarray(0, all.length - 5));
  await new Promise((resolve) => setTimeout(resolve, 50));
  b.writeRaw(all.subarray(all.length - 5));
  const answers = await Promise.all(many.map((_, i) => b.response(2000 + i)));
  answers.forEach((r, i) => assert.equal(r.result, i + 1));
});

test('binary arguments arrive as Buffers and a Buffer result is binary_result', async (t) => {
  const b = await startBridge(t);
  const binary = { a: Buffer.from('hello ').toString('base64'), b: Buffer.from([0, 255, 1]).toString('base64') };
  const sizes = await b.call('bytes_echo', { other: 1 }, { binary_args: binary });
  assert.deepEqual(sizes.result, { sizes: { a: 6, b: 3 }, total: 9, other: ['other'] });
  const joined = await b.call('bytes_concat', {}, { binary_args: binary });
  assert.equal(joined.result, null);
  assert.deepEqual(Buffer.from(joined.binary_result, 'base64'), Buffer.from([...Buffer.from('hello '), 0, 255, 1]));
});

test('tools from --tools modules (CommonJS and ES) get the call context and adapter config', async (t) => {
  const b = await startBridge(t, {
    args: ['--tools', path.join(FIXTURES, 'hooks_tools.js'), `--tools=${path.join(FIXTURES, 'esm_tools.mjs')}`],
    env: { SNAKEPIT_ADAPTER_CONFIG: '{"model": "tiny", "n": 3}', SNAKEPIT_POOL: 'nodepool' },
  });
  const ctx = await b.call('context', {}, {
    session_id: 's-1', correlation_id: 'c-1', deadline_ms: 1500,
    binary_args: { blob: Buffer.from('raw').toString('base64') },
  });
  assert.deepEqual(ctx.result, {
    sessionId: 's-1', correlationId: 'c-1', deadlineMs: 1500, workerId: 'test-w1',
    adapterConfig: { model: 'tiny', n: 3 }, binaryArgs: { blob: 'raw' },
  });
  const started = await b.call('start_config');
  assert.equal(started.result.workerId, 'test-w1');
  assert.equal(started.result.pool, 'nodepool');
  assert.deepEqual(started.result.adapterConfig, { model: 'tiny', n: 3 });
  assert.deepEqual((await b.call('esm_hello', { name: 'node' })).result, 'hello node');
  assert.deepEqual((await b.call('echo', { v: 1 })).result, { replaced: true, args: { v: 1 } });
  assert.equal((await b.call('add', { a: 1, b: 2 })).result, 3, 'showcase tools stay');
  assert.match(b.stderr, /hooks_tools: loading\n/);
  assert.match(b.stderr, /hooks_tools: started\n/);
  const session = await b.call('session_get');
  assert.equal(session.success, false);
  assert.match(session.error, /gRPC worker kind/);
});

test('a response larger than SNAKEPIT_MAX_MESSAGE_BYTES becomes an error, the worker lives on', async (t) => {
  const b = await startBridge(t, {
    args: ['--tools', path.join(FIXTURES, 'hooks_tools.js')],
    env: { SNAKEPIT_MAX_MESSAGE_BYTES: '4096' },
  });
  const r = await b.call('big_result', { n: 10000 });
  assert.equal(r.success, false);
  assert.match(r.error, /exceeds SNAKEPIT_MAX_MESSAGE_BYTES/);
  assert.equal((await b.call('add', { a: 1, b: 2 })).result, 3);
});

test('a stream waits for a host that does not read, then delivers every chunk', async (t) => {
  const dir = require('node:fs').mkdtempSync(path.join(require('node:os').tmpdir(), 'snakepit-node-test-'));
  t.after(() => require('node:fs').rmSync(dir, { recursive: true, force: true }));
  const produced = path.join(dir, 'produced.txt');
  const b = await startBridge(t);
  b.child.stdout.pause();
  const steps = 20000;
  const id = b.send('stream_record', { steps, path: produced, size: 1000 }, { stream: true });
  await new Promise((resolve) => setTimeout(resolve, 700));
  const ahead = require('node:fs').readFileSync(produced, 'utf8').split('\n').length - 1;
  assert.ok(ahead > 0, 'the producer started');
  assert.ok(ahead < steps / 4, `the producer ran ${ahead} chunks ahead of a reader that reads nothing`);
  b.child.stdout.resume();
  const final = await b.response(id, 30000);
  assert.equal(final.success, true);
  const chunks = b.frames.filter((f) => f.id === id && 'chunk' in f);
  assert.equal(chunks.length, steps);
  assert.equal(chunks[steps - 1].chunk.step, steps);
});

test('--no-showcase serves only the --tools modules', async (t) => {
  const b = await startBridge(t, { args: ['--no-showcase', '--tools', path.join(FIXTURES, 'esm_tools.mjs')] });
  assert.deepEqual(b.readyPing.result.tools.map((x) => x.name), ['esm_hello', 'ping']);
  assert.equal((await b.call('add', { a: 1, b: 2 })).error_type, 'UnknownToolError');
  assert.equal((await b.call('esm_hello', { name: 'x' })).result, 'hello x');
});
