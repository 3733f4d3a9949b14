'use strict';
// websocket.auth: required — the Socket.IO CONNECT is refused without a valid
// token, with the envelope as the connect_error's data.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startStack, connected, sign, uniqueUser } = require('./harness');

describe('Socket.IO with auth required', { timeout: 30000 }, () => {
  let stack;
  before(async () => { stack = await startStack({ config: { websocket: { auth: 'required' } } }); });
  after(() => stack && stack.stop());

  async function refused(opts, code) {
    const s = stack.connect(opts);
    try {
      await connected(s);
    } catch (err) {
      assert.equal(err.message, code, `${err.message} ${JSON.stringify(err.data)}`);
      assert.equal(err.data.success, false);
      assert.equal(err.data.error.code, code);
      assert.equal(typeof err.data.requestId, 'string');
      assert.equal(s.connected, false);
      return;
    } finally {
      s.close();
    }
    assert.fail(`connected without a valid token; wanted ${code}`);
  }

  for (const transports of [['websocket'], ['polling']]) {
    it(`no token -> AUTHENTICATION_REQUIRED (${transports})`, () => refused({ transports }, 'AUTHENTICATION_REQUIRED'));
  }

  it('a token signed with another secret -> TOKEN_INVALID', () =>
    refused({ transports: ['websocket'], auth: { token: sign({ email: uniqueUser() }, { secret: 'wrong' }) } }, 'TOKEN_INVALID'));

  it('garbage in ?token= -> TOKEN_INVALID', () =>
    refused({ transports: ['websocket'], query: { token: 'not.a.jwt' } }, 'TOKEN_INVALID'));

  it('an expired token -> TOKEN_EXPIRED', () =>
    refused({ transports: ['websocket'], auth: { token: sign({ email: uniqueUser(), exp: Math.floor(Date.now() / 1000) - 60 }) } }, 'TOKEN_EXPIRED'));

  const ways = {
    'auth payload': (t) => ({ auth: { token: t } }),
    '?token= query': (t) => ({ query: { token: t } }),
    'Authorization header': (t) => ({ extraHeaders: { authorization: `Bearer ${t}` } }),
  };
  for (const [way, opts] of Object.entries(ways)) {
    it(`a valid token in the ${way} connects`, async () => {
      const user = uniqueUser();
      const s = stack.connect({ transports: ['websocket'], ...opts(sign({ email: user })) });
      try {
        await connected(s);
        assert.equal((await s.timeout(3000).emitWithAck('whoami')).email, user);
      } finally {
        s.close();
      }
    });
  }
});
