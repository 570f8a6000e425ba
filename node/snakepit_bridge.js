// The Node.js side of Snakepit's stdio worker protocol (docs/workers.md): register tools
// on a Bridge, then run() serves length-prefixed JSON frames on fds 0/1. The JavaScript
// counterpart of python/snakepit_bridge's adapter (`@tool`) and stdio server.
'use strict';

const { performance } = require('node:perf_hooks');

const VERSION = '0.1.0';
const DEFAULT_MAX_MESSAGE_BYTES = 100 * 1024 * 1024;
const DEFAULT_GRACE_MS = 5000;
// A stream producer waits for the host once this much output is queued, so a fast
// generator cannot run arbitrarily far ahead of a slow reader.
const STREAM_BACKLOG_BYTES = 64 * 1024;
// Frames of at least this many characters are encoded on their own before batching.
const LARGE_FRAME_CHARS = 1 << 16;
// What a graceful stop grants writing the last responses and the stop hooks even when
// the calls in progress used up the grace period.
const DRAIN_MIN_MS = 100;
const STOP_HOOK_MIN_MS = 500;
// On EOF the host is gone; the stop hook gets this long before the process exits.
const EOF_STOP_HOOK_MS = 500;

const EXIT_PROTOCOL = 2;  // oversize or undecodable frame: the channel cannot be trusted
const EXIT_START = 1;     // onStart failed

/// The requested tool is not registered (the host maps it to unknown_tool).
class UnknownToolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'UnknownToolError';
  }
}

/// The arguments do not fit the tool (the host maps it to invalid_argument).
class InvalidArgumentError extends Error {
  constructor(message) {
    super(message);
    this.name = 'InvalidArgumentError';
  }
}

/// Host-owned session state is not reachable over stdio in protocol v1.
class NotImplementedError extends Error {
  constructor(message) {
    super(message);
    this.name = 'NotImplementedError';
  }
}

// ---------------------------------------------------------------- environment

function envInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : fallback;
}

/// The per-process settings the host passes in the environment (stdio-spec "Lifecycle").
function readEnvironment(env = process.env) {
  let adapterConfig = {};
  let adapterConfigError = null;
  const rawConfig = env.SNAKEPIT_ADAPTER_CONFIG;
  if (rawConfig !== undefined && rawConfig !== '') {
    try {
      const parsed = JSON.parse(rawConfig);
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
        adapterConfig = parsed;
      } else {
        adapterConfigError = 'SNAKEPIT_ADAPTER_CONFIG is not a JSON object';
      }
    } catch (err) {
      adapterConfigError = `SNAKEPIT_ADAPTER_CONFIG is not valid JSON: ${err.message}`;
    }
  }
  return {
    workerId: env.SNAKEPIT_WORKER_ID || '',
    pool: env.SNAKEPIT_POOL || '',
    adapterConfig,
    adapterConfigError,
    logLevel: (env.SNAKEPIT_LOG_LEVEL || 'warning').trim().toLowerCase(),
    logFormat: (env.SNAKEPIT_LOG_FORMAT || '').trim().toLowerCase() === 'json' ? 'json' : 'text',
    maxMessageBytes: envInt('SNAKEPIT_MAX_MESSAGE_BYTES', DEFAULT_MAX_MESSAGE_BYTES),
    graceMs: envInt('SNAKEPIT_GRACE_MS', DEFAULT_GRACE_MS),
    threads: envInt('SNAKEPIT_THREADS', 1),
  };
}

// ---------------------------------------------------------------- timestamps

let cachedMs = -1;
let cachedIso = '';

/// ISO-8601 UTC of now; recomputed at most once per millisecond (it is on every frame).
function isoNow() {
  const now = Date.now();
  if (now !== cachedMs) {
    cachedMs = now;
    cachedIso = new Date(now).toISOString();
  }
  return cachedIso;
}

// ---------------------------------------------------------------- logging

