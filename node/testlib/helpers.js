// Test helpers: start `node node/bridge.js` as a real child process and talk to it in
// frames, as the C++ host does. Every started child is killed when its test ends.
'use strict';

const { spawn } = require('node:child_process');
const path = require('node:path');

const BRIDGE = path.join(__dirname, '..', 'bridge.js');

function encodeFrame(obj) {
  const body = Buffer.from(JSON.stringify(obj), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/// A bridge child process with a frame decoder on its stdout.
class BridgeProcess {
  constructor({ args = [], env = {} } = {}) {
    this.child = spawn(process.execPath, [BRIDGE, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, SNAKEPIT_WORKER_ID: 'test-w1', ...env },
    });
    this.frames = [];       // every decoded frame, in arrival order
    this.waiters = [];      // {pred, resolve}
    this.stderr = '';
    this.parts = [];
    this.partsLen = 0;
    this.nextId = 1;
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exitedAt = Date.now();
        resolve({ code, signal });
      });
    });
    this.child.stdout.on('data', (chunk) => this.onData(chunk));
    this.child.stderr.on('data', (chunk) => { this.stderr += chunk.toString('utf8'); });
    this.child.stdin.on('error', () => {});  // the child may be gone already (EPIPE)
  }

  onData(chunk) {
    this.parts.push(chunk);
    this.partsLen += chunk.length;
    // Join only once the frame at the front is complete: linear in the bytes received.
    while (this.partsLen >= 4) {
      if (this.parts[0].length < 4) this.parts = [Buffer.concat(this.parts, this.partsLen)];
      const n = this.parts[0].readUInt32BE(0);
      if (this.partsLen < 4 + n) return;
      const buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.partsLen);
      const frame = JSON.parse(buf.toString('utf8', 4, 4 + n));
      const rest = buf.subarray(4 + n);
      this.parts = rest.length ? [rest] : [];
      this.partsLen = rest.length;
      this.frames.push(frame);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(frame)) return true;
        w.resolve(frame);
        return false;
      });
    }
  }

  /// Sends a request; returns its id.
  send(command, args = {}, extra = {}) {
    const id = extra.id !== undefined ? extra.id : this.nextId++;
    this.child.stdin.write(encodeFrame({ id, command, args, timestamp: new Date().toISOString(), ...extra, id }));
    return id;
  }

  writeRaw(buf) {
    this.child.stdin.write(buf);
  }

  /// The first frame (already received or still to come) for which pred holds.
  waitFrame(pred, timeoutMs = 10000) {
    const seen = this.frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(
        `no matching frame within ${timeoutMs} ms; stderr:\n${this.stderr}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (f) => { clearTimeout(timer); resolve(f); } });
    });
  }

  /// The final response (not a chunk) of request id.
  response(id, timeoutMs) {
    return this.waitFrame((f) => f.id === id && f.chunk === undefined, timeoutMs);
  }

  /// Sends a request and waits for its final response.
  async call(command, args = {}, extra = {}) {
    return this.response(this.send(command, args, extra));
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    return this.exited;
  }
}

/// Starts a bridge and waits until it answers ping (as the host does after spawn).
async function startBridge(t, options) {
  const b = new BridgeProcess(options);
  t.after(() => b.kill());
  b.readyPing = await b.call('ping');
  return b;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]);
}

module.exports = { BridgeProcess, startBridge, encodeFrame, withTimeout, BRIDGE };
