'use strict';
// Test harness: starts the legacy app and a chatguard in front of it, on free
// loopback ports, and stops both (also when a test fails or the runner exits).
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const jwt = require('jsonwebtoken');
const { io } = require('socket.io-client');

const APP_DIR = path.resolve(__dirname, '..');
const CHATGUARD_BIN = process.env.CHATGUARD_BIN || path.resolve(APP_DIR, '../../bin/chatguard');
// Long enough for chatguard: 32 bytes or more for the JWT secret, 16 for the stats token.
const SECRET = 'e2e-secret-' + process.pid + '-0123456789abcdef0123456789';
const STATS_TOKEN = 'e2e-stats-' + process.pid + '-0123456789';
const VERBOSE = !!process.env.E2E_VERBOSE; // E2E_VERBOSE=1: children's output goes to stderr live

// Children die with us, however we end, and temp dirs go with them.
const children = new Set();
const tmpDirs = new Set();
const killAll = () => {
  children.forEach((c) => c.kill('SIGKILL'));
  tmpDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
};
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => { killAll(); process.exit(128 + (sig === 'SIGINT' ? 2 : 15)); });
}

// freePort finds a port nobody listens on, below the kernel's ephemeral
// range: a port from listen(0) is an ephemeral one, which any outgoing
// connection (chatguard's to the app, a client's) may take as its source
// port before the process it was picked for binds it (EADDRINUSE).
const handedOut = new Set();
function ephemeralLow() {
  try {
    return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}
function tryListen(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, () => srv.close(() => resolve(true))); // every address, as the app listens
  });
}
async function freePort() {
  const low = ephemeralLow();
  const span = low - 20000;
  for (let i = 0; span > 1000 && i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * span);
    if (handedOut.has(port)) continue;
    if (await tryListen(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port below the ephemeral range (${low})`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// poll calls fn until it returns a truthy value (returned) or timeout ms pass.
// fn may also throw (an assertion, say) to mean "not yet"; the timeout error
// then carries its message.
async function poll(fn, { timeout = 5000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = JSON.stringify(v);
    } catch (err) {
      if (err.fatal) throw err;
      last = err.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout}ms waiting for ${what}; last: ${last}`);
    await sleep(interval);
  }
}