const LEVELS = { debug: 10, info: 20, warning: 30, warn: 30, error: 40, critical: 50, none: 100 };
const LEVEL_NAMES = { 10: 'DEBUG', 20: 'INFO', 30: 'WARNING', 40: 'ERROR', 50: 'CRITICAL' };

/// Log records on stderr in the Python bridge's two formats, so the host parses both alike.
class Logger {
  constructor(name, settings, write) {
    this.name = name;
    this.workerId = settings.workerId || '-';
    this.threshold = LEVELS[settings.logLevel] !== undefined ? LEVELS[settings.logLevel] : 30;
    this.json = settings.logFormat === 'json';
    this.write = write;
  }

  enabled(level) {
    const n = LEVELS[level];
    return n !== undefined && n >= this.threshold && n < 100;
  }

  log(level, msg, correlationId) {
    if (!this.enabled(level)) return;
    const levelName = LEVEL_NAMES[LEVELS[level]];
    const cid = correlationId || '-';
    let line;
    if (this.json) {
      line = JSON.stringify({
        ts: isoNow(), level: levelName, logger: this.name, msg: String(msg),
        worker_id: this.workerId, correlation_id: cid, pid: process.pid,
      });
    } else {
      line = `${isoNow()} ${levelName} snakepit_bridge[${process.pid}] ` +
        `worker=${this.workerId} cid=${cid} ${this.name}: ${msg}`;
    }
    this.write(line + '\n');
  }

  debug(msg, cid) { this.log('debug', msg, cid); }
  info(msg, cid) { this.log('info', msg, cid); }
  warning(msg, cid) { this.log('warning', msg, cid); }
  error(msg, cid) { this.log('error', msg, cid); }
}

// ---------------------------------------------------------------- the private channel

let channel = null;

/// Keeps fd 1 for frames: returns a writer bound to the real stdout stream and points
/// process.stdout.write (hence console.log/info/debug/dir/table) at stderr. With the
/// json log format every printed line becomes a {"msg", "stream"} record, as in Python.
/// Done once per process, as early as possible (a Bridge does it when constructed), so
/// that code run while tools are loaded cannot print into the channel either.
function takeOverStdio(settings) {
  if (channel === null) channel = redirectStdout(settings);
  return channel;
}

function redirectStdout(settings) {
  const out = process.stdout;
  const err = process.stderr;
  const writeFrames = out.write.bind(out);
  const writeStderr = err.write.bind(err);
  if (settings.logFormat === 'json') {
    out.write = lineRecords('stdout', writeStderr, settings.workerId);
    err.write = lineRecords('stderr', writeStderr, settings.workerId);
  } else {
    out.write = function writeToStderr(chunk, encoding, cb) {
      return writeStderr(chunk, encoding, cb);
    };
  }
  return { out, writeFrames, writeStderr };
}

function lineRecords(streamName, writeStderr, workerId) {
  let pending = '';
  return function writeLines(chunk, encoding, cb) {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    const lines = (pending + text).split('\n');
    pending = lines.pop();
    let data = '';
    for (const line of lines) {
      data += JSON.stringify({ msg: line, stream: streamName, worker_id: workerId || '-',
        pid: process.pid }) + '\n';
    }
    if (data) writeStderr(data);
    if (cb) process.nextTick(cb);
    return true;
  };
}

// ---------------------------------------------------------------- frames in

/// Splits the input byte stream into frames. Partial frames are kept as a list of
/// chunks and joined once complete, so a large frame costs one copy, not one per read.
class FrameReader {
  constructor(maxBytes, onFrame, onOversize) {
    this.maxBytes = maxBytes;
    this.onFrame = onFrame;
    this.onOversize = onOversize;
    this.parts = null;  // chunks of an incomplete frame
    this.partsLen = 0;
    this.want = 0;      // bytes needed in parts before parsing can progress
  }

