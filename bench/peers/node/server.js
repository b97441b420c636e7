// What users would otherwise run: a Node.js socket.io v4 server implementing the gateway's
// events, in memory (the blueprint's stack without its database).
//
// - namespace /ws, HS256 JWT from the CONNECT auth.token (refusal: "No token provided" /
//   "Invalid token" / "Token expired"); the socket joins `user:{sub}` and gets `connected`;
// - join_room {roomId} -> join, joined_room {roomId}, ack {ok, roomId}; leave_room -> left_room;
// - message {type: "send_message", data: {roomId, message}} -> chat_message
//   {id, seq, roomId, userId, userName, message, timestamp} to the room (sender included),
//   ack {ok, id, seq}; seq from an in-memory counter per room; the sender must be in the room;
// - POST /api/v1/notifications {userId, title, message, type} with `Authorization: Bearer <key>`
//   (keys from API_KEYS) -> notification {id, title, message, type, timestamp} to the user, 201.
//
// Env: PORT (default 3000), HOST (default 127.0.0.1), JWT_SECRET, API_KEYS.
// Prints `listening on HOST:PORT` once bound.
"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const jwt = require("jsonwebtoken");
const { Server } = require("socket.io");

const secret = process.env.JWT_SECRET;
if (!secret) {
  console.error("JWT_SECRET must be set");
  process.exit(1);
}
const apiKeys = new Set((process.env.API_KEYS || "").split(",").map((k) => k.trim()).filter(Boolean));
const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || 3000);

const seqs = new Map();
let io;

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

// socket.io answers /socket.io/ itself; every other request comes here.
const httpServer = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/api/v1/notifications") {
    return json(res, 404, { error: { code: "NOT_FOUND", message: "Not found" } });
  }
  const auth = req.headers.authorization || "";
  const key = auth.startsWith("Bearer ") ? auth.slice(7) : "";
  if (!apiKeys.has(key)) {
    return json(res, 401, { error: { code: "UNAUTHORIZED", message: "Invalid API key" } });
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let n;
    try {
      n = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      return json(res, 400, { error: { code: "INVALID_PAYLOAD", message: "Invalid JSON" } });
    }
    if (!n || typeof n.userId !== "string") {
      return json(res, 400, { error: { code: "INVALID_PAYLOAD", message: "userId must be a string" } });
    }
    const event = {
      id: crypto.randomUUID(),
      title: n.title,
      message: n.message,
      type: n.type,
      timestamp: new Date().toISOString(),
    };
    io.of("/ws").to(`user:${n.userId}`).emit("notification", event);
    json(res, 201, { ...event, userId: n.userId });
  });
});

io = new Server(httpServer, {
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  cors: { origin: true, credentials: true },
});

const ws = io.of("/ws");

ws.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (!token) return next(new Error("No token provided"));
  try {
    const claims = jwt.verify(token, secret, { algorithms: ["HS256"], clockTolerance: 30 });
    if (typeof claims.sub !== "string" || claims.sub.length === 0) return next(new Error("Invalid token"));
    socket.data.userId = claims.sub;
    socket.data.userName = claims.name || claims.email || claims.sub;
    next();
  } catch (e) {
    next(new Error(e && e.name === "TokenExpiredError" ? "Token expired" : "Invalid token"));
  }
});

function fail(socket, ack, code, message) {
  socket.emit("error", { type: "error", code, message, timestamp: new Date().toISOString() });
  if (typeof ack === "function") ack({ ok: false, error: { code, message } });
}

ws.on("connection", (socket) => {
  const { userId, userName } = socket.data;
  socket.join(`user:${userId}`);
  socket.emit("connected", { message: "Connected to WebSocket server", userId, connectionId: socket.id });

  socket.on("join_room", (data, ack) => {
    const roomId = data && data.roomId;
    if (typeof roomId !== "string") return fail(socket, ack, "INVALID_ROOM", "Invalid room");
    socket.emit("joined_room", { roomId });
    socket.join(roomId);
    if (typeof ack === "function") ack({ ok: true, roomId });
  });

  socket.on("leave_room", (data, ack) => {
    const roomId = data && data.roomId;
    if (typeof roomId !== "string") return fail(socket, ack, "INVALID_ROOM", "Invalid room");
    socket.leave(roomId);
    socket.emit("left_room", { roomId });
    if (typeof ack === "function") ack({ ok: true, roomId });
  });

  socket.on("message", (payload, ack) => {
    if (!payload || typeof payload.type !== "string") {
      return fail(socket, ack, "INVALID_PAYLOAD", "type must be a string");
    }
    if (payload.type !== "send_message") {
      if (typeof ack === "function") ack({ ok: false, error: { code: "UNKNOWN_EVENT", message: `Unknown event type: ${payload.type}` } });
      return;
    }
    const d = payload.data || {};
    if (typeof d.roomId !== "string" || typeof d.message !== "string") {
      return fail(socket, ack, "INVALID_PAYLOAD", "data must be { roomId, message }");
    }
    if (!socket.rooms.has(d.roomId)) return fail(socket, ack, "NOT_IN_ROOM", "Not in room");
    const seq = (seqs.get(d.roomId) || 0) + 1;
    seqs.set(d.roomId, seq);
    const msg = {
      id: crypto.randomUUID(),
      seq,
      roomId: d.roomId,
      userId,
      userName,
      message: d.message,
      timestamp: new Date().toISOString(),
    };
    ws.to(d.roomId).emit("chat_message", msg);
    if (typeof ack === "function") ack({ ok: true, id: msg.id, seq });
  });
});

httpServer.listen(port, host, () => {
  const a = httpServer.address();
  console.log(`listening on ${a.address}:${a.port}`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
