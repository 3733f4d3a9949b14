'use strict';
// Quiet sockets sleep in chatguard (no library connection, no buffers) and
// wake for whatever comes first, from either side: real socket.io-client and
// real Socket.IO server.
const { describe, it, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startStack, connected, once, poll, sign, uniqueUser } = require('./harness');

describe('sleeping sockets', { timeout: 60000 }, () => {
  let stack;
  afterEach(() => stack && stack.stop());

  const client = async (user) => {
    const s = stack.connect({ transports: ['websocket'], auth: { token: sign({ email: user }) } });
    s.drops = [];
    s.on('disconnect', (reason) => s.drops.push(reason));
    return connected(s);
  };
  const ack = (s, event, ...args) => s.timeout(3000).emitWithAck(event, ...args);

  it('wake for messages either way and lose nothing', async () => {
    stack = await startStack();
    const conv = uniqueUser('nap');
    const a = uniqueUser('a'), b = uniqueUser('b');
    const [sa, sb] = [await client(a), await client(b)];
    assert.deepEqual(await ack(sa, 'join-conversation', { conversationId: conv }), { ok: true });
    assert.deepEqual(await ack(sb, 'join-conversation', { conversationId: conv }), { ok: true });
    const asleep = () => poll(async () => {
      const got = await stack.metric('chatguard_websocket_sleeping');
      assert.equal(got, 2, `${got} sockets asleep`);
      return true;
    }, { timeout: 10000, interval: 100, what: 'both sockets asleep' });

    for (const [from, to, text] of [[sa, sb, 'after a nap'], [sb, sa, 'and back']]) {
      await asleep();
      // The sender's message wakes its socket; the app's broadcast wakes the other's.
      const arriving = once(to, 'new-message');
      const res = await ack(from, 'send-message', { conversationId: conv, text });
      assert.equal(res.ok, true);
      assert.deepEqual([(await arriving).text, (await arriving).id], [text, res.id]);
    }
    assert.equal((await stack.stats()).socket.connectedUsers, 2);
    assert.deepEqual([sa.drops, sb.drops], [[], []]);
  });

  it('wake for heartbeats: pings and pongs between naps are never lost', async () => {
    // A ping every 4 s, so the sockets sleep between them (after 2 s of
    // quiet); a 2 s timeout, so a lost ping or pong disconnects within 6 s.
    stack = await startStack({ appEnv: { SIO_PING_INTERVAL: '4000', SIO_PING_TIMEOUT: '2000' } });
    const [sa, sb] = [await client(uniqueUser('a')), await client(uniqueUser('b'))];
    const woken = await stack.metric('chatguard_websocket_wakes_total');
    await new Promise((r) => setTimeout(r, 13000)); // three heartbeats
    const wakes = await stack.metric('chatguard_websocket_wakes_total') - woken;
    assert.ok(wakes >= 4, `${wakes} wakes: the sockets did not sleep between heartbeats`);
    assert.deepEqual([sa.drops, sb.drops], [[], []]);
    assert.ok(sa.connected && sb.connected);
    assert.equal((await ack(sa, 'whoami')).email.startsWith('a-'), true);
  });
});
