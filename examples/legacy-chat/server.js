'use strict';
// A small legacy chat backend of the kind chatguard sits in front of:
// Express REST routes that answer errors in the shapes real Node apps emit
// (jsonwebtoken, express-validator, Joi, Twilio, Firebase, Express's own HTML
// page), a Socket.IO chat and a plain WebSocket echo. It knows nothing about
// chatguard. PORT (3000) and JWT_SECRET ("dev-secret-change-me") configure it.
const http = require('node:http');
const express = require('express');
const jwt = require('jsonwebtoken');
const { Server } = require('socket.io');
const { WebSocketServer } = require('ws');

const PORT = Number(process.env.PORT || 3000);
const JWT_SECRET = process.env.JWT_SECRET || 'dev-secret-change-me';

const USERS = [
  { email: 'basic@test.com', name: 'Basic User', role: 'basic' },
  { email: 'agent@test.com', name: 'Agent Smith', role: 'agent' },
  { email: 'admin@test.com', name: 'Ada Admin', role: 'admin' },
];
const PASSWORD = 'secret';

const messages = []; // {id, conversationId, text, from, at}
const conversations = new Map([['general', { id: 'general', title: 'General' }]]);
const eventCounts = {}; // user -> event -> count of Socket.IO events received
let nextId = 1;
let lastClose = { code: null, reason: null };

const app = express();
app.use(express.json());
app.use(express.urlencoded({ extended: false }));

app.get('/healthz', (req, res) => res.json({ status: 'ok' }));

app.post('/api/auth/login', (req, res) => {
  const { email, password } = req.body || {};
  const user = USERS.find((u) => u.email === email);
  if (!user || password !== PASSWORD) {
    return res.status(401).json({ error: 'invalid credentials' });
  }
  const token = jwt.sign({ email: user.email, role: user.role, name: user.name }, JWT_SECRET, {
    algorithm: 'HS256',
    expiresIn: '1h',
  });
  res.json({ token });
});

// authenticate passes jsonwebtoken's own errors to the error handler below.
function authenticate(req, res, next) {
  const m = /^Bearer (.+)$/i.exec(req.get('authorization') || '');
  if (!m) {
    const err = new Error('No authorization token was found');
    Object.assign(err, { name: 'UnauthorizedError', code: 'credentials_required', status: 401 });
    return next(err);
  }
  try {
    req.user = jwt.verify(m[1], JWT_SECRET);
    next();
  } catch (err) {
    next(err);
  }
}

// express-validator's result shape (v7).
function fieldErrors(body, fields) {
  return fields
    .filter((f) => typeof body[f] !== 'string' || body[f].trim() === '')
    .map((f) => ({ type: 'field', value: body[f], msg: 'Invalid value', path: f, location: 'body' }));
}

app.get('/api/messages', authenticate, (req, res) => {
  const { conversationId } = req.query;
  res.json({ messages: messages.filter((m) => !conversationId || m.conversationId === conversationId) });
});

app.post('/api/messages', authenticate, (req, res) => {
  const errors = fieldErrors(req.body, ['conversationId', 'text']);
  if (errors.length) return res.status(400).json({ errors });
  const msg = newMessage(req.body.conversationId, req.body.text, req.user.email);
  io.to(msg.conversationId).emit('new-message', msg);
  res.status(201).json(msg);
});

app.get('/api/conversations', authenticate, (req, res) => {
  res.json({ conversations: [...conversations.values()] });
});

// Joi's ValidationError as a legacy app serialises it: res.status(400).json(err).
app.post('/api/conversations', authenticate, (req, res) => {
  const { title } = req.body;
  if (typeof title !== 'string' || title === '') {
    return res.status(400).json({
      isJoi: true,
      name: 'ValidationError',
      details: [{ message: '"title" is required', path: ['title'], type: 'any.required', context: { label: 'title', key: 'title' } }],
      _original: req.body,
    });
  }
  const conv = { id: `c${nextId++}`, title };
  conversations.set(conv.id, conv);
  res.status(201).json(conv);
});

// A Firestore lookup that failed, answered the way legacy code does: the raw error, 500.
app.get('/api/conversations/:id', authenticate, (req, res) => {
  const conv = conversations.get(req.params.id);
  if (!conv) {
    return res.status(500).json({ code: 'not-found', message: `No document to update: conversations/${req.params.id}` });
  }
  res.json(conv);
});

app.post('/api/media', authenticate, express.raw({ type: () => true, limit: '5mb' }), (req, res) => {
  const size = Buffer.isBuffer(req.body) ? req.body.length : 0;
  res.status(201).json({ id: `m${nextId++}`, size });
});