  push(chunk) {
    let buf = chunk;
    if (this.parts !== null) {
      this.parts.push(chunk);
      this.partsLen += chunk.length;
      if (this.partsLen < this.want) return;
      buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.partsLen);
      this.parts = null;
      this.partsLen = 0;
    }
    let off = 0;
    const end = buf.length;
    while (end - off >= 4) {
      const n = buf.readUInt32BE(off);
      if (n > this.maxBytes) {
        this.onOversize(n);
        return;
      }
      if (end - off - 4 < n) {
        this.want = 4 + n;
        this.keep(buf, off);
        return;
      }
      off += 4;
      this.onFrame(buf, off, off + n);
      off += n;
      // onFrame may have stopped the bridge (SIGTERM seen, oversize): nothing more here.
      if (this.parts === undefined) return;
    }
    if (off < end) {
      this.want = 4;
      this.keep(buf, off);
    }
  }

  keep(buf, off) {
    // A small tail of a big joined buffer is copied so the big one can be freed.
    const rest = buf.length > 1 << 20 && buf.length - off < 1 << 16
      ? Buffer.from(buf.subarray(off)) : buf.subarray(off);
    this.parts = [rest];
    this.partsLen = rest.length;
  }

  /// Drops what is buffered and ignores everything after (stop reading requests).
  close() {
    this.parts = undefined;
    this.push = () => {};
  }
}

// ---------------------------------------------------------------- frames out

/// Writes frames in order to the real stdout. Frames produced in the same turn of the
/// event loop go out as one buffer in one write; while the pipe is full (write returned
/// false) frames queue up and leave together after 'drain'.
class FrameWriter {
  constructor(out, writeFrames, onError) {
    this.out = out;
    this.writeFrames = writeFrames;
    this.queue = [];
    this.lens = [];
    this.queuedBytes = 0;
    this.scheduled = false;
    this.blocked = false;
    this.waiters = [];
    this.writesPending = 0;  // handed to the stream, not yet on the pipe
    this.idleWaiters = [];
    this.flushBound = () => this.flush();
    this.onWritten = () => {
      if (--this.writesPending === 0 && this.idleWaiters.length > 0) {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const resolve of w) resolve();
      }
    };
    this.onDrain = () => {
      this.blocked = false;
      this.flush();
    };
    out.on('error', onError);
  }

  /// Queues one frame: a JSON text whose UTF-8 length is byteLen, or its UTF-8 bytes.
  send(json, byteLen) {
    this.queue.push(json);
    this.lens.push(byteLen);
    this.queuedBytes += 4 + byteLen;
    if (!this.scheduled && !this.blocked) {
      this.scheduled = true;
      setImmediate(this.flushBound);
    }
  }

  /// True when a producer should wait (waitDrain) before making more output.
  backlogged() {
    return this.blocked || this.queuedBytes > STREAM_BACKLOG_BYTES;
  }

  flush() {
    this.scheduled = false;
    if (this.blocked) return;
    const q = this.queue;
    if (q.length === 0) {
      this.wake();
      return;
    }
    const lens = this.lens;
    const buf = Buffer.allocUnsafe(this.queuedBytes);
    let off = 0;
    for (let i = 0; i < q.length; i++) {
      buf.writeUInt32BE(lens[i], off);
      off += 4;
      const item = q[i];
      off += typeof item === 'string' ? buf.write(item, off, lens[i], 'utf8') : item.copy(buf, off);
    }
    this.queue = [];
    this.lens = [];
    this.queuedBytes = 0;
    this.writesPending++;
    if (this.writeFrames(buf, this.onWritten)) {
      this.wake();
    } else {
      this.blocked = true;
      this.out.once('drain', this.onDrain);
    }
  }

  wake() {
    if (this.waiters.length === 0) return;
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }

  /// Resolves once the queued frames have been handed to a pipe that is not full.
  waitDrain() {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      if (!this.scheduled && !this.blocked) {
        this.scheduled = true;
        setImmediate(this.flushBound);
      }
    });
  }

  /// Resolves once everything written so far has left the process (or the pipe broke).
  async drained() {
    while (this.queue.length > 0 || this.blocked) await this.waitDrain();
    if (this.writesPending > 0) await new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

// ---------------------------------------------------------------- errors and values

function errorType(err) {
  let type = err.name;
  if ((typeof type !== 'string' || type === '' || type === 'Error') &&
      err.constructor && typeof err.constructor.name === 'string' && err.constructor.name) {
    type = err.constructor.name;
  }
  return typeof type === 'string' && type ? type : 'Error';
}

/// The failure fields of a thrown value: message, class name and stack.
function errorFields(err) {
  if (err instanceof Error) {
    const type = errorType(err);
    const message = err.message === undefined || err.message === '' ? type : String(err.message);
    return { error: message, error_type: type, traceback: typeof err.stack === 'string' ? err.stack : '' };
  }
  let message;
  try {
    message = typeof err === 'string' ? err : JSON.stringify(err);
  } catch (_) {
    message = String(err);
  }
  return { error: message === undefined ? String(err) : message, error_type: 'Error', traceback: '' };
}

function isThenable(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function') &&
    typeof v.then === 'function';
}

function isStreamable(v) {
  if (v === null || typeof v !== 'object' || Buffer.isBuffer(v)) return false;
  return typeof v[Symbol.asyncIterator] === 'function' ||
    (typeof v[Symbol.iterator] === 'function' && typeof v.next === 'function');
}

function isBytes(v) {
  return v instanceof Uint8Array;
}

function toBase64(v) {
  return (Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength))
    .toString('base64');
}

