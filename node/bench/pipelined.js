#!/usr/bin/env node
// Throughput of one Node bridge process: pipelined echo round trips per second (20000
// requests, up to 64 in flight), plus startup-to-first-ping time and idle RSS.
// Usage: node node/bench/pipelined.js [--requests N] [--in-flight N] [--starts N]
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const BRIDGE = path.join(__dirname, '..', 'bridge.js');

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}

function frame(obj) {
  const body = Buffer.from(JSON.stringify(obj), 'utf8');
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

/// A bridge child with a lean frame decoder calling onFrame(obj) per response.
function spawnBridge(onFrame) {
  const child = spawn(process.execPath, [BRIDGE], { stdio: ['pipe', 'pipe', 'inherit'] });
  let pending = null;
  child.stdout.on('data', (chunk) => {
    let buf = pending === null ? chunk : Buffer.concat([pending, chunk]);
    let off = 0;
    while (buf.length - off >= 4) {
      const n = buf.readUInt32BE(off);
      if (buf.length - off - 4 < n) break;
      onFrame(JSON.parse(buf.toString('utf8', off + 4, off + 4 + n)));
      off += 4 + n;
    }
    pending = off < buf.length ? buf.subarray(off) : null;
  });
  child.exited = new Promise((resolve) => child.on('exit', resolve));
  return child;
}

function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

async function startupToPing() {
  const t0 = process.hrtime.bigint();
  let child;
  await new Promise((resolve) => {
    child = spawnBridge(() => resolve());
    child.stdin.write(frame({ id: 1, command: 'ping', args: {} }));
  });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  await new Promise((resolve) => setTimeout(resolve, 200));  // let startup garbage settle
  const rss = rssKiB(child.pid);
  child.stdin.end();
  await child.exited;
  return { ms, rss };
}

async function pipelined(total, window) {
  let sent = 0;
  let received = 0;
  let resolveDone;
  const done = new Promise((resolve) => { resolveDone = resolve; });
  const child = spawnBridge((f) => {
    if (!f.success) throw new Error(`call failed: ${JSON.stringify(f)}`);
    received++;
    if (received === total) resolveDone();
  });
  // Warm up (and wait for readiness) with one ping.
  await new Promise((resolve) => {
    child.stdout.once('data', () => resolve());
    child.stdin.write(frame({ id: 0, command: 'ping', args: {} }));
  });
  received = 0;
  const t0 = process.hrtime.bigint();
  // Refill the window as responses arrive; requests made in one turn go out in one write.
  const pump = () => {
    const batch = [];
    while (sent < total && sent - received < window) {
      sent++;
      batch.push(frame({ id: sent, command: 'echo', args: { value: sent }, timestamp: '2024-01-01T00:00:00.000Z' }));
    }
    if (batch.length) child.stdin.write(batch.length === 1 ? batch[0] : Buffer.concat(batch));
  };
  child.stdout.on('data', () => setImmediate(pump));
  pump();
  await done;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const rss = rssKiB(child.pid);
  child.stdin.end();
  await child.exited;
  return { perSecond: total / seconds, seconds, rss };
}

async function main() {
  const total = option('--requests', 20000);
  const window = option('--in-flight', 64);
  const starts = option('--starts', 5);
  const startup = [];
  let idleRss = 0;
  for (let i = 0; i < starts; i++) {
    const s = await startupToPing();
    startup.push(s.ms);
    idleRss = s.rss;
  }
  startup.sort((a, b) => a - b);
  const run = await pipelined(total, window);
  const out = {
    node: process.version,
    requests: total,
    in_flight: window,
    round_trips_per_s: Math.round(run.perSecond),
    seconds: Number(run.seconds.toFixed(3)),
    startup_to_ping_ms_median: Number(startup[Math.floor(startup.length / 2)].toFixed(1)),
    startup_to_ping_ms_min: Number(startup[0].toFixed(1)),
    idle_rss_kib: idleRss,
    rss_after_run_kib: run.rss,
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
