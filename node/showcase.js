// The showcase tools of the Node bridge: the same names, arguments and result shapes as
// python/snakepit_bridge/adapters/showcase.py, so the host's tests, demo and benchmarks
// can drive a Node pool exactly as they drive a Python one.
'use strict';

const fs = require('node:fs');
const { setTimeout: delay } = require('node:timers/promises');

const THREAD_LIMIT_VARS = [
  'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_NUM_THREADS', 'NUMEXPR_NUM_THREADS',
  'VECLIB_MAXIMUM_THREADS',
];

// The Python tools raise these built-in exceptions; the same names reach the host.
class ValueError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ValueError';
  }
}

class RuntimeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RuntimeError';
  }
}

const held = [];  // hold_memory keeps its buffers here until the process ends

// Blocks the whole thread, like time.sleep in a Python tool that holds the event loop.
function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(0, Number(ms)));
}

// Python writes f"{value}": strings and numbers as themselves, the rest as JSON.
function recordText(value) {
  return typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
}

/// Registers the showcase tools on bridge.
function register(bridge) {
  bridge.tool('echo', (args) => args, { description: 'Returns all its arguments as a map' });

  bridge.tool('add', ({ a, b }) => a + b,
    { description: 'Returns a + b', params: ['a', 'b'] });

  bridge.tool('sleep', async ({ ms }) => {
    await delay(Number(ms));
    return { slept_ms: ms, pid: process.pid };
  }, { description: 'Sleeps ms milliseconds (without blocking other calls)', params: ['ms'] });

  bridge.tool('async_sleep', async ({ ms }) => {
    await delay(Number(ms));
    return { slept_ms: ms, pid: process.pid };
  }, { description: 'Sleeps ms milliseconds on the event loop (async tool)', params: ['ms'] });

  bridge.tool('fail', ({ message }) => {
    throw new ValueError(message);
  }, { description: 'Raises ValueError(message)', defaults: { message: 'boom' } });

  bridge.tool('crash', ({ code }) => {
    process.exit(Number(code));
  }, { description: 'Exits the worker process at once with the given code', defaults: { code: 1 } });

  bridge.tool('crash_signal', ({ signal }) => {
    process.kill(process.pid, Number(signal));
  }, {
    description: 'Kills the worker process with the given signal (11: segfault)',
    defaults: { signal: 11 },
  });

  bridge.tool('hold_memory', ({ mb }) => {
    held.push(Buffer.alloc(Number(mb) * (1 << 20), 1));
    const total = held.reduce((n, b) => n + b.length, 0);
    return { held_mb: Math.floor(total / (1 << 20)), pid: process.pid };
  }, {
    description: 'Keeps mb megabytes allocated (touched) until the process ends; returns the total held',
    params: ['mb'],
  });

  bridge.tool('info', (args, ctx) => {
    const env = {};
    for (const k of THREAD_LIMIT_VARS) env[k] = process.env[k] === undefined ? null : process.env[k];
    return { pid: process.pid, ppid: process.ppid, worker_id: ctx.workerId, env };
  }, { description: 'Process facts: pid, ppid, worker id, thread-limit env', params: [] });

  bridge.tool('env', ({ name }) => (process.env[name] === undefined ? null : process.env[name]),
    { description: 'Value of an environment variable (null when unset)', params: ['name'] });

  bridge.tool('stream_progress', async function* streamProgress({ steps, delay_ms: delayMs }) {
    const total = Math.floor(Number(steps));
    for (let step = 1; step <= total; step++) {
      if (delayMs) await delay(Number(delayMs));
      yield { step, total };
    }
  }, {
    description: 'Streams {step, total} for step in 1..steps',
    defaults: { steps: 5, delay_ms: 0 },
  });

  bridge.tool('record', ({ path, value }) => {
    fs.appendFileSync(path, `${recordText(value)}\n`);
    return true;
  }, { description: 'Appends value and a newline to the file at path; returns true', params: ['path', 'value'] });

  bridge.tool('stream_record', function* streamRecord({ steps, path, size }) {
    const pad = 'x'.repeat(Math.floor(Number(size)));
    for (let step = 1; step <= Math.floor(Number(steps)); step++) {
      if (path) fs.appendFileSync(path, `${step}\n`);
      yield pad ? { step, pad } : { step };
    }
  }, {
    description: 'Streams steps chunks, appending a line to path as each is produced ' +
      '(shows how far the producer ran ahead of the consumer)',
    defaults: { steps: 10, path: '', size: 0 },
  });

  bridge.tool('stream_fail', function* streamFail({ after }) {
    for (let step = 1; step <= Math.floor(Number(after)); step++) yield { step };
    throw new RuntimeError(`failed after ${after} chunks`);
  }, { description: 'Streams `after` chunks, then raises RuntimeError', defaults: { after: 2 } });

  bridge.tool('request_metadata', (args, ctx) => ({
    correlation_id: ctx.correlationId || '',
    session_id: ctx.sessionId || '',
    deadline_ms: ctx.deadlineMs,
    pid: process.pid,
  }), {
    description: "The request's correlation id, session id and deadline as the worker saw them",
    params: [],
  });

  bridge.tool('timed_sleep', async ({ ms }) => {
    const start = Date.now() / 1000;
    await delay(Number(ms));
    return { start, end: Date.now() / 1000, pid: process.pid };
  }, {
    description: 'Sleeps ms milliseconds; returns wall-clock start and end (seconds) and the pid, to observe overlap',
    params: ['ms'],
  });

  bridge.tool('block_loop', ({ ms }) => {
    sleepSync(ms);
    return true;
  }, {
    description: "Blocks the worker's event loop for ms milliseconds (a misbehaving tool: " +
      'the worker stops answering, heartbeats included)',
    params: ['ms'],
  });

  bridge.tool('slow_probe', async ({ path, value, ms }) => {
    fs.appendFileSync(path, `${recordText(value)}\n`);
    await delay(Number(ms));
    return true;
  }, {
    description: 'Records value to the file at path, then sleeps ms milliseconds ' +
      '(proves whether a request executed)',
    params: ['path', 'value'],
    defaults: { ms: 500 },
  });

  bridge.tool('bytes_echo', (args, ctx) => {
    const sizes = {};
    let total = 0;
    for (const [k, v] of Object.entries(ctx.binaryArgs)) {
      sizes[k] = v.length;
      total += v.length;
    }
    return { sizes, total, other: Object.keys(args).filter((k) => !(k in sizes)).sort() };
  }, { description: 'Sizes of the binary (and other) parameters it received' });

  bridge.tool('bytes_concat', (args, ctx) => {
    const names = Object.keys(ctx.binaryArgs).sort();
    return Buffer.concat(names.map((k) => ctx.binaryArgs[k]));
  }, { description: 'Concatenation of all binary parameters (sorted by name) as bytes' });

  bridge.tool('log', ({ message, level, raw }, ctx) => {
    ctx.log(String(level).toLowerCase(), message);
    if (raw) console.error(message);
    return true;
  }, {
    description: 'Logs message at level (debug, info, warning, error) and, if raw, prints it to stderr too',
    params: ['message'],
    defaults: { level: 'info', raw: false },
  });

  bridge.tool('print_stdout', ({ message }) => {
    console.log(message);
    process.stdout.write(`${message} (process.stdout.write)\n`);
    return true;
  }, {
    description: 'Prints message with console.log and process.stdout.write (both reach stderr, never the frame channel)',
    params: ['message'],
  });
}

module.exports = { register, ValueError, RuntimeError };