// A chunk is any JSON value; bytes travel as base64 text (chunk frames have no binary field).
function chunkValue(v) {
  return isBytes(v) ? toBase64(v) : v;
}

function isGeneratorFunction(fn) {
  const name = fn && fn.constructor && fn.constructor.name;
  return name === 'GeneratorFunction' || name === 'AsyncGeneratorFunction';
}

const EMPTY = Object.freeze({});

// ---------------------------------------------------------------- per-call context

/// What a tool learns about its call besides the arguments (second parameter of a tool).
class CallContext {
  constructor(bridge, req, binaryArgs) {
    this.id = req.id;
    this.sessionId = req.session_id === undefined ? null : req.session_id;
    this.correlationId = req.correlation_id === undefined ? null : req.correlation_id;
    this.deadlineMs = req.deadline_ms === undefined ? null : req.deadline_ms;
    this.stream = req.stream === true;
    this.binaryArgs = binaryArgs;
    this.workerId = bridge.settings.workerId;
    this.adapterConfig = bridge.settings.adapterConfig;
    this.bridge = bridge;
  }

  /// Logs through the bridge's logger with this call's correlation id.
  log(level, msg) {
    this.bridge.logger.log(level, msg, this.correlationId);
  }

  /// Session state lives in the host and is reachable only from gRPC workers.
  get session() {
    return SESSION_UNAVAILABLE;
  }
}

function sessionUnavailable() {
  throw new NotImplementedError(
    'session state (get/set/increment) and host tools need the gRPC worker kind ' +
    '(kind = "grpc"); a stdio worker cannot reach them');
}

const SESSION_UNAVAILABLE = Object.freeze({
  get: sessionUnavailable, set: sessionUnavailable, increment: sessionUnavailable,
  delete: sessionUnavailable, callTool: sessionUnavailable,
});

function decodeBinaryArgs(raw) {
  if (raw === undefined || raw === null) return EMPTY;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InvalidArgumentError('binary_args must be an object of base64 strings');
  }
  const out = {};
  for (const key of Object.keys(raw)) {
    if (typeof raw[key] !== 'string') {
      throw new InvalidArgumentError(`binary_args.${key} is not a base64 string`);
    }
    out[key] = Buffer.from(raw[key], 'base64');
  }
  return out;
}