// Twilio's inbound-SMS webhook; replying to a bad number fails the way the Twilio REST API does.
app.post('/webhook/twilio', (req, res) => {
  const from = String(req.body.From || '');
  if (!/^\+[1-9]\d{6,14}$/.test(from)) {
    return res.status(400).json({
      code: 21211,
      message: `The 'To' number ${from} is not a valid phone number.`,
      more_info: 'https://www.twilio.com/docs/errors/21211',
      status: 400,
    });
  }
  res.type('text/xml').send('<?xml version="1.0" encoding="UTF-8"?><Response><Message>Received</Message></Response>');
});

// No handler of ours: Express's default HTML page (with the stack outside production).
app.get('/api/crash', () => {
  throw new TypeError("Cannot read properties of undefined (reading 'id')");
});

// Socket.IO events received per user, so that tests can tell what got through a proxy.
app.get('/api/debug/events', (req, res) => {
  res.json({ events: eventCounts[req.query.user || 'anonymous'] || {} });
});

app.get('/ws/last-close', (req, res) => res.json(lastClose));

// jsonwebtoken and express-jwt style errors keep their own shape; the rest goes to Express.
app.use((err, req, res, next) => {
  if (['TokenExpiredError', 'JsonWebTokenError', 'NotBeforeError', 'UnauthorizedError'].includes(err.name)) {
    return res.status(401).json({ ...err, name: err.name, message: err.message });
  }
  next(err);
});

function newMessage(conversationId, text, from) {
  const msg = { id: `msg${nextId++}`, conversationId, text, from, at: new Date().toISOString() };
  messages.push(msg);
  if (messages.length > 1000) messages.shift();
  return msg;
}

const server = http.createServer(app);

// destroyUpgrade: false lets the 'upgrade' handler below own paths Socket.IO does not serve.
// SIO_PING_INTERVAL and SIO_PING_TIMEOUT (ms) shorten Engine.IO's heartbeat
// for tests (defaults 25000 and 20000).
const io = new Server(server, {
  path: '/socket.io/',
  destroyUpgrade: false,
  pingInterval: Number(process.env.SIO_PING_INTERVAL || 25000),
  pingTimeout: Number(process.env.SIO_PING_TIMEOUT || 20000),
});

io.use((socket, next) => {
  const hs = socket.handshake;
  const header = /^Bearer (.+)$/i.exec(hs.headers.authorization || '');
  const token = (hs.auth && hs.auth.token) || hs.query.token || (header && header[1]);
  if (!token) return next(); // anonymous
  try {
    socket.data.user = jwt.verify(token, JWT_SECRET);
    next();
  } catch (err) {
    const e = new Error('Authentication error');
    e.data = { name: err.name, message: err.message };
    next(e);
  }
});

io.on('connection', (socket) => {
  const who = () => (socket.data.user && socket.data.user.email) || 'anonymous';
  socket.onAny((event) => {
    const counts = (eventCounts[who()] ||= {});
    counts[event] = (counts[event] || 0) + 1;
  });
  const reply = (ack, value) => typeof ack === 'function' && ack(value);

  socket.on('join-conversation', (payload, ack) => {
    const id = payload && payload.conversationId;
    if (!id) return reply(ack, { ok: false, error: 'conversationId is required' });
    socket.join(String(id));
    reply(ack, { ok: true });
  });
  socket.on('leave-conversation', (payload, ack) => {
    if (payload && payload.conversationId) socket.leave(String(payload.conversationId));
    reply(ack, { ok: true });
  });
  socket.on('send-message', (payload, ack) => {
    if (!payload || !payload.conversationId || typeof payload.text !== 'string') {
      return reply(ack, { ok: false, error: 'conversationId and text are required' });
    }
    const msg = newMessage(String(payload.conversationId), payload.text, who());
    socket.to(msg.conversationId).emit('new-message', msg);
    reply(ack, { ok: true, id: msg.id });
  });
  socket.on('typing', (payload) => {
    if (payload && payload.conversationId) {
      socket.to(String(payload.conversationId)).emit('typing', { conversationId: payload.conversationId, user: who() });
    }
  });
  socket.on('whoami', (ack) => reply(ack, socket.data.user || null));
  socket.on('echo-binary', (buf, ack) => reply(ack, buf));
});

const wss = new WebSocketServer({ noServer: true });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('close', (code, reason) => {
    lastClose = { code, reason: reason.toString() };
  });
});

server.on('upgrade', (req, socket, head) => {
  const { pathname } = new URL(req.url, 'http://localhost');
  if (pathname === '/ws/echo') {
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  } else if (!pathname.startsWith('/socket.io/')) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  }
});

server.listen(PORT, () => console.log(`legacy-chat listening on :${PORT}`));

process.on('SIGTERM', () => {
  for (const ws of wss.clients) ws.terminate();
  io.close(() => process.exit(0)); // also closes the HTTP server
  setTimeout(() => process.exit(0), 3000).unref();
});
