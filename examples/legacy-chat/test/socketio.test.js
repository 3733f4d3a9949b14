'use strict';
// Socket.IO through chatguard with the default websocket settings (auth optional):
// tokens, rooms, acks, binary, transports, the stats block and forced disconnects.
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startStack, connected, once, poll, sign, uniqueUser, assertEnvelope } = require('./harness');

const WS = { transports: ['websocket'] };

describe('Socket.IO through chatguard', { timeout: 60000 }, () => {
  let stack;
  let open = [];
  before(async () => { stack = await startStack(); });
  after(() => stack && stack.stop());
  afterEach(() => { open.forEach((s) => s.close()); open = []; });

  // client connects user (null: anonymous) with its token in the auth payload.
  const client = async (user, opts = {}) => {
    const s = stack.connect({ ...WS, ...(user && { auth: { token: sign({ email: user }) } }), ...opts });
    open.push(s);
    return connected(s);
  };
  const ack = (s, event, ...args) => s.timeout(3000).emitWithAck(event, ...args);
  const idle = () => poll(async () => {
    const { socket } = await stack.stats();
    assert.deepEqual({ sockets: socket?.connectedSockets, users: socket?.connectedUsers }, { sockets: 0, users: 0 });
    return socket;
  }, { what: 'no sockets in stats' });

  it('passes the token from the auth payload and from ?token= to the app', async () => {
    const a = uniqueUser('auth'), b = uniqueUser('query');
    const sa = await client(a);
    const sb = await client(null, { query: { token: sign({ email: b }) } });
    const anon = await client(null);
    assert.equal((await ack(sa, 'whoami')).email, a);
    assert.equal((await ack(sb, 'whoami')).email, b);
    assert.equal(await ack(anon, 'whoami'), null);
  });

  it('two clients in a conversation exchange messages, with acks', async () => {
    const conv = uniqueUser('conv');
    const a = uniqueUser('a'), b = uniqueUser('b');
    const [sa, sb] = [await client(a), await client(b)];
    assert.deepEqual(await ack(sa, 'join-conversation', { conversationId: conv }), { ok: true });
    assert.deepEqual(await ack(sb, 'join-conversation', { conversationId: conv }), { ok: true });

    const arriving = once(sb, 'new-message');
    const res = await ack(sa, 'send-message', { conversationId: conv, text: 'hello b' });
    assert.equal(res.ok, true);
    const msg = await arriving;
    assert.deepEqual([msg.id, msg.text, msg.from, msg.conversationId], [res.id, 'hello b', a, conv]);

    const back = once(sa, 'new-message');
    await ack(sb, 'send-message', { conversationId: conv, text: 'hello a' });
    assert.equal((await back).from, b);

    const typing = once(sb, 'typing');
    sa.emit('typing', { conversationId: conv });
    assert.equal((await typing).user, a);

    assert.deepEqual(await ack(sa, 'leave-conversation', { conversationId: conv }), { ok: true });
  });

  it('binary payloads arrive byte for byte', async () => {
    const s = await client(uniqueUser());
    const buf = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256));
    const echoed = await ack(s, 'echo-binary', buf);
    assert.ok(Buffer.from(echoed).equals(buf));
  });

  it('stats count sockets, users and conversations, and go back down', async () => {
    await idle();
    const user = uniqueUser('stats');
    const [s1, s2] = [await client(user), await client(user)];
    await ack(s1, 'join-conversation', { conversationId: uniqueUser('conv') });
    const during = await poll(async () => {
      const d = await stack.stats();
      assert.equal(d.socket.connectedSockets, 2);
      assert.ok(d.socket.activeConversations >= 1, 'activeConversations');
      return d;
    }, { what: 'two sockets in stats' });
    assert.equal(during.socket.connectedUsers, 1);
    assert.ok(during.memoryManager.maps.connectedUsers.size >= 1, JSON.stringify(during.memoryManager.maps));

    s1.close();
    s2.close();
    const afterwards = await idle();
    assert.equal(afterwards.activeConversations, 0);
  });

  it('admin DELETE /api/internal/sessions/<user> disconnects with "io server disconnect"', async () => {
    const user = uniqueUser('evict');
    const socks = [await client(user), await client(user)];
    const reasons = socks.map((s) => once(s, 'disconnect'));

    const unauth = await fetch(`${stack.adminUrl}/api/internal/sessions/${encodeURIComponent(user)}`, { method: 'DELETE' });
    assert.equal(unauth.status, 401);
    assert.equal(socks.every((s) => s.connected), true);

    const res = await stack.admin(`/api/internal/sessions/${encodeURIComponent(user)}`, { method: 'DELETE' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { success: true, data: { user, disconnected: 2 } });
    assert.deepEqual(await Promise.all(reasons), ['io server disconnect', 'io server disconnect']);

    const again = await stack.admin(`/api/internal/sessions/${encodeURIComponent(user)}`, { method: 'DELETE' });
    assert.equal(again.status, 404);
    assertEnvelope(assert, await again.json(), 'NOT_FOUND');
  });

  it('a polling-only client connects and gets acks', async () => {
    const user = uniqueUser('poll');
    const s = await client(user, { transports: ['polling'] });
    assert.equal(s.io.engine.transport.name, 'polling');
    assert.equal((await ack(s, 'whoami')).email, user);
    assert.deepEqual(await ack(s, 'join-conversation', { conversationId: 'general' }), { ok: true });
    assert.equal((await ack(s, 'send-message', { conversationId: 'general', text: 'by polling' })).ok, true);
  });

  it('a client that starts polling upgrades to websocket and keeps working', async () => {
    const conv = uniqueUser('conv');
    const user = uniqueUser('upgrade');
    const s = await client(user, { transports: ['polling', 'websocket'] });
    await poll(() => s.io.engine.transport.name === 'websocket', { what: 'upgrade to websocket' });
    assert.equal((await ack(s, 'whoami')).email, user);

    const peer = await client(uniqueUser());
    await ack(peer, 'join-conversation', { conversationId: conv });
    await ack(s, 'join-conversation', { conversationId: conv });
    const arriving = once(peer, 'new-message');
    await ack(s, 'send-message', { conversationId: conv, text: 'after upgrade' });
    assert.equal((await arriving).text, 'after upgrade');
  });
});
