'use strict';
// A connectedUsers entry that expires (no client events for its TTL) takes
// its sockets with it: the client sees "io server disconnect".
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startStack, connected, once, poll, sign, uniqueUser } = require('./harness');

const config = {
  tables: { connectedUsers: { ttl: '1s' } },
  memory: { sweep_interval: '200ms' },
};

describe('eviction by TTL', { timeout: 30000 }, () => {
  let stack;
  before(async () => { stack = await startStack({ config }); });
  after(() => stack && stack.stop());

  it('an idle client is disconnected with "io server disconnect"', async () => {
    const user = uniqueUser('idle');
    const s = await connected(stack.connect({ transports: ['websocket'], auth: { token: sign({ email: user }) } }));
    assert.equal((await s.timeout(3000).emitWithAck('whoami')).email, user);
    const started = Date.now();
    assert.equal(await once(s, 'disconnect', 5000), 'io server disconnect');
    assert.ok(Date.now() - started >= 500, 'evicted long before its TTL');
    assert.equal(s.active, false, 'the client must not reconnect');

    const d = await poll(async () => {
      const st = await stack.stats();
      assert.equal(st.socket.connectedSockets, 0);
      return st;
    }, { what: 'the evicted socket to leave stats' });
    assert.ok(d.memoryManager.maps.connectedUsers.evictions.expired >= 1, JSON.stringify(d.memoryManager.maps.connectedUsers));
  });
});
