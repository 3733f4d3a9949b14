'use strict';
// HTTP through chatguard: login and its rate limit, and the app's native
// error shapes turned into the envelope with DESIGN.md's codes.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const jwt = require('jsonwebtoken');
const { startStack, sign, uniqueUser, assertEnvelope } = require('./harness');

describe('HTTP through chatguard', { timeout: 60000 }, () => {
  let stack;
  before(async () => { stack = await startStack(); });
  after(() => stack && stack.stop());

  const call = async (method, p, { body, form, token, headers = {} } = {}) => {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) { h['content-type'] = 'application/json'; payload = JSON.stringify(body); }
    if (form !== undefined) { h['content-type'] = 'application/x-www-form-urlencoded'; payload = new URLSearchParams(form).toString(); }
    const res = await fetch(stack.url + p, { method, headers: h, body: payload, signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    return { status: res.status, headers: res.headers, text, json };
  };
  const login = (email, password = 'secret') => call('POST', '/api/auth/login', { body: { email, password } });

  it('login answers the app\'s token, with a request id', async () => {
    const res = await login('agent@test.com');
    assert.equal(res.status, 200, res.text);
    const claims = jwt.decode(res.json.token);
    assert.equal(claims.email, 'agent@test.com');
    assert.equal(claims.role, 'agent');
    assert.match(res.headers.get('x-request-id'), /^[A-Za-z0-9._-]{1,128}$/);
  });

  it('the 4th login for one email within 15 min gets 429 RATE_LIMIT_EXCEEDED', async () => {
    for (let i = 1; i <= 3; i++) {
      const res = await login('basic@test.com');
      assert.equal(res.status, 200, `login ${i}: ${res.text}`);
    }
    const res = await login('basic@test.com');
    assert.equal(res.status, 429, res.text);
    assertEnvelope(assert, res.json, 'RATE_LIMIT_EXCEEDED');
    assert.ok(Number(res.headers.get('retry-after')) > 0, 'Retry-After');
    assert.ok(res.headers.get('ratelimit-policy'), 'RateLimit-Policy');
    // Another email from the same client still gets through.
    assert.equal((await login('admin@test.com')).status, 200);
  });

  it('a wrong password keeps the app\'s 401 as an envelope', async () => {
    const res = await login('agent@test.com', 'wrong');
    assert.equal(res.status, 401, res.text);
    assertEnvelope(assert, res.json, 'AUTHENTICATION_REQUIRED');
  });

  it('keeps a valid incoming X-Request-ID and puts it in the envelope', async () => {
    const res = await call('POST', '/api/conversations', { body: {}, token: sign({ email: uniqueUser() }), headers: { 'x-request-id': 'e2e-abc.123' } });
    assert.equal(res.headers.get('x-request-id'), 'e2e-abc.123');
    assert.equal(res.json.requestId, 'e2e-abc.123');
  });

  it('Joi ValidationError -> 400 VALIDATION_ERROR', async () => {
    const res = await call('POST', '/api/conversations', { body: {}, token: sign({ email: uniqueUser() }) });
    assert.equal(res.status, 400, res.text);
    const err = assertEnvelope(assert, res.json, 'VALIDATION_ERROR');
    assert.equal(err.details.fields[0].field, 'title');
  });

  it('express-validator errors -> 400 VALIDATION_ERROR', async () => {
    const res = await call('POST', '/api/messages', { body: { conversationId: 'general' }, token: sign({ email: uniqueUser() }) });
    assert.equal(res.status, 400, res.text);
    const err = assertEnvelope(assert, res.json, 'VALIDATION_ERROR');
    assert.deepEqual(err.details.fields.map((f) => f.field), ['text']);
  });

  it('a valid request passes through untouched', async () => {
    const res = await call('POST', '/api/messages', { body: { conversationId: 'general', text: 'hi' }, token: sign({ email: uniqueUser() }) });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.text, 'hi');
  });

  it('expired token -> 401 TOKEN_EXPIRED; wrong signature -> 401 TOKEN_INVALID; none -> AUTHENTICATION_REQUIRED', async () => {
    const expired = sign({ email: uniqueUser(), exp: Math.floor(Date.now() / 1000) - 60 });
    let res = await call('GET', '/api/messages', { token: expired });
    assert.equal(res.status, 401, res.text);
    assertEnvelope(assert, res.json, 'TOKEN_EXPIRED');

    res = await call('GET', '/api/messages', { token: sign({ email: uniqueUser() }, { secret: 'not-the-secret' }) });
    assert.equal(res.status, 401, res.text);
    assertEnvelope(assert, res.json, 'TOKEN_INVALID');

    res = await call('GET', '/api/messages');
    assert.equal(res.status, 401, res.text);
    assertEnvelope(assert, res.json, 'AUTHENTICATION_REQUIRED');
  });

  it('Twilio REST error -> 502 EXTERNAL_SERVICE_ERROR; TwiML passes through', async () => {
    let res = await call('POST', '/webhook/twilio', { form: { From: '123', Body: 'hi' } });
    assert.equal(res.status, 502, res.text);
    const err = assertEnvelope(assert, res.json, 'EXTERNAL_SERVICE_ERROR');
    assert.equal(err.details.service, 'twilio');
    assert.equal(err.details.serviceCode, 21211);

    res = await call('POST', '/webhook/twilio', { form: { From: '+15551234567', Body: 'hi' } });
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type'), /xml/);
    assert.match(res.text, /<Response><Message>Received<\/Message><\/Response>/);
  });

  it('Firebase not-found -> 404 NOT_FOUND', async () => {
    const res = await call('GET', '/api/conversations/nope', { token: sign({ email: uniqueUser() }) });
    assert.equal(res.status, 404, res.text);
    assertEnvelope(assert, res.json, 'NOT_FOUND');
  });

  it('Express\'s HTML crash page -> 500 INTERNAL_ERROR without the stack', async () => {
    const res = await call('GET', '/api/crash');
    assert.equal(res.status, 500, res.text);
    assert.match(res.headers.get('content-type'), /json/);
    assertEnvelope(assert, res.json, 'INTERNAL_ERROR');
    for (const leak of ['    at ', 'server.js', 'node_modules', 'TypeError', 'Cannot read', '<html']) {
      assert.ok(!res.text.includes(leak), `body leaks ${JSON.stringify(leak)}: ${res.text}`);
    }
  });
});
