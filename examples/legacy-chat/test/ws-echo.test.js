'use strict';
// A plain WebSocket path (outside /socket.io/) is relayed frame by frame:
// text and binary echo exactly, the close code and reason reach the app.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { startStack, once, onceArgs, poll } = require('./harness');

describe('plain WebSocket relay', { timeout: 30000 }, () => {
  let stack;
  before(async () => { stack = await startStack(); });
  after(() => stack && stack.stop());

  it('echoes text and binary, and mirrors the client\'s close code and reason', async () => {
    const ws = new WebSocket(`${stack.url.replace(/^http/, 'ws')}/ws/echo`);
    await once(ws, 'open');

    const text = 'héllo — ' + 'x'.repeat(70000);
    let reply = onceArgs(ws, 'message');
    ws.send(text);
    let [data, isBinary] = await reply;
    assert.equal(isBinary, false);
    assert.equal(data.toString('utf8'), text);

    const bin = Buffer.from(Array.from({ length: 100000 }, (_, i) => (i * 31) % 256));
    reply = onceArgs(ws, 'message');
    ws.send(bin);
    [data, isBinary] = await reply;
    assert.equal(isBinary, true);
    assert.ok(Buffer.from(data).equals(bin), 'binary echo differs');

    const closed = onceArgs(ws, 'close');
    ws.close(4001, 'bye');
    const [code, reason] = await closed;
    assert.equal(code, 4001);
    assert.equal(reason.toString(), 'bye');

    const last = await poll(async () => {
      const res = await fetch(`${stack.url}/ws/last-close`);
      assert.equal(res.status, 200);
      const body = await res.json();
      return body.code !== null && body;
    }, { what: 'the app to see the close' });
    assert.deepEqual(last, { code: 4001, reason: 'bye' });
  });
});
