'use strict';
// Per-event limits on Socket.IO: an event over its limit is answered with the
// envelope (on the ack, else on the `error` event) and never reaches the app.
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startStack, connected, once, sign, uniqueUser, assertEnvelope } = require('./harness');

const config = {
  websocket: { events: [{ name: 'send-message', limit: { rate: 3, period: '1m' } }] },
};

describe('Socket.IO event limits', { timeout: 60000 }, () => {
  let stack;
  let open = [];
  before(async () => { stack = await startStack({ config }); });
  after(() => stack && stack.stop());
  afterEach(() => { open.forEach((s) => s.close()); open = []; });

  const client = async (user, transports = ['websocket']) => {
    const s = stack.connect({ transports, auth: { token: sign({ email: user }) } });
    open.push(s);
    return connected(s);
  };
  const ack = (s, event, ...args) => s.timeout(3000).emitWithAck(event, ...args);
  const appCount = async (user, event) => {
    const res = await fetch(`${stack.appUrl}/api/debug/events?user=${encodeURIComponent(user)}`);
    return (await res.json()).events[event] || 0;
  };

  function assertLimited(envelope) {
    const err = assertEnvelope(assert, envelope, 'RATE_LIMIT_EXCEEDED');
    assert.equal(err.details.event, 'send-message');
    assert.equal(err.details.limit, 3);
    assert.equal(err.details.windowSeconds, 60);
    assert.ok(err.details.retryAfterSeconds > 0, JSON.stringify(err.details));
  }

  // overLimit sends 3 allowed messages, then one over the limit with an ack and
  // one without, and checks that the app and the room saw only the first 3.
  async function overLimit(transports) {
    const conv = uniqueUser('conv');
    const user = uniqueUser('limited');
    const [s, peer] = [await client(user, transports), await client(uniqueUser('peer'))];
    await ack(peer, 'join-conversation', { conversationId: conv });
    await ack(s, 'join-conversation', { conversationId: conv });
    let delivered = 0;
    peer.on('new-message', () => delivered++);

    for (let i = 1; i <= 3; i++) {
      assert.equal((await ack(s, 'send-message', { conversationId: conv, text: `m${i}` })).ok, true, `message ${i}`);
    }
    assertLimited(await ack(s, 'send-message', { conversationId: conv, text: 'm4' }));

    const errorEvent = once(s, 'error');
    s.emit('send-message', { conversationId: conv, text: 'm5' });
    assertLimited(await errorEvent);

    // Packets are handled in order: once these answer, anything forwarded before them has been seen.
    assert.equal((await ack(s, 'whoami')).email, user);
    const typing = once(peer, 'typing');
    s.emit('typing', { conversationId: conv });
    await typing;
    assert.equal(await appCount(user, 'send-message'), 3);
    assert.equal(delivered, 3);
    assert.equal(s.connected, true);
  }

  it('over the limit over WebSocket: envelope on the ack, else on `error`; the app never sees it', () => overLimit(['websocket']));

  it('over the limit over long-polling: the same', () => overLimit(['polling']));

  it('limits are per user', async () => {
    const conv = uniqueUser('conv');
    const s = await client(uniqueUser('fresh'));
    for (let i = 1; i <= 3; i++) {
      assert.equal((await ack(s, 'send-message', { conversationId: conv, text: `m${i}` })).ok, true);
    }
  });
});

// An IP blocked for abuse loses its open sockets too, not only new requests:
// the socket whose rejections caused the block would otherwise go on for the
// whole block.
describe('Socket.IO and abuse blocks', { timeout: 60000 }, () => {
  let stack;
  before(async () => {
    stack = await startStack({
      config: {
        rate_limit: { abuse_warning: 2, abuse_critical: 3 },
        websocket: { events: [{ name: 'send-message', limit: { rate: 1, period: '1m' } }] },
      },
    });
  });
  after(() => stack && stack.stop());

  it('a block disconnects the IP\'s sockets', async () => {
    const s = await connected(stack.connect({ transports: ['websocket'], auth: { token: sign({ email: uniqueUser('abuser') }) } }));
    const gone = once(s, 'disconnect', 10000);
    for (let i = 1; i <= 4; i++) { // 1 allowed, then rejections 1–3: the third blocks
      s.emit('send-message', { conversationId: 'c', text: `m${i}` });
    }
    assert.equal(await gone, 'io server disconnect');
    const res = await fetch(`${stack.url}/healthz`);
    assert.equal(res.status, 403);
    assertEnvelope(assert, await res.json(), 'IP_BLOCKED');
  });
});
