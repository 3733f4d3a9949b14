'use strict';
// Socket.IO stress through chatguard (make test-socket-stress): STRESS_CLIENTS
// (500) concurrent clients connect, join, send and disconnect, STRESS_WAVES (3)
// times over. Afterwards chatguard must hold no socket, its tables must be back
// to their starting sizes and its goroutines back within +10.
const { startStack, connected, poll, sign } = require('./harness');

const CLIENTS = Number(process.env.STRESS_CLIENTS || 500);
const WAVES = Number(process.env.STRESS_WAVES || 3);
const GOROUTINE_SLACK = 10;

const config = {
  // Every client comes from 127.0.0.1; a few share a user.
  websocket: { max_sockets_per_ip: 0, max_sockets_per_user: 0 },
  // Idle keep-alive connections from polling clients would hold goroutines for 2 min.
  server: { idle_timeout: '2s' },
};

async function figures(stack) {
  const stats = await stack.stats();
  return {
    sockets: stats.socket ? stats.socket.connectedSockets : NaN,
    connectedUsers: stats.memoryManager.maps.connectedUsers.size,
    conversationUsers: stats.memoryManager.maps.conversationUsers.size,
    goroutines: await stack.metric('go_goroutines'),
  };
}

// one client's life: connect, join, send with ack, leave.
async function life(stack, i, wave) {
  const transports = i % 5 === 0 ? ['polling', 'websocket'] : ['websocket'];
  const s = stack.connect({ transports, timeout: 15000, auth: { token: sign({ email: `stress-${i}@stress.test` }) } });
  try {
    await connected(s, 15000);
    const conversationId = `stress-conv-${i % 50}`;
    const joined = await s.timeout(15000).emitWithAck('join-conversation', { conversationId });
    if (!joined || joined.ok !== true) throw new Error(`join: ${JSON.stringify(joined)}`);
    const sent = await s.timeout(15000).emitWithAck('send-message', { conversationId, text: `wave ${wave} from ${i}` });
    if (!sent || sent.ok !== true) throw new Error(`send: ${JSON.stringify(sent)}`);
  } finally {
    s.close();
  }
}

async function main() {
  const stack = await startStack({ config });
  let ok = true;
  const check = (cond, msg) => {
    console.log(`${cond ? 'ok  ' : 'FAIL'} ${msg}`);
    ok = ok && cond;
  };
  try {
    const start = await figures(stack);
    console.log('start', start);
    for (let wave = 1; wave <= WAVES; wave++) {
      const t0 = Date.now();
      const results = await Promise.allSettled(Array.from({ length: CLIENTS }, (_, i) => life(stack, i, wave)));
      const failed = results.filter((r) => r.status === 'rejected');
      check(failed.length === 0, `wave ${wave}: ${CLIENTS - failed.length}/${CLIENTS} clients in ${Date.now() - t0} ms` +
        (failed.length ? ` (first error: ${failed[0].reason && failed[0].reason.message})` : ''));
    }

    const end = await poll(async () => {
      const f = await figures(stack);
      return f.sockets === 0 && f.connectedUsers === start.connectedUsers && f.conversationUsers === start.conversationUsers && f;
    }, { timeout: 15000, interval: 250, what: 'sockets and tables to drain' }).catch(() => figures(stack));
    check(end.sockets === 0, `socket.connectedSockets ${end.sockets} (want 0)`);
    check(end.connectedUsers === start.connectedUsers, `connectedUsers size ${end.connectedUsers} (start ${start.connectedUsers})`);
    check(end.conversationUsers === start.conversationUsers, `conversationUsers size ${end.conversationUsers} (start ${start.conversationUsers})`);

    const settled = await poll(async () => {
      const f = await figures(stack);
      return f.goroutines <= start.goroutines + GOROUTINE_SLACK && f;
    }, { timeout: 20000, interval: 500, what: 'goroutines to settle' }).catch(() => figures(stack));
    check(settled.goroutines <= start.goroutines + GOROUTINE_SLACK, `go_goroutines ${settled.goroutines} (start ${start.goroutines}, allowed +${GOROUTINE_SLACK})`);
  } catch (err) {
    console.error(err);
    ok = false;
  } finally {
    if (!ok) console.error(stack.output().slice(-4000));
    await stack.stop();
  }
  console.log(ok ? 'PASS' : 'FAIL');
  process.exitCode = ok ? 0 : 1;
}

main();