// Checks args against a tool's declared params (required names) and defaults, as
// Python's signature binding does; fills in defaults. Only for tools that declare them.
function bindArgs(entry, args) {
  let bound = args;
  for (const name of entry.params) {
    if (!Object.prototype.hasOwnProperty.call(args, name)) {
      throw new InvalidArgumentError(`${entry.name}: missing a required argument: '${name}'`);
    }
  }
  for (const key of Object.keys(args)) {
    if (!entry.known.has(key)) {
      throw new InvalidArgumentError(`${entry.name}: got an unexpected argument '${key}'`);
    }
  }
  if (entry.defaultNames.length > 0) {
    bound = Object.assign({}, entry.defaults, args);
  }
  return bound;
}

// ---------------------------------------------------------------- the bridge

/// A registry of tools and the server of the stdio protocol for one worker process.
class Bridge {
  constructor(options = {}) {
    this.settings = readEnvironment(options.env || process.env);
    this.tools = new Map();
    this.startHooks = [];
    this.stopHooks = [];
    this.toolList = null;
    this.running = false;
    this.ready = false;
    this.stopping = false;
    this.stopped = false;
    this.backlog = [];  // requests that arrived before the start hooks finished
    this.inFlight = 0;
    this.logger = new Logger(options.loggerName || 'snakepit_bridge.node', this.settings,
      (line) => process.stderr.write(line));
    // options.stdio === false leaves stdout alone until run() (a bridge built in-process,
    // e.g. by a test runner that reports on stdout).
    if (options.stdio !== false) this.logger.write = takeOverStdio(this.settings).writeStderr;
    if (options.onStart) this.onStart(options.onStart);
    if (options.onStop) this.onStop(options.onStop);
  }

  /// Registers fn(args, ctx) as tool `name`. fn may return a value, a Buffer, a Promise,
  /// or (streaming tools; generator functions are detected) an iterator / async iterator
  /// of chunks. options: description, streaming, params (required argument names) and
  /// defaults ({name: value}); with params or defaults, other argument names are refused.
  tool(name, fn, options = {}) {
    if (typeof name !== 'string' || name === '') throw new TypeError('tool name must be a non-empty string');
    if (name === 'ping') throw new TypeError('"ping" is reserved: the bridge answers it itself');
    if (typeof fn !== 'function') throw new TypeError(`tool ${name}: fn must be a function`);
    const params = options.params ? Array.from(options.params) : [];
    const defaults = options.defaults ? Object.assign({}, options.defaults) : {};
    const defaultNames = Object.keys(defaults);
    const validate = options.params !== undefined || options.defaults !== undefined;
    this.tools.set(name, {
      name,
      fn,
      description: options.description || '',
      streaming: Boolean(options.streaming) || isGeneratorFunction(fn),
      params,
      defaults,
      defaultNames,
      known: new Set(params.concat(defaultNames)),
      validate,
    });
    this.toolList = null;
    return this;
  }

  /// Runs fn(config) (may be async) before the first ping is answered.
  onStart(fn) {
    this.startHooks.push(fn);
    return this;
  }

  /// Runs fn() (may be async) on a graceful stop, after the last response is written.
  onStop(fn) {
    this.stopHooks.push(fn);
    return this;
  }

  /// The ping result: readiness plus what the host uses for routing and streaming.
  pingResult() {
    if (this.toolList === null) {
      const list = [{ name: 'ping', streaming: false,
        description: 'Readiness and heartbeat (answered by the bridge)' }];
      for (const t of this.tools.values()) {
        list.push({ name: t.name, streaming: t.streaming, description: t.description });
      }
      list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      this.toolList = list;
    }
    return { pong: true, bridge: 'node', version: VERSION, streaming: true, tools: this.toolList };
  }

