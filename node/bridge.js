#!/usr/bin/env node
// The Node stdio worker the host starts (`node node/bridge.js [--tools PATH]...`): the
// showcase tools plus, with --tools, the tools of user modules exporting register(bridge),
// so a Node worker needs no copy of the bridge. Protocol: docs/workers.md.
'use strict';

const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { createBridge } = require('./snakepit_bridge');
const showcase = require('./showcase');

const EXIT_USAGE = 2;
const EXIT_TOOLS = 3;  // a --tools module failed to load (Python's adapter import error)

const USAGE = `usage: node node/bridge.js [--no-showcase] [--tools PATH]...
  --tools PATH    load a module exporting register(bridge) (CommonJS or ES module);
                  may be given more than once, later registrations replace earlier ones
  --no-showcase   serve only the tools of the --tools modules
Serves the Snakepit stdio protocol (docs/workers.md) on stdin/stdout.
`;

function parseArgs(argv) {
  const opts = { tools: [], showcase: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--tools') {
      if (i + 1 >= argv.length) throw new Error('--tools needs a path');
      opts.tools.push(argv[++i]);
    } else if (a.startsWith('--tools=')) {
      opts.tools.push(a.slice('--tools='.length));
    } else if (a === '--no-showcase') {
      opts.showcase = false;
    } else if (a === '-h' || a === '--help') {
      opts.help = true;
    } else {
      throw new Error(`unknown argument ${JSON.stringify(a)}`);
    }
  }
  return opts;
}

async function loadToolModule(file) {
  const abs = path.resolve(file);
  let mod;
  try {
    mod = require(abs);
  } catch (err) {
    if (err.code !== 'ERR_REQUIRE_ESM') throw err;
    mod = await import(pathToFileURL(abs).href);
  }
  const register = typeof mod === 'function' ? mod
    : typeof mod.register === 'function' ? mod.register
      : mod.default && typeof mod.default.register === 'function' ? mod.default.register
        : null;
  if (register === null) throw new Error(`${file} exports no register(bridge) function`);
  return register;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bridge.js: ${err.message}\n${USAGE}`);
    process.exit(EXIT_USAGE);
  }
  if (opts.help) {
    process.stderr.write(USAGE);
    return;
  }
  const bridge = createBridge();
  if (opts.showcase) showcase.register(bridge);
  for (const file of opts.tools) {
    try {
      const register = await loadToolModule(file);
      await register(bridge);
    } catch (err) {
      process.stderr.write(`bridge.js: cannot load tools from ${file}: ${err.stack || err}\n`);
      process.exit(EXIT_TOOLS);
    }
  }
  bridge.run();
}

main();
