// Node.js `ws` broadcast chat server: the "typical Node chat server"
// baseline for confab-bench (`--vs node-ws`).
//
// One process, one event loop, rooms in memory, no accounts, no storage,
// no validation: the same shape as the bench crate's stack ceiling, in the
// idiom most Node chat servers use. Messages are JSON text frames; the
// generator's JSON dialect (crates/bench/src/client.rs) drives them:
//   -> {"t":"join","id":N,"room":R}         <- {"t":"joined","id":N,"room":R,"seq":HEAD}
//   -> {"t":"send","id":N,"room":R,"text":T} <- {"t":"ack","id":N,"room":R,"seq":S}
//   every member of R                         <- {"t":"msg","room":R,"seq":S,"sender":U,"text":T}
// Each push is serialised once and the same string sent to every member.
//
// Usage: node server.js [--port 0] [--host 127.0.0.1]
// Prints "node-ws listening on http://HOST:PORT" once it accepts connections.
'use strict';

const { WebSocketServer } = require('ws');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '0'));

// room name -> { seq, members: Set<WebSocket> }
const rooms = new Map();
let nextClient = 0;

const wss = new WebSocketServer({
  host,
  port,
  perMessageDeflate: false,
  // Accept the confab.v1 subprotocol the generator offers.
  handleProtocols: (protocols) => (protocols.has('confab.v1') ? 'confab.v1' : false),
});

wss.on('connection', (ws) => {
  const name = `c${++nextClient}`;
  const joined = [];
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch {
      ws.send(JSON.stringify({ t: 'error', id: 0, message: 'invalid JSON' }));
      return;
    }
    if (msg.t === 'join') {
      let room = rooms.get(msg.room);
      if (!room) {
        room = { seq: 0, members: new Set() };
        rooms.set(msg.room, room);
      }
      room.members.add(ws);
      joined.push(msg.room);
      ws.send(JSON.stringify({ t: 'joined', id: msg.id, room: msg.room, seq: room.seq }));
    } else if (msg.t === 'send') {
      const room = rooms.get(msg.room);
      if (!room || !room.members.has(ws)) {
        ws.send(JSON.stringify({ t: 'error', id: msg.id, message: 'not a member' }));
        return;
      }
      room.seq += 1;
      const push = JSON.stringify({ t: 'msg', room: msg.room, seq: room.seq, sender: name, text: msg.text });
      for (const member of room.members) member.send(push);
      ws.send(JSON.stringify({ t: 'ack', id: msg.id, room: msg.room, seq: room.seq }));
    }
  });
  ws.on('close', () => {
    for (const r of joined) {
      const room = rooms.get(r);
      if (room) room.members.delete(ws);
    }
  });
});

wss.on('listening', () => {
  const addr = wss.address();
  console.log(`node-ws listening on http://${addr.address}:${addr.port}`);
});

process.on('SIGTERM', () => wss.close(() => process.exit(0)));