  /// Serves the protocol on fds 0/1 until EOF on stdin or SIGTERM/SIGINT.
  run() {
    if (this.running) throw new Error('bridge is already running');
    this.running = true;
    const io = takeOverStdio(this.settings);
    this.logger.write = io.writeStderr;
    if (this.settings.adapterConfigError) this.logger.warning(this.settings.adapterConfigError);
    this.writer = new FrameWriter(io.out, io.writeFrames, (err) => this.onOutputError(err));
    this.reader = new FrameReader(this.settings.maxMessageBytes,
      (buf, start, end) => this.onFrame(buf, start, end),
      (n) => this.fatal(`incoming frame of ${n} bytes exceeds SNAKEPIT_MAX_MESSAGE_BYTES ` +
        `(${this.settings.maxMessageBytes})`));
    process.on('SIGTERM', () => this.stop('SIGTERM'));
    process.on('SIGINT', () => this.stop('SIGINT'));
    process.on('unhandledRejection', (reason) => {
      const f = errorFields(reason);
      this.logger.error(`unhandled promise rejection: ${f.error_type}: ${f.error}\n${f.traceback}`);
    });
    const stdin = process.stdin;
    stdin.on('data', (chunk) => this.reader.push(chunk));
    stdin.on('end', () => this.onEof());
    stdin.on('error', (err) => {
      this.logger.error(`stdin: ${err.message}`);
      this.onEof();
    });
    this.start();
    return this;
  }

  async start() {
    const s = this.settings;
    const config = {
      workerId: s.workerId, pool: s.pool, adapterConfig: s.adapterConfig,
      logLevel: s.logLevel, logFormat: s.logFormat, maxMessageBytes: s.maxMessageBytes,
      graceMs: s.graceMs, threads: s.threads,
    };
    try {
      for (const hook of this.startHooks) await hook(config);
    } catch (err) {
      const f = errorFields(err);
      this.logger.error(`onStart failed: ${f.error_type}: ${f.error}\n${f.traceback}`);
      this.writeStderrNow(`snakepit_bridge (node): onStart failed: ${f.error}\n`);
      process.exit(EXIT_START);
    }
    if (this.stopping) return;
    this.ready = true;
    this.logger.info(`ready: ${this.tools.size} tools, pid ${process.pid}`);
    const waiting = this.backlog;
    this.backlog = [];
    for (const req of waiting) this.dispatch(req);
  }

  // ------------------------------------------------------------ requests

  onFrame(buf, start, end) {
    let req;
    try {
      req = JSON.parse(buf.toString('utf8', start, end));
    } catch (err) {
      this.fatal(`incoming frame is not valid JSON: ${err.message}`);
      return;
    }
    if (req === null || typeof req !== 'object' || !Number.isInteger(req.id) || req.id < 0) {
      this.fatal('incoming frame is not a request object with an unsigned integer "id"');
      return;
    }
    if (this.ready) this.dispatch(req);
    else this.backlog.push(req);
  }

  dispatch(req) {
    const id = req.id;
    const command = req.command;
    if (command === 'ping') {
      this.sendResult(id, this.pingResult(), -1);
      return;
    }
    const entry = this.tools.get(command);
    if (entry === undefined) {
      this.sendError(id, new UnknownToolError(`unknown tool ${JSON.stringify(command)}; ` +
        `available: ${Array.from(this.tools.keys()).sort().join(', ') || '(none)'}`));
      return;
    }
    this.inFlight++;
    const t0 = performance.now();
    let args = req.args;
    let ctx;
    let result;
    try {
      if (args === undefined || args === null) {
        args = {};
      } else if (typeof args !== 'object' || Array.isArray(args)) {
        throw new InvalidArgumentError('args must be a JSON object');
      }
      if (entry.validate) args = bindArgs(entry, args);
      ctx = new CallContext(this, req, decodeBinaryArgs(req.binary_args));
      if (ctx.stream) {
        this.runStream(id, entry, args, ctx, t0);
        return;
      }
      result = entry.fn(args, ctx);
    } catch (err) {
      this.finishError(id, err, ctx);
      return;
    }
    if (isThenable(result)) {
      result.then((v) => this.finishCall(id, entry, v, t0, ctx),
        (err) => this.finishError(id, err, ctx));
    } else {
      this.finishCall(id, entry, result, t0, ctx);
    }
  }

  finishCall(id, entry, value, t0, ctx) {
    if (entry.streaming && isStreamable(value)) {
      // A plain call of a streaming tool: the chunks, collected, are the result.
      this.collect(value).then((list) => this.finishOk(id, list, t0),
        (err) => this.finishError(id, err, ctx));
      return;
    }
    this.finishOk(id, value, t0);
  }

