'use strict';
// POST /drain on the admin listener: every WebSocket is closed with 1001
// (Socket.IO clients see "transport close"), and new connections are refused.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { startStack, connected, once, onceArgs, poll, sign, uniqueUser } = require('./harness');

// openWS resolves with an open ws client, or rejects with the refusal
// (err.status set when the server answered HTTP instead of upgrading).
function openWS(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
      res.on('error', reject);
    });
  });
}

describe('drain', { timeout: 30000 }, () => {
  let stack;
  before(async () => { stack = await startStack({ config: { server: { shutdown_timeout: '5s' } } }); });
  after(() => stack && stack.stop());

  it('closes every WebSocket with 1001 and refuses new connections', async () => {
    const wsURL = stack.url.replace(/^http/, 'ws');
    const sio = await connected(stack.connect({ transports: ['websocket'], auth: { token: sign({ email: uniqueUser() }) } }));

    // A raw Engine.IO client: open packet, then a Socket.IO CONNECT to "/".
    const raw = await openWS(`${wsURL}/socket.io/?EIO=4&transport=websocket`);
    const messages = [];
    raw.on('message', (m) => messages.push(m.toString()));
    raw.send('40');
    await poll(() => messages.some((m) => m.startsWith('40')), { what: 'the CONNECT answer' });
    const echo = await openWS(`${wsURL}/ws/echo`);

    const reasons = [once(sio, 'disconnect'), onceArgs(raw, 'close'), onceArgs(echo, 'close')];
    const res = await stack.admin('/drain', { method: 'POST' });
    assert.equal(res.status, 200, await res.text());
    const [sioReason, [rawCode], [echoCode]] = await Promise.all(reasons);
    assert.equal(sioReason, 'transport close');
    assert.equal(rawCode, 1001, `raw Engine.IO messages: ${messages}`);
    assert.equal(echoCode, 1001);

    assert.equal((await fetch(`${stack.adminUrl}/readyz`)).status, 503);

    const late = stack.connect({ transports: ['websocket'] });
    await assert.rejects(connected(late), 'a Socket.IO client connected after the drain');
    late.close();
    await assert.rejects(openWS(`${wsURL}/socket.io/?EIO=4&transport=websocket`), (err) => {
      // Either the listener is closed already, or it answers the 503 envelope.
      if (err.status === undefined) return true;
      assert.equal(err.status, 503, err.body);
      assert.equal(JSON.parse(err.body).error.code, 'SERVICE_UNAVAILABLE');
      return true;
    });
  });
});