// onceArgs resolves with the arguments of emitter's next `event`, rejecting after ms.
function onceArgs(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no "${event}" within ${ms}ms`));
    }, ms);
    function on(...args) {
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(args);
    }
    emitter.on(event, on);
  });
}

// once resolves with the first argument of emitter's next `event`.
const once = async (emitter, event, ms) => (await onceArgs(emitter, event, ms))[0];

function start(name, cmd, args, env) {
  const child = spawn(cmd, args, { cwd: APP_DIR, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  const keep = (chunk) => {
    if (VERBOSE) process.stderr.write(`[${name}] ${chunk}`);
    output = (output + chunk).slice(-20000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  child.output = () => output;
  return child;
}

async function stop(child, ms = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  await child.exited;
  clearTimeout(timer);
}

// waitHTTP polls url until it answers 200, failing at once if child exits.
async function waitHTTP(url, child, ms = 15000) {
  let exited = null;
  child.exited.then((r) => { exited = r; });
  await poll(async () => {
    if (exited) throw Object.assign(new Error(`exited early (${JSON.stringify(exited)})`), { fatal: true });
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    return res.status === 200;
  }, { timeout: ms, what: url }).catch((err) => {
    throw new Error(`${err.message}\n--- output ---\n${child.output()}`);
  });
}

/**
 * startStack starts the app and chatguard. config is written as the YAML file
 * CHATGUARD_CONFIG points at (JSON is YAML); env adds chatguard variables.
 * Returns URLs, helpers and stop().
 */
async function startStack({ config = {}, env = {}, appEnv = {} } = {}) {
  const [appPort, port, adminPort] = [await freePort(), await freePort(), await freePort()];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chatguard-e2e-'));
  tmpDirs.add(tmp);
  const configFile = path.join(tmp, 'chatguard.yaml');
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2));

  const stack = { appUrl: `http://127.0.0.1:${appPort}`, url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}` };
  const sockets = new Set();
  stack.stop = async () => {
    for (const s of sockets) s.close();
    await Promise.all([stop(stack.chatguard), stop(stack.app)]);
    fs.rmSync(tmp, { recursive: true, force: true });
    tmpDirs.delete(tmp);
  };
  try {
    stack.app = start('app', process.execPath, ['server.js'], { ...process.env, PORT: String(appPort), JWT_SECRET: SECRET, NODE_ENV: 'development', ...appEnv });
    await waitHTTP(`${stack.appUrl}/healthz`, stack.app);
    stack.chatguard = start('chatguard', CHATGUARD_BIN, [], {
      PATH: process.env.PATH,
      HOME: tmp,
      LOG_LEVEL: 'warn', 
      CHATGUARD_LISTEN: `127.0.0.1:${port}`,
      CHATGUARD_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
      CHATGUARD_UPSTREAM: stack.appUrl,
      CHATGUARD_STATS_TOKEN: STATS_TOKEN,
      CHATGUARD_JWT_SECRET: SECRET,
      CHATGUARD_RATE_LIMIT_FILE: path.join(tmp, 'rate-limits.json'),
      CHATGUARD_PROFILE_DIR: path.join(tmp, 'profiles'),
      CHATGUARD_DRAIN_DELAY: '0s',
      CHATGUARD_CONFIG: configFile,
      ...env,
    });
    await waitHTTP(`${stack.adminUrl}/readyz`, stack.chatguard);
  } catch (err) {
    await stack.stop();
    throw err;
  }

  // connect opens a socket.io-client through chatguard (no reconnection) and
  // remembers it so that stop() closes it.
  stack.connect = (opts = {}) => {
    const s = io(stack.url, { reconnection: false, timeout: 5000, forceNew: true, ...opts });
    sockets.add(s);
    return s;
  };
  stack.stats = () => adminJSON(stack.adminUrl + '/api/internal/stats');
  // metric reads one unlabelled series from chatguard's /metrics (NaN: absent).
  stack.metric = async (name) => {
    const text = await (await fetch(stack.adminUrl + '/metrics', { signal: AbortSignal.timeout(5000) })).text();
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : NaN;
  };
  stack.admin = (p, init = {}) => fetch(stack.adminUrl + p, {
    ...init,
    headers: { authorization: `Bearer ${STATS_TOKEN}`, ...init.headers },
    signal: AbortSignal.timeout(5000),
  });
  stack.output = () => `--- app ---\n${stack.app.output()}\n--- chatguard ---\n${stack.chatguard.output()}`;
  return stack;
}

async function adminJSON(url) {
  const res = await fetch(url, { headers: { authorization: `Bearer ${STATS_TOKEN}` }, signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return (await res.json()).data;
}

// connected resolves when s connects, rejects with the connect_error.
function connected(s, ms = 5000) {
  if (s.connected) return Promise.resolve(s);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no connect within ${ms}ms`)), ms);
    s.once('connect', () => { clearTimeout(timer); resolve(s); });
    s.once('connect_error', (err) => { clearTimeout(timer); reject(err); });
  });
}

// sign makes a user token the app and chatguard both accept (or, with another
// secret or a past exp, one they reject).
function sign(claims, { secret = SECRET, expiresIn = '1h' } = {}) {
  const opts = 'exp' in claims ? {} : { expiresIn };
  return jwt.sign({ role: 'basic', name: claims.email, ...claims }, secret, { algorithm: 'HS256', ...opts });
}

let seq = 0;
// uniqueUser returns an email no other test uses, so limits never overlap.
const uniqueUser = (prefix = 'user') => `${prefix}-${process.pid}-${++seq}@e2e.test`;

// assertEnvelope checks the error envelope's shape and returns its error.
function assertEnvelope(assert, body, code) {
  assert.equal(body.success, false, JSON.stringify(body));
  assert.equal(body.error.code, code, JSON.stringify(body));
  assert.equal(typeof body.error.message, 'string');
  assert.ok(!Number.isNaN(Date.parse(body.error.timestamp)), 'timestamp');
  assert.equal(typeof body.requestId, 'string');
  return body.error;
}

module.exports = { startStack, poll, once, onceArgs, connected, sign, uniqueUser, assertEnvelope, STATS_TOKEN };