  async collect(iterable) {
    const out = [];
    if (typeof iterable[Symbol.asyncIterator] === 'function') {
      for await (const v of iterable) out.push(chunkValue(v));
    } else {
      for (const v of iterable) out.push(chunkValue(v));
    }
    return out;
  }

  finishOk(id, value, t0) {
    this.inFlight--;
    this.sendResult(id, value, t0);
    if (this.stopping && this.inFlight === 0) this.finishStop(false);
  }

  finishError(id, err, ctx) {
    this.inFlight--;
    const f = errorFields(err);
    this.logger.debug(`call ${id} failed: ${f.error_type}: ${f.error}`, ctx && ctx.correlationId);
    this.sendError(id, err);
    if (this.stopping && this.inFlight === 0) this.finishStop(false);
  }

  async runStream(id, entry, args, ctx, t0) {
    let iterator = null;
    try {
      let value = entry.fn(args, ctx);
      if (isThenable(value)) value = await value;
      if (!(entry.streaming && isStreamable(value))) {
        // Not a generator: its result is the stream's one chunk (stdio-spec "Streaming").
        this.sendChunk(id, value);
      } else {
        iterator = typeof value[Symbol.asyncIterator] === 'function'
          ? value[Symbol.asyncIterator]() : value[Symbol.iterator]();
        for (;;) {
          let step = iterator.next();
          if (isThenable(step)) step = await step;
          if (step.done) break;
          this.sendChunk(id, step.value);
          if (this.writer.backlogged()) await this.writer.waitDrain();
        }
        iterator = null;
      }
    } catch (err) {
      if (iterator !== null && typeof iterator.return === 'function') {
        try {
          const r = iterator.return();
          if (isThenable(r)) r.catch(() => {});
        } catch (_) { /* the failure being reported matters, not this one */ }
      }
      this.finishError(id, err, ctx);
      return;
    }
    this.finishOk(id, null, t0);
  }

  // ------------------------------------------------------------ responses

  // Small texts are measured and encoded straight into the batch buffer; large ones are
  // encoded once here (measuring a large non-ASCII string costs as much as encoding it).
  sendFrame(json) {
    if (json.length < LARGE_FRAME_CHARS) {
      const len = Buffer.byteLength(json, 'utf8');
      if (len > this.settings.maxMessageBytes) return len;
      this.writer.send(json, len);
      return 0;
    }
    const bytes = Buffer.from(json, 'utf8');
    if (bytes.length > this.settings.maxMessageBytes) return bytes.length;
    this.writer.send(bytes, bytes.length);
    return 0;
  }

  sendResult(id, value, t0) {
    let json;
    try {
      let body;
      if (value !== null && typeof value === 'object' && isBytes(value)) {
        body = `"result":null,"binary_result":"${toBase64(value)}"`;
      } else {
        const text = JSON.stringify(value);
        body = `"result":${text === undefined ? 'null' : text}`;
      }
      const ms = t0 < 0 ? '' : `,"execution_time_ms":${Math.round(performance.now() - t0)}`;
      json = `{"id":${id},"success":true,${body},"timestamp":"${isoNow()}"${ms}}`;
    } catch (err) {
      const e = new TypeError(`result is not JSON-serializable: ${err.message}`);
      this.sendError(id, e);
      return;
    }
    const over = this.sendFrame(json);
    if (over > 0) {
      this.sendError(id, new Error(`response of ${over} bytes exceeds ` +
        `SNAKEPIT_MAX_MESSAGE_BYTES (${this.settings.maxMessageBytes})`));
    }
  }

  sendError(id, err) {
    const f = errorFields(err);
    let json = JSON.stringify({ id, success: false, error: f.error, error_type: f.error_type,
      traceback: f.traceback, timestamp: isoNow() });
    if (this.sendFrame(json) > 0) {
      // A message too large to carry (the error text itself): keep its start.
      json = JSON.stringify({ id, success: false, error: f.error.slice(0, 4096),
        error_type: f.error_type, traceback: '', timestamp: isoNow() });
      this.sendFrame(json);
    }
  }

  sendChunk(id, value) {
    const text = JSON.stringify(chunkValue(value));
    const json = `{"id":${id},"chunk":${text === undefined ? 'null' : text}}`;
    const over = this.sendFrame(json);
    if (over > 0) {
      throw new Error(`chunk of ${over} bytes exceeds SNAKEPIT_MAX_MESSAGE_BYTES ` +
        `(${this.settings.maxMessageBytes})`);
    }
  }

  // ------------------------------------------------------------ lifecycle

  /// Graceful stop: read no more requests, let the calls in progress finish (up to
  /// SNAKEPIT_GRACE_MS), write their responses, run the stop hooks, exit 0. The whole
  /// stop fits in the grace period plus STOP_HOOK_MIN_MS, so a host that waits a little
  /// longer than the grace period before SIGKILL sees the stop hooks run.
  stop(reason = 'stop') {
    if (this.stopping) return;
    this.stopping = true;
    this.stopDeadline = Date.now() + this.settings.graceMs;
    this.logger.info(`${reason}: stopping, ${this.inFlight} calls in progress`);
    this.reader.close();
    this.backlog = [];
    if (this.inFlight === 0) {
      this.finishStop(false);
    } else {
      this.graceTimer = setTimeout(() => this.finishStop(true), this.settings.graceMs);
    }
  }

  async finishStop(timedOut) {
    if (this.stopped) return;
    this.stopped = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    if (timedOut) {
      this.logger.warning(`grace period over: abandoning ${this.inFlight} calls in progress`);
    }
    await withTimeout(this.writer.drained(), Math.max(this.stopDeadline - Date.now(), DRAIN_MIN_MS));
    await this.runStopHooks(Math.max(this.stopDeadline - Date.now(), STOP_HOOK_MIN_MS));
    process.exit(0);
  }

  async runStopHooks(limitMs) {
    const hooks = this.stopHooks;
    this.stopHooks = [];
    const all = (async () => {
      for (const hook of hooks) {
        try {
          await hook();
        } catch (err) {
          const f = errorFields(err);
          this.logger.error(`onStop failed: ${f.error_type}: ${f.error}\n${f.traceback}`);
        }
      }
    })();
    if (!(await withTimeout(all, limitMs))) {
      this.logger.warning(`onStop did not finish within ${limitMs} ms`);
    }
  }

  onEof() {
    if (this.eof) return;
    this.eof = true;
    // The host is gone: whatever is already queued goes out now, running work is abandoned.
    this.reader.close();
    if (!this.writer.blocked) this.writer.flush();
    setTimeout(() => process.exit(0), EOF_STOP_HOOK_MS + 100).unref();
    this.runStopHooks(EOF_STOP_HOOK_MS).then(() => process.exit(0));
  }

  onOutputError(err) {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') {
      // The host closed its end: nobody is left to answer.
      process.exit(0);
    }
    this.fatal(`stdout: ${err.message}`);
  }

  fatal(message) {
    this.logger.error(message);
    this.writeStderrNow(`snakepit_bridge (node): ${message}\n`);
    process.exit(EXIT_PROTOCOL);
  }

  // The process exits right after: a synchronous write cannot be lost in a queue.
  writeStderrNow(text) {
    if (this.logger.enabled('error')) return;  // the log line already says it
    try {
      require('node:fs').writeSync(2, text);
    } catch (_) { /* stderr is gone as well */ }
  }
}

async function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/// A new Bridge (options: onStart, onStop, env, loggerName).
function createBridge(options) {
  return new Bridge(options);
}

module.exports = {
  Bridge,
  CallContext,
  createBridge,
  InvalidArgumentError,
  NotImplementedError,
  UnknownToolError,
  errorFields,
  readEnvironment,
  VERSION,
};
