// Deterministic tests of the client session state machine: no sockets, no
// sleeps, no clock. Time is a number the test advances; the "server" is the
// test feeding frames (encoded, through handleBytes). Mirrors
// crates/protocol/tests/session.rs case by case; spec §6, §8-§11, §12.1,
// §13.2, §14.

import { create, type MessageInitShape, toBinary, fromBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ErrorCode } from "../gen/confab/v1/errors_pb";
import { type ClientFrame, ClientFrameSchema, type ServerFrame, ServerFrameSchema } from "../gen/confab/v1/frames_pb";
import { type Message, MessageKind, MessageSchema, RoomResume_Status as Status } from "../gen/confab/v1/messages_pb";
import type { ReadState } from "../gen/confab/v1/read_pb";
import { type RoomInfo, RoomInfoSchema } from "../gen/confab/v1/rooms_pb";
import { Backoff } from "./backoff";
import type { OutboxEntry } from "./outbox";
import {
  ClientSession,
  CommandError,
  DecodeError,
  MAX_SERVER_FRAME_BYTES,
  type SessionConfig,
  sessionConfig,
  type SessionEvent,
} from "./session";

const EPOCH = "e1";

type ServerBody = NonNullable<MessageInitShape<typeof ServerFrameSchema>["body"]>;

function reply(requestId: bigint | number, body: ServerBody): ServerFrame {
  return create(ServerFrameSchema, { requestId: BigInt(requestId), body });
}

function push(body: ServerBody): ServerFrame {
  return reply(0, body);
}

function msg(room: string, seq: number, sender: string): Message {
  return create(MessageSchema, {
    room,
    seq: BigInt(seq),
    messageId: `m-${room}-${seq}`,
    sender,
    clientMsgId: `c-${room}-${seq}`,
    text: `text ${seq}`,
    kind: MessageKind.TEXT,
    serverTsMs: 0n,
  });
}

function room(name: string, headSeq: number): RoomInfo {
  return create(RoomInfoSchema, { name, headSeq: BigInt(headSeq), epoch: EPOCH });
}

function readState(room: string, readSeq: number, unread: number, mentions: number, counted: number): ReadState {
  return {
    $typeName: "confab.v1.ReadState",
    room,
    readSeq: BigInt(readSeq),
    unreadCount: unread,
    mentionCount: mentions,
    countedSeq: BigInt(counted),
  };
}

function rateLimited(requestId: bigint, retryAfterMs: number): ServerFrame {
  return reply(requestId, {
    case: "error",
    value: {
      code: ErrorCode.RATE_LIMITED,
      message: `sending too fast; retry after ${retryAfterMs} ms`,
      retryable: true,
      retryAfterMs,
    },
  });
}

function errorFrame(requestId: bigint | number, code: ErrorCode, retryable = false): ServerFrame {
  return reply(requestId, { case: "error", value: { code, message: ErrorCode[code], retryable } });
}

/** A seeded PRNG (mulberry32): the tests are the same on every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seqs(room: string, from: number, to: number): [string, number][] {
  const out: [string, number][] = [];
  for (let s = from; s <= to; s++) out.push([room, s]);
  return out;
}

class Harness {
  readonly session: ClientSession;
  now = 1_000_000;
  readonly random = seeded(7);

  constructor(config: SessionConfig = sessionConfig("token")) {
    this.session = new ClientSession(config);
  }

  /** What the session sent, decoded from the bytes a driver would write. */
  transmit(): ClientFrame[] {
    const out: ClientFrame[] = [];
    for (let b = this.session.pollTransmit(); b !== undefined; b = this.session.pollTransmit()) {
      out.push(fromBinary(ClientFrameSchema, b));
    }
    return out;
  }

  events(): SessionEvent[] {
    const out: SessionEvent[] = [];
    for (let e = this.session.pollEvent(); e !== undefined; e = this.session.pollEvent()) out.push(e);
    return out;
  }

  /** Feeds a frame as the driver would: encoded, through handleBytes. */
  feed(frame: ServerFrame): void {
    this.session.handleBytes(this.now, toBinary(ServerFrameSchema, frame));
  }

  /** Connects, answers Auth with a Welcome listing `rooms`, returns what
   * the session sent after Welcome (Resume first). */
  connect(rooms: RoomInfo[], extra: { capabilities?: string[]; readStates?: ReadState[] } = {}): ClientFrame[] {
    this.session.handleConnected(this.now);
    const auth = this.transmit();
    expect(auth[0]?.body.case).toBe("auth");
    this.feed(
      reply(auth[0]?.requestId ?? 0n, {
        case: "welcome",
        value: { username: "me", rooms, capabilities: extra.capabilities ?? [], readStates: extra.readStates ?? [] },
      }),
    );
    expect(this.session.state()).toEqual({ kind: "online" });
    return this.transmit();
  }

  connectWithReads(rooms: RoomInfo[], reads: ReadState[]): ClientFrame[] {
    return this.connect(rooms, { capabilities: ["read-state"], readStates: reads });
  }

  resumed(resume: ClientFrame, outcomes: [string, Status, number][]): void {
    this.feed(
      reply(resume.requestId, {
        case: "resumed",
        value: {
          rooms: outcomes.map(([room, status, headSeq]) => ({ room, status, headSeq: BigInt(headSeq), epoch: EPOCH })),
        },
      }),
    );
  }

  /** The (room, seq) of every Message event since the last look. */
  shown(): [string, number][] {
    return this.events().flatMap((e) => (e.type === "Message" ? [[e.message.room, Number(e.message.seq)] as [string, number]] : []));
  }

  /** Drops the connection and waits out the backoff, to Connecting. */
  disconnect(code?: number): void {
    this.session.handleDisconnected(this.now, code, this.random);
    const state = this.session.state();
    if (state.kind !== "reconnecting") throw new Error(`expected reconnecting, got ${JSON.stringify(state)}`);
    this.now = state.at;
    this.session.handleTimeout(this.now);
    expect(this.session.state()).toEqual({ kind: "connecting" });
  }

  counts(room: string): [number, number, number] {
    const read = this.session.readState(room);
    if (read === undefined) throw new Error(`no read state of ${room}`);
    return [Number(read.readSeq()), read.unreadCount(), read.mentionCount()];
  }
}

function sendOf(frame: ClientFrame | undefined): { requestId: bigint; room: string; clientMsgId: string; text: string; kind: MessageKind } {
  if (frame?.body.case !== "sendMessage") throw new Error(`not a send: ${frame?.body.case}`);
  return { requestId: frame.requestId, ...frame.body.value };
}

function fetchOf(frame: ClientFrame | undefined): { room: string; afterSeq: bigint | undefined; limit: number } {
  if (frame?.body.case !== "fetchHistory") throw new Error(`not a FetchHistory: ${frame?.body.case}`);
  const a = frame.body.value.anchor;
  return { room: frame.body.value.room, afterSeq: a.case === "afterSeq" ? a.value : undefined, limit: frame.body.value.limit };
}

function marks(frames: ClientFrame[]): [bigint, string, number][] {
  return frames.flatMap((f) =>
    f.body.case === "markRead" ? [[f.requestId, f.body.value.room, Number(f.body.value.seq)] as [bigint, string, number]] : [],
  );
}

function page(requestId: bigint, roomName: string, from: number, to: number, hasMore: boolean, headSeq: number): ServerFrame {
  const messages: Message[] = [];
  for (let s = from; s <= to; s++) messages.push(msg(roomName, s, "bob"));
  return reply(requestId, { case: "historyPage", value: { room: roomName, messages, hasMore, headSeq: BigInt(headSeq), epoch: EPOCH } });
}

// ----- resume, dedupe, gaps (§10, §14.3) -----------------------------------

describe("resume and ordering", () => {
  it("resume after Welcome names every room at its head", () => {
    const h = new Harness();
    const sent = h.connect([room("b", 0), room("a", 5)]);
    expect(sent[0]?.body.case).toBe("resume");
    if (sent[0]?.body.case !== "resume") return;
    const got = sent[0].body.value.rooms.map((p) => [p.room, Number(p.lastSeq), p.epoch]);
    // Ordered by room name, as Rust's BTreeMap orders them.
    expect(got).toEqual([
      ["a", 5, EPOCH],
      ["b", 0, EPOCH],
    ]);
  });

  it("a duplicate delivery is shown once", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.events();
    for (const seq of [1, 2, 2, 1, 3, 3]) h.feed(push({ case: "message", value: msg("a", seq, "bob") }));
    expect(h.shown()).toEqual(seqs("a", 1, 3));
    // A repeat is no gap: nothing is held, nothing fetched.
    expect(h.transmit()).toEqual([]);
    h.feed(push({ case: "message", value: msg("a", 4, "bob") }));
    expect(h.shown()).toEqual(seqs("a", 4, 4));
  });

  it("a gap triggers exactly one history request, then all in order", () => {
    const h = new Harness();
    h.connect([room("a", 2)]);
    h.events();
    // 3 and 4 are lost; 5, 6, 7 arrive live.
    for (const seq of [5, 6, 7]) h.feed(push({ case: "message", value: msg("a", seq, "bob") }));
    expect(h.shown()).toEqual([]);
    const requests = h.transmit();
    expect(requests).toHaveLength(1);
    expect(fetchOf(requests[0])).toEqual({ room: "a", afterSeq: 2n, limit: 100 });
    // The server answers 3..=6; 5 and 6 are duplicates of held ones.
    h.feed(page(requests[0]?.requestId ?? 0n, "a", 3, 6, true, 7));
    expect(h.shown()).toEqual(seqs("a", 3, 7));
    // has_more was true but nothing is missing any more: no further request.
    expect(h.transmit()).toEqual([]);
    h.feed(push({ case: "message", value: msg("a", 8, "bob") }));
    expect(h.shown()).toEqual(seqs("a", 8, 8));
  });

  it("GAP_TOO_LARGE pages history forward until has_more is false", () => {
    const h = new Harness();
    h.session.restorePositions([{ room: "a", lastSeq: 1n, epoch: EPOCH }]);
    const sent = h.connect([room("a", 250)]);
    h.resumed(sent[0] as ClientFrame, [["a", Status.GAP_TOO_LARGE, 250]]);
    const shown: [string, number][] = [];
    let after = 1;
    for (let i = 0; i < 3; i++) {
      const req = h.transmit();
      expect(req).toHaveLength(1);
      expect(fetchOf(req[0]).afterSeq).toBe(BigInt(after));
      const last = Math.min(after + 100, 250);
      h.feed(page(req[0]?.requestId ?? 0n, "a", after + 1, last, last < 250, 250));
      shown.push(...h.shown());
      after = last;
    }
    expect(shown).toEqual(seqs("a", 2, 250));
    expect(h.transmit()).toEqual([]);
  });

  it("a history page that ends short of a held message skips the gap and says so", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.events();
    h.feed(push({ case: "message", value: msg("a", 5, "bob") }));
    const [fill] = h.transmit();
    // A broken server: only 1 and 2 exist, and it says there is no more.
    h.feed(page(fill?.requestId ?? 0n, "a", 1, 2, false, 5));
    const events = h.events();
    expect(events.flatMap((e) => (e.type === "Message" ? [Number(e.message.seq)] : []))).toEqual([1, 2, 5]);
    expect(events.filter((e) => e.type === "GapSkipped")).toEqual([{ type: "GapSkipped", room: "a", from: 3n, to: 4n }]);
  });

  it("epoch change resets the position", () => {
    const h = new Harness();
    h.session.restorePositions([{ room: "a", lastSeq: 90n, epoch: "old" }]);
    const sent = h.connect([room("a", 3)]);
    h.resumed(sent[0] as ClientFrame, [["a", Status.EPOCH_CHANGED, 3]]);
    expect(h.events().filter((e) => e.type === "EpochChanged")).toEqual([{ type: "EpochChanged", room: "a", headSeq: 3n }]);
    h.feed(push({ case: "message", value: msg("a", 4, "bob") }));
    expect(h.shown()).toEqual(seqs("a", 4, 4));
    expect(h.session.positions()).toEqual([{ room: "a", lastSeq: 4n, epoch: EPOCH }]);
  });

  it("NOT_A_MEMBER forgets the room's position", () => {
    const h = new Harness();
    h.session.restorePositions([{ room: "gone", lastSeq: 7n, epoch: EPOCH }]);
    const sent = h.connect([room("a", 1)]);
    h.resumed(sent[0] as ClientFrame, [
      ["a", Status.REPLAYED, 1],
      ["gone", Status.NOT_A_MEMBER, 0],
    ]);
    expect(h.session.positions().map((p) => p.room)).toEqual(["a"]);
  });

  it("each message carries the epoch its seq counts in", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.events();
    h.feed(push({ case: "message", value: msg("a", 1, "bob") }));
    const epochs = h.events().flatMap((e) => (e.type === "Message" ? [[Number(e.message.seq), e.epoch]] : []));
    expect(epochs).toEqual([[1, EPOCH]]);
  });

  it("joining a room held in the same epoch fetches what was missed", () => {
    const h = new Harness();
    h.session.restorePositions([{ room: "a", lastSeq: 3n, epoch: EPOCH }]);
    h.connect([]);
    h.session.joinRoom(h.now, "a");
    const [join] = h.transmit();
    h.feed(reply(join?.requestId ?? 0n, { case: "roomJoined", value: { room: room("a", 6) } }));
    expect(fetchOf(h.transmit()[0]).afterSeq).toBe(3n);
    expect(h.events().some((e) => e.type === "Joined" && e.room.name === "a")).toBe(true);
  });
});

// ----- the outbox (§8.5, §14.1) --------------------------------------------

describe("outbox", () => {
  it("survives a reconnect and is resent in order with the same ids", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    const ids = ["cid-1", "cid-2", "cid-3"];
    ids.forEach((id, i) => h.session.sendMessage(h.now, "a", `hello ${i}`, false, id));
    expect(h.transmit()).toHaveLength(1); // one send in flight by default
    // The connection drops before any ack.
    h.disconnect();
    expect(h.session.outbox()).toHaveLength(3);
    let frames = h.connect([room("a", 0)]);
    const sentIds: string[] = [];
    for (;;) {
      const sends = frames.filter((f) => f.body.case === "sendMessage").map(sendOf);
      if (sends.length === 0) break;
      for (const s of sends) {
        sentIds.push(s.clientMsgId);
        h.feed(reply(s.requestId, { case: "sendAck", value: { room: s.room, clientMsgId: s.clientMsgId, seq: BigInt(sentIds.length) } }));
      }
      frames = h.transmit();
    }
    expect(sentIds).toEqual(ids);
    expect(h.session.outbox()).toEqual([]);
  });

  it("a restored outbox is sent after Welcome, after the Resume", () => {
    const h = new Harness();
    h.session.restoreOutbox([{ clientMsgId: "saved-1", room: "a", text: "typed offline", action: false }]);
    const sent = h.connect([room("a", 0)]);
    expect(sent[0]?.body.case).toBe("resume");
    expect(sendOf(sent[1])).toMatchObject({ clientMsgId: "saved-1", text: "typed offline", kind: MessageKind.TEXT });
  });

  it("an action goes out as ACTION", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.session.sendMessage(h.now, "a", "waves", true, "act-1");
    expect(sendOf(h.transmit()[0]).kind).toBe(MessageKind.ACTION);
  });

  it("an ack for an unknown id is ignored", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.session.sendMessage(h.now, "a", "x", false, "mine");
    h.transmit();
    h.events();
    h.feed(reply(999, { case: "sendAck", value: { room: "a", clientMsgId: "not-mine", seq: 1n } }));
    expect(h.events()).toEqual([]);
    expect(h.session.outbox()).toHaveLength(1);
  });

  it("a rate-limited send is retried after retry_after without surfacing an error", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.session.sendMessage(h.now, "a", "x", false, "rl-1");
    const first = h.transmit();
    h.events();
    h.feed(rateLimited(first[0]?.requestId ?? 0n, 300));
    expect(h.events().every((e) => e.type === "OutboxChanged")).toBe(true);
    expect(h.transmit()).toEqual([]);
    const due = h.session.pollTimeout();
    expect(due).toBe(h.now + 300);
    h.now = due ?? 0;
    h.session.handleTimeout(h.now);
    const again = h.transmit();
    expect(sendOf(again[0]).clientMsgId).toBe("rl-1");
  });

  it("a timed-out send is resent with the same id and acked once", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.session.sendMessage(h.now, "a", "x", false, "slow-1");
    const first = h.transmit();
    h.events();
    h.now += 11_000;
    h.session.handleTimeout(h.now);
    const again = h.transmit();
    expect(sendOf(again[0]).clientMsgId).toBe("slow-1");
    expect(again[0]?.requestId).not.toBe(first[0]?.requestId);
    const ack = { room: "a", clientMsgId: "slow-1", seq: 1n };
    h.feed(reply(first[0]?.requestId ?? 0n, { case: "sendAck", value: ack }));
    h.feed(reply(again[0]?.requestId ?? 0n, { case: "sendAck", value: { ...ack, duplicate: true } }));
    expect(h.events().filter((e) => e.type === "Acked")).toHaveLength(1);
    expect(h.session.outbox()).toEqual([]);
  });

  it("a refused send leaves the outbox and the next one goes at once", () => {
    // Rust leaves the next send waiting for some other event; here it goes.
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.session.sendMessage(h.now, "a", "one", false, "one");
    h.session.sendMessage(h.now, "a", "two", false, "two");
    const [first] = h.transmit();
    h.events();
    h.feed(errorFrame(first?.requestId ?? 0n, ErrorCode.IDEMPOTENCY_CONFLICT));
    const events = h.events();
    expect(events.map((e) => e.type)).toEqual(["OutboxChanged", "SendFailed"]);
    expect(sendOf(h.transmit()[0]).clientMsgId).toBe("two");
    expect(h.session.outbox().map((e) => e.clientMsgId)).toEqual(["two"]);
  });

  it("sends with more than one in flight keep their order on the wire", () => {
    const h = new Harness(sessionConfig("token", { maxInFlight: 2 }));
    h.connect([room("a", 0)]);
    for (const id of ["x1", "x2", "x3"]) h.session.sendMessage(h.now, "a", id, false, id);
    expect(h.transmit().map((f) => sendOf(f).clientMsgId)).toEqual(["x1", "x2"]);
  });
});

// ----- authentication, backoff and close codes (§6, §13.2, §14.2) ---------

describe("connection", () => {
  it("a rejected token stops the session", () => {
    const h = new Harness();
    h.session.handleConnected(h.now);
    const auth = h.transmit();
    h.feed(errorFrame(auth[0]?.requestId ?? 0n, ErrorCode.TOKEN_EXPIRED));
    expect(h.session.state()).toEqual({ kind: "offline", reason: { kind: "authRejected", code: ErrorCode.TOKEN_EXPIRED } });
    // The close that follows does not start a reconnect.
    h.session.handleDisconnected(h.now, 4403, h.random);
    expect(h.session.state().kind).toBe("offline");
    // Nothing is left to wake up for: a driver does not spin.
    expect(h.session.pollTimeout()).toBeUndefined();
  });

  it("a new token after rejection reconnects with positions and outbox", () => {
    const h = new Harness();
    const resume = h.connect([room("lobby", 4)]);
    h.resumed(resume[0] as ClientFrame, [["lobby", Status.REPLAYED, 4]]);
    h.feed(push({ case: "message", value: msg("lobby", 5, "bob") }));
    expect(h.shown()).toEqual(seqs("lobby", 5, 5));
    // The token expires while online (a push, request_id 0).
    h.feed(errorFrame(0, ErrorCode.TOKEN_EXPIRED));
    h.session.handleDisconnected(h.now, 4403, h.random);
    expect(h.session.state()).toEqual({ kind: "offline", reason: { kind: "authRejected", code: ErrorCode.TOKEN_EXPIRED } });
    h.events();
    expect(() => h.session.sendMessage(h.now, "lobby", "hi", false, "c1")).toThrow(CommandError);
    h.session.reauthenticate("token-2");
    expect(h.session.state()).toEqual({ kind: "connecting" });
    h.session.sendMessage(h.now, "lobby", "hi", false, "c1");
    h.session.handleConnected(h.now);
    const auth = h.transmit();
    expect(auth[0]?.body.case === "auth" && auth[0].body.value.token).toBe("token-2");
    h.feed(reply(auth[0]?.requestId ?? 0n, { case: "welcome", value: { username: "me", rooms: [room("lobby", 6)] } }));
    const after = h.transmit();
    expect(after[0]?.body.case === "resume" && Number(after[0].body.value.rooms[0]?.lastSeq)).toBe(5);
    expect(sendOf(after[1]).clientMsgId).toBe("c1");
  });

  it("a send in flight when the token is rejected goes out at once after reauthenticating", () => {
    // Rust keeps its in-flight mark until it times out; the port starts clean.
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.session.sendMessage(h.now, "a", "x", false, "c1");
    h.transmit();
    h.feed(errorFrame(0, ErrorCode.TOKEN_REVOKED));
    h.session.reauthenticate("token-2");
    const sent = h.connect([room("a", 0)]);
    expect(sent.map((f) => f.body.case)).toEqual(["resume", "sendMessage"]);
    expect(sendOf(sent[1]).clientMsgId).toBe("c1");
  });

  it("only a rejected token can be replaced after stopping", () => {
    const h = new Harness();
    h.session.close();
    expect(() => h.session.reauthenticate("token-2")).toThrow(expect.objectContaining({ kind: "stopped" }));
    const h2 = new Harness();
    h2.session.reauthenticate("token-2");
    expect(h2.session.state()).toEqual({ kind: "connecting" });
    h2.session.handleConnected(h2.now);
    const auth = h2.transmit();
    expect(auth[0]?.body.case === "auth" && auth[0].body.value.token).toBe("token-2");
  });

  it("backoff grows and stays bounded, with full jitter", () => {
    const backoff = new Backoff(100, 5000);
    expect(Array.from({ length: 10 }, (_, a) => backoff.ceiling(a))).toEqual([
      100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000,
    ]);
    expect(backoff.ceiling(2 ** 32 - 1)).toBe(5000);
    const random = seeded(1);
    for (let attempt = 0; attempt < 40; attempt++) {
      for (let i = 0; i < 50; i++) {
        const d = backoff.delay(attempt, random);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(backoff.ceiling(attempt));
        expect(Number.isInteger(d)).toBe(true);
      }
    }
    // Full jitter: delays spread over the whole range rather than clustering at the top.
    const samples = Array.from({ length: 200 }, () => backoff.delay(8, random));
    expect(samples.some((d) => d < 1000)).toBe(true);
    expect(samples.some((d) => d > 4000)).toBe(true);
    // A random source returning 1 (out of contract) stays within the ceiling.
    expect(backoff.delay(0, () => 1)).toBe(100);
    expect(new Backoff().ceiling(0)).toBe(250);
    expect(new Backoff().ceiling(99)).toBe(30_000);
  });

  it("reconnect attempts back off and reset on Welcome", () => {
    const h = new Harness();
    const attempts: number[] = [];
    for (let i = 0; i < 4; i++) {
      h.session.handleConnectFailed(h.now, h.random);
      const s = h.session.state();
      if (s.kind !== "reconnecting") throw new Error(s.kind);
      attempts.push(s.attempt);
      expect(h.session.pollTimeout()).toBe(s.at);
      h.now = s.at;
      h.session.handleTimeout(h.now);
    }
    expect(attempts).toEqual([0, 1, 2, 3]);
    h.connect([]);
    h.session.handleDisconnected(h.now, 1001, h.random);
    expect(h.session.state()).toMatchObject({ kind: "reconnecting", attempt: 0 });
  });

  it("refusals at the socket cap back off (R-6.2.8)", () => {
    const h = new Harness();
    const attempts: number[] = [];
    for (let i = 0; i < 5; i++) {
      h.session.handleConnected(h.now);
      const auth = h.transmit();
      expect(auth[0]?.body.case).toBe("auth");
      h.feed(errorFrame(auth[0]?.requestId ?? 0n, ErrorCode.TOO_MANY_CONNECTIONS, true));
      h.session.handleDisconnected(h.now, 1013, h.random);
      const s = h.session.state();
      if (s.kind !== "reconnecting") throw new Error(`1013 reconnects, got ${s.kind}`);
      attempts.push(s.attempt);
      h.now = s.at;
      h.session.handleTimeout(h.now);
      expect(h.session.state()).toEqual({ kind: "connecting" });
    }
    expect(attempts).toEqual([0, 1, 2, 3, 4]);
  });

  // §13.2: which closes lead to an automatic reconnect; undefined is a
  // transport failure without a close frame.
  it.each([
    [undefined, "reconnecting"],
    [1000, { kind: "closedByServer", code: 1000 }],
    [1001, "reconnecting"],
    [1003, { kind: "closedByServer", code: 1003 }],
    [1006, "reconnecting"],
    [1007, { kind: "closedByServer", code: 1007 }],
    [1009, { kind: "closedByServer", code: 1009 }],
    [1011, "reconnecting"],
    [1013, "reconnecting"],
    [4400, { kind: "closedByServer", code: 4400 }],
    [4401, { kind: "closedByServer", code: 4401 }],
    [4403, { kind: "authRejected", code: ErrorCode.TOKEN_INVALID }],
    [4408, "reconnecting"],
    [4410, { kind: "loggedOut" }],
    [4429, "reconnecting"],
    [4504, "reconnecting"],
    [4999, "reconnecting"],
  ] as const)("close %s decides: %j", (code, want) => {
    const h = new Harness();
    h.connect([]);
    h.session.handleDisconnected(h.now, code, h.random);
    const s = h.session.state();
    if (want === "reconnecting") expect(s.kind).toBe("reconnecting");
    else expect(s).toEqual({ kind: "offline", reason: want });
  });

  it("reconnectNow skips the backoff wait only while waiting", () => {
    const h = new Harness();
    h.session.reconnectNow();
    expect(h.session.state()).toEqual({ kind: "connecting" });
    h.connect([]);
    h.session.reconnectNow();
    expect(h.session.state()).toEqual({ kind: "online" });
    h.session.handleDisconnected(h.now, undefined, h.random);
    expect(h.session.state().kind).toBe("reconnecting");
    h.session.reconnectNow();
    expect(h.session.state()).toEqual({ kind: "connecting" });
  });

  it("close stops for good and reports open requests aborted", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    const id = h.session.joinRoom(h.now, "a");
    h.session.close();
    const events = h.events();
    expect(events).toEqual([
      { type: "RequestAborted", requestId: id, kind: { kind: "joinRoom", room: "a" } },
      { type: "StateChanged", state: { kind: "offline", reason: { kind: "closed" } } },
    ]);
    expect(h.session.pollTransmit()).toBeUndefined();
    h.session.handleDisconnected(h.now, 1000, h.random);
    expect(h.session.state()).toEqual({ kind: "offline", reason: { kind: "closed" } });
  });

  it("state changes are reported once each, starting with connecting", () => {
    const h = new Harness();
    h.connect([]);
    const states = h.events().flatMap((e) => (e.type === "StateChanged" ? [e.state.kind] : []));
    expect(states).toEqual(["connecting", "authenticating", "online"]);
  });
});

// ----- timers: requests, keepalive (§12.1) ---------------------------------

describe("timers", () => {
  it("an unanswered request times out", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    const id = h.session.joinRoom(h.now, "a");
    h.now += 11_000;
    h.session.handleTimeout(h.now);
    expect(h.events()).toContainEqual({ type: "RequestTimedOut", requestId: id, kind: { kind: "joinRoom", room: "a" } });
  });

  it("a timed-out gap fill is asked for again and the late reply is harmless", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.events();
    h.feed(push({ case: "message", value: msg("a", 3, "bob") }));
    const first = h.transmit();
    expect(first).toHaveLength(1);
    h.now += 11_000;
    h.session.handleTimeout(h.now);
    const again = h.transmit();
    expect(again).toHaveLength(1);
    expect(fetchOf(again[0]).afterSeq).toBe(0n);
    // The late reply to the first request is ignored; the second fills the gap.
    h.feed(page(first[0]?.requestId ?? 0n, "a", 1, 2, false, 3));
    h.feed(page(again[0]?.requestId ?? 0n, "a", 1, 2, false, 3));
    expect(h.shown()).toEqual(seqs("a", 1, 3));
  });

  it("a keepalive Ping goes out each interval; its Pong is silent, its silence is stale", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    expect(h.session.pollTimeout()).toBe(h.now + 10_000); // the Resume's deadline comes first
    h.now += 15_000;
    h.session.handleTimeout(h.now);
    const [ping] = h.transmit().filter((f) => f.body.case === "ping");
    expect(ping).toBeDefined();
    h.feed(reply(ping?.requestId ?? 0n, { case: "pong", value: { nonce: 0n } }));
    expect(h.events().filter((e) => e.type !== "RequestTimedOut")).toEqual([]);
    h.now += 15_000;
    h.session.handleTimeout(h.now);
    expect(h.transmit().filter((f) => f.body.case === "ping")).toHaveLength(1);
    h.now += 10_000;
    h.session.handleTimeout(h.now);
    expect(h.events()).toContainEqual({ type: "TransportStale" });
  });

  it("a user Ping is answered with Pong(nonce)", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    h.session.ping(h.now, 42n);
    const [ping] = h.transmit();
    h.feed(reply(ping?.requestId ?? 0n, { case: "pong", value: { nonce: 42n } }));
    expect(h.events()).toEqual([{ type: "Pong", nonce: 42n }]);
  });

  it("an unanswered Auth is reported stale, so the driver reconnects", () => {
    const h = new Harness();
    h.session.handleConnected(h.now);
    h.events();
    h.now += 10_000;
    h.session.handleTimeout(h.now);
    expect(h.events()).toEqual([
      { type: "RequestTimedOut", requestId: 1, kind: { kind: "auth" } },
      { type: "TransportStale" },
    ]);
  });

  it("a send pause does not wake the driver while it cannot send", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.session.sendMessage(h.now, "a", "x", false, "p1");
    const [send] = h.transmit();
    h.feed(rateLimited(send?.requestId ?? 0n, 5000));
    // Let the send be reported pending first: that timer is a real one.
    h.now += 500;
    h.session.handleTimeout(h.now);
    h.disconnect();
    // Connecting, the pause (still ahead, then past) is no reason to wake up.
    expect(h.session.pollTimeout()).toBeUndefined();
    h.now += 6000;
    expect(h.session.pollTimeout()).toBeUndefined();
    const sent = h.connect([room("a", 0)]);
    expect(sent.map((f) => f.body.case)).toEqual(["resume", "sendMessage"]);
  });
});

// ----- commands ------------------------------------------------------------

describe("commands", () => {
  it("requests other than sends need an online session; an offline one refuses all", () => {
    const h = new Harness();
    expect(() => h.session.joinRoom(h.now, "a")).toThrow(expect.objectContaining({ kind: "notOnline" }));
    expect(() => h.session.setTyping("a", true)).toThrow(expect.objectContaining({ kind: "notOnline" }));
    // A send is queued while connecting, and reported pending at once.
    expect(h.session.sendMessage(h.now, "a", "queued", false, "q1")).toBe("q1");
    h.session.close();
    expect(() => h.session.joinRoom(h.now, "a")).toThrow(expect.objectContaining({ kind: "stopped" }));
    expect(() => h.session.markRead(h.now, "a", 1)).toThrow(expect.objectContaining({ kind: "stopped" }));
  });

  it("fields are validated before anything is queued", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    const invalid = (fn: () => unknown): string => {
      try {
        fn();
      } catch (err) {
        if (err instanceof CommandError && err.kind === "invalid") return err.message;
        throw err;
      }
      throw new Error("accepted");
    };
    expect(invalid(() => h.session.joinRoom(h.now, "Lobby"))).toContain("room name may not contain 'L' (at byte 0)");
    expect(invalid(() => h.session.sendMessage(h.now, "a", "  \n", false, "c1"))).toBe("text must not be empty");
    expect(invalid(() => h.session.sendMessage(h.now, "a", "hi", false, "has space"))).toContain("client_msg_id may not contain");
    expect(invalid(() => h.session.sendMessage(h.now, "a", "é".repeat(2049), false, "c2"))).toBe(
      "text is 4098 bytes long; the limit is 4096 bytes",
    );
    expect(invalid(() => h.session.createRoom(h.now, "a", "two\nlines"))).toContain("topic may not contain '\\n'");
    expect(invalid(() => h.session.createRoom(h.now, "a", "rtl\u202eevil"))).toContain("U+202E (at byte 3)");
    expect(h.transmit()).toEqual([]);
    expect(h.events()).toEqual([]);
  });

  it("Welcome's max_text_bytes replaces the default", () => {
    const h = new Harness();
    h.session.handleConnected(h.now);
    const [auth] = h.transmit();
    h.feed(reply(auth?.requestId ?? 0n, { case: "welcome", value: { username: "me", limits: { maxTextBytes: 5 } } }));
    expect(() => h.session.sendMessage(h.now, "a", "123456", false, "c1")).toThrow(/limit is 5 bytes/);
    h.session.sendMessage(h.now, "a", "12345", false, "c2");
  });

  it("setTyping is not tracked; its error surfaces as ServerError", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    const id = h.session.setTyping("a", true);
    const [frame] = h.transmit();
    expect(frame?.body.case === "setTyping" && frame.body.value).toMatchObject({ room: "a", active: true });
    h.feed(errorFrame(id, ErrorCode.NOT_A_MEMBER));
    expect(h.events().map((e) => e.type)).toEqual(["ServerError"]);
  });

  it("a failed request reports its kind and error", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    const id = h.session.createRoom(h.now, "a", "topic");
    h.feed(errorFrame(id, ErrorCode.ROOM_EXISTS));
    const [event] = h.events();
    expect(event).toMatchObject({ type: "RequestFailed", requestId: id, kind: { kind: "createRoom", room: "a" } });
    expect(event?.type === "RequestFailed" && event.error.code).toBe(ErrorCode.ROOM_EXISTS);
  });

  it("an open request is aborted with the connection; sends and marks are not", () => {
    const h = new Harness();
    h.connect([]);
    h.session.sendMessage(h.now, "a", "x", false, "s1");
    const id = h.session.listMembers(h.now, "a");
    h.events();
    h.session.handleDisconnected(h.now, undefined, h.random);
    const aborted = h.events().filter((e) => e.type === "RequestAborted");
    expect(aborted).toEqual([{ type: "RequestAborted", requestId: id, kind: { kind: "listMembers", room: "a" } }]);
  });

  it("fetchHistory sends its anchor and reports the page", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    const id = h.session.fetchHistory(h.now, "a", { case: "beforeSeq", value: 10n }, 20);
    const [frame] = h.transmit();
    expect(frame?.body.case === "fetchHistory" && frame.body.value.anchor).toEqual({ case: "beforeSeq", value: 10n });
    h.feed(page(BigInt(id), "a", 1, 2, false, 9));
    const [event] = h.events();
    expect(event?.type === "History" && event.page.messages.map((m) => Number(m.seq))).toEqual([1, 2]);
  });

  it("listRooms follows next_cursor and reports every room once", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    h.session.listRooms(h.now, true);
    const first = h.transmit();
    expect(first[0]?.body.case === "listRooms" && first[0].body.value).toMatchObject({ subscribe: true, cursor: "", limit: 0 });
    h.feed(reply(first[0]?.requestId ?? 0n, { case: "roomList", value: { rooms: [room("b", 0), room("a", 0)], nextCursor: "c1" } }));
    expect(h.events().some((e) => e.type === "RoomList")).toBe(false);
    const second = h.transmit();
    expect(second[0]?.body.case === "listRooms" && second[0].body.value).toMatchObject({ subscribe: false, cursor: "c1" });
    // Page 2 repeats "a" (its activity moved it) and ends the list.
    h.feed(reply(second[0]?.requestId ?? 0n, { case: "roomList", value: { rooms: [room("a", 1), room("c", 0)], nextCursor: "" } }));
    const lists = h.events().flatMap((e) => (e.type === "RoomList" ? [e.rooms.map((r) => r.name)] : []));
    expect(lists).toEqual([["b", "a", "c"]]);
    expect(h.transmit()).toEqual([]);
  });
});

// ----- bytes from the server (§3.3, §12.2) ---------------------------------

describe("handleBytes", () => {
  it("refuses what is not a frame and changes nothing", () => {
    const h = new Harness();
    h.connect([]);
    h.events();
    const problem = (bytes: Uint8Array): string => {
      try {
        h.session.handleBytes(h.now, bytes);
      } catch (err) {
        if (err instanceof DecodeError) return err.problem.kind;
        throw err;
      }
      return "accepted";
    };
    expect(problem(new Uint8Array([0xff, 0xff, 0xff]))).toBe("malformed");
    // Field 99, a varint: a body this version does not know.
    expect(problem(new Uint8Array([0x08, 0x07, 0x98, 0x06, 0x01]))).toBe("unknownBody");
    expect(problem(new Uint8Array(MAX_SERVER_FRAME_BYTES + 1))).toBe("oversize");
    expect(h.events()).toEqual([]);
    expect(h.session.state()).toEqual({ kind: "online" });
  });
});

// ----- read state (§11.3) --------------------------------------------------

describe("read state", () => {
  it("Welcome counts, then live messages add to them", () => {
    const h = new Harness();
    h.connectWithReads([room("lobby", 5)], [readState("lobby", 3, 2, 1, 5)]);
    expect(h.counts("lobby")).toEqual([3, 2, 1]);
    // A replayed message the Welcome counts already counted changes nothing.
    h.feed(push({ case: "message", value: msg("lobby", 5, "ann") }));
    const mention = msg("lobby", 6, "ann");
    mention.text = "hey @Me!";
    h.feed(push({ case: "message", value: mention }));
    h.feed(push({ case: "message", value: msg("lobby", 7, "me") }));
    const notMention = msg("lobby", 8, "ann");
    notMention.text = "mail me@example.org or @meme";
    h.feed(push({ case: "message", value: notMention }));
    expect(h.counts("lobby")).toEqual([3, 4, 2]);
    const pushed = h.events().filter((e) => e.type === "ReadState");
    expect(pushed.at(-1)).toEqual({ type: "ReadState", room: "lobby", counts: { readSeq: 3n, unread: 4, mentions: 2 } });
  });

  it("marks are coalesced, one in flight per room", () => {
    const h = new Harness();
    h.connectWithReads([room("lobby", 9)], [readState("lobby", 0, 9, 0, 9)]);
    h.events();
    h.session.markRead(h.now, "lobby", 3);
    h.session.markRead(h.now, "lobby", 5n);
    h.session.markRead(h.now, "lobby", 4);
    const first = marks(h.transmit());
    expect(first.map((m) => m[2])).toEqual([3]);
    h.feed(reply(first[0]?.[0] ?? 0n, { case: "readState", value: readState("lobby", 3, 6, 0, 9) }));
    expect(h.counts("lobby")[0]).toBe(5); // the reply is older than the user's read
    const second = marks(h.transmit());
    expect(second.map((m) => m[2])).toEqual([5]);
    h.feed(reply(second[0]?.[0] ?? 0n, { case: "readState", value: readState("lobby", 5, 4, 0, 9) }));
    expect(marks(h.transmit())).toEqual([]);
    expect(h.counts("lobby")).toEqual([5, 4, 0]);
    expect(h.events().some((e) => e.type === "ReadState" && e.room === "lobby")).toBe(true);
  });

  it("a push from another device moves the marker, never back", () => {
    const h = new Harness();
    h.connectWithReads([room("lobby", 4)], [readState("lobby", 0, 4, 1, 4)]);
    h.feed(push({ case: "message", value: msg("lobby", 5, "ann") }));
    h.feed(push({ case: "readState", value: readState("lobby", 4, 0, 0, 4) }));
    expect(h.counts("lobby")).toEqual([4, 1, 0]);
    h.feed(push({ case: "readState", value: readState("lobby", 2, 2, 0, 4) }));
    expect(h.counts("lobby")[0]).toBe(4);
  });

  it("a mark made offline is sent after reconnect", () => {
    const h = new Harness();
    h.connectWithReads([room("lobby", 6)], [readState("lobby", 0, 6, 0, 6)]);
    h.session.handleDisconnected(h.now, undefined, h.random);
    h.session.markRead(h.now, "lobby", 6);
    expect(h.counts("lobby")).toEqual([6, 0, 0]);
    const s = h.session.state();
    if (s.kind === "reconnecting") h.now = s.at;
    h.session.handleTimeout(h.now);
    const sent = h.connectWithReads([room("lobby", 6)], [readState("lobby", 0, 6, 0, 6)]);
    expect(h.counts("lobby")).toEqual([6, 0, 0]); // Welcome's older marker does not undo it
    expect(marks(sent).map((m) => m[2])).toEqual([6]);
  });

  it("a mark at or below the marker does nothing; a refused one is dropped", () => {
    const h = new Harness();
    h.connectWithReads([room("lobby", 6)], [readState("lobby", 4, 2, 0, 6)]);
    h.events();
    h.session.markRead(h.now, "lobby", 4);
    expect(h.transmit()).toEqual([]);
    expect(h.events()).toEqual([]);
    h.session.markRead(h.now, "lobby", 6);
    const [mark] = marks(h.transmit());
    h.events();
    h.feed(errorFrame(mark?.[0] ?? 0n, ErrorCode.NOT_A_MEMBER));
    expect(h.events().map((e) => e.type)).toEqual(["RequestFailed"]);
    h.session.handleDisconnected(h.now, undefined, h.random);
    h.session.reconnectNow();
    const sent = h.connectWithReads([room("lobby", 6)], [readState("lobby", 4, 2, 0, 6)]);
    expect(marks(sent)).toEqual([]);
  });

  it("joining with read-state starts the marker at the head (R-11.3.8)", () => {
    const h = new Harness();
    h.connectWithReads([], []);
    h.session.joinRoom(h.now, "new");
    const [join] = h.transmit();
    h.feed(reply(join?.requestId ?? 0n, { case: "roomJoined", value: { room: room("new", 12) } }));
    expect(h.counts("new")).toEqual([12, 0, 0]);
    h.feed(push({ case: "message", value: msg("new", 13, "ann") }));
    expect(h.counts("new")).toEqual([12, 1, 0]);
  });

  it("leaving forgets the room's position and counts", () => {
    const h = new Harness();
    h.connectWithReads([room("lobby", 2)], [readState("lobby", 0, 2, 0, 2)]);
    h.feed(push({ case: "roomLeft", value: { name: "lobby" } }));
    expect(h.session.readState("lobby")).toBeUndefined();
    expect(h.session.positions()).toEqual([]);
    expect(h.events().at(-1)).toEqual({ type: "Left", room: "lobby" });
  });
});

// ----- views ---------------------------------------------------------------

describe("views", () => {
  it("a view merges its page with what came live and never repeats", () => {
    const h = new Harness();
    h.connect([room("general", 1)]);
    h.events();
    const id = h.session.openView(h.now, "general", 20);
    h.transmit();
    // Live 2 and 3 arrive before the page that also holds them: held.
    for (const seq of [2, 3]) h.feed(push({ case: "message", value: msg("general", seq, "bob") }));
    expect(h.shown()).toEqual([]);
    h.feed(page(BigInt(id), "general", 1, 3, false, 3));
    const views = h.events().flatMap((e) => (e.type === "View" ? [e.messages.map((m) => Number(m.seq))] : []));
    expect(views).toEqual([[1, 2, 3]]);
    // Seq 3 pushed again (stored before the page was read, pushed after): not shown twice; 4 is.
    h.feed(push({ case: "message", value: msg("general", 3, "bob") }));
    h.feed(push({ case: "message", value: msg("general", 4, "bob") }));
    expect(h.shown()).toEqual([["general", 4]]);
  });

  it("live messages the page already showed are not shown again", () => {
    const h = new Harness();
    h.connect([room("general", 1)]);
    h.events();
    // The page is read with 2 and 3 stored; their pushes come after it.
    const id = h.session.openView(h.now, "general", 20);
    h.feed(page(BigInt(id), "general", 1, 3, false, 3));
    expect(h.events().filter((e) => e.type === "View")).toHaveLength(1);
    for (const seq of [2, 3, 4]) h.feed(push({ case: "message", value: msg("general", seq, "bob") }));
    expect(h.shown()).toEqual([["general", 4]]);
  });

  it("a live message newer than the page comes inside the view", () => {
    const h = new Harness();
    h.connect([room("general", 1)]);
    h.events();
    const id = h.session.openView(h.now, "general", 20);
    h.feed(push({ case: "message", value: msg("general", 2, "bob") }));
    h.feed(page(BigInt(id), "general", 1, 1, true, 1));
    const [view] = h.events().filter((e) => e.type === "View");
    expect(view?.type === "View" && [view.messages.map((m) => Number(m.seq)), view.hasMore]).toEqual([[1, 2], true]);
  });

  it("a view that fails releases what it held", () => {
    const h = new Harness();
    h.connect([room("general", 1)]);
    h.events();
    h.session.openView(h.now, "general", 20);
    h.feed(push({ case: "message", value: msg("general", 2, "bob") }));
    h.session.handleDisconnected(h.now, undefined, h.random);
    expect(h.shown()).toEqual([["general", 2]]);
  });

  it("a view refused by the server releases what it held too", () => {
    const h = new Harness();
    h.connect([room("general", 1)]);
    h.events();
    const id = h.session.openView(h.now, "general", 20);
    h.feed(push({ case: "message", value: msg("general", 2, "bob") }));
    h.feed(errorFrame(id, ErrorCode.INTERNAL, true));
    const events = h.events();
    expect(events.map((e) => e.type)).toEqual(["Message", "RequestFailed"]);
  });
});

// ----- own sends as shown: pending, delivered (§8.4, §14.1) ----------------

function ownSendEvents(events: SessionEvent[]): string[] {
  return events.flatMap((e) => {
    switch (e.type) {
      case "SendPending":
        return [`pending ${e.entry.clientMsgId}`];
      case "Delivered":
        return [`delivered ${e.entry.clientMsgId} seq ${e.seq} was_pending ${e.wasPending}`];
      case "Message":
        return [`message ${e.message.clientMsgId} from_self ${e.fromSelf} sent_here ${e.sentHere}`];
      default:
        return [];
    }
  });
}

function echo(clientMsgId: string, seq: number): ServerFrame {
  const message = msg("a", seq, "me");
  message.clientMsgId = clientMsgId;
  return push({ case: "message", value: message });
}

function ackOf(frame: ClientFrame | undefined, seq: number): ServerFrame {
  const send = sendOf(frame);
  return reply(send.requestId, {
    case: "sendAck",
    value: { room: send.room, clientMsgId: send.clientMsgId, seq: BigInt(seq), serverTsMs: BigInt(1000 + seq) },
  });
}

describe("own sends", () => {
  it("an own send is delivered once, whether its echo or its ack comes first", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.events();
    // Echo first (§8.4 pushes before acking): delivered at the echo.
    h.session.sendMessage(h.now, "a", "one", false, "one");
    let send = h.transmit()[0];
    h.feed(echo("one", 1));
    h.feed(ackOf(send, 1));
    expect(ownSendEvents(h.events())).toEqual(["delivered one seq 1 was_pending false", "message one from_self true sent_here true"]);
    // Ack first: delivered at the ack; the echo after it is still ours.
    h.session.sendMessage(h.now, "a", "two", false, "two");
    send = h.transmit()[0];
    h.feed(ackOf(send, 2));
    h.feed(echo("two", 2));
    const events = h.events();
    expect(ownSendEvents(events)).toEqual(["delivered two seq 2 was_pending false", "message two from_self true sent_here true"]);
    expect(events.find((e) => e.type === "Delivered")).toMatchObject({ serverTsMs: 1002n, entry: { text: "two" } });
    // The same user's send from another device is only a message.
    h.feed(echo("elsewhere", 3));
    expect(ownSendEvents(h.events())).toEqual(["message elsewhere from_self true sent_here false"]);
  });

  it("a slow send is pending after the grace, then delivered", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.events();
    h.session.sendMessage(h.now, "a", "slow", false, "slow");
    const send = h.transmit()[0];
    expect(ownSendEvents(h.events())).toEqual([]);
    const due = h.session.pollTimeout();
    expect(due).toBe(h.now + 400);
    h.now = due ?? 0;
    h.session.handleTimeout(h.now);
    expect(ownSendEvents(h.events())).toEqual(["pending slow"]);
    h.now += 1000;
    h.session.handleTimeout(h.now);
    expect(ownSendEvents(h.events())).toEqual([]);
    h.feed(ackOf(send, 1));
    expect(ownSendEvents(h.events())).toEqual(["delivered slow seq 1 was_pending true"]);
  });

  it("sends queued offline or restored are pending at once and delivered after reconnect", () => {
    const h = new Harness();
    const saved: OutboxEntry = { clientMsgId: "saved", room: "a", text: "from last time", action: false };
    h.session.restoreOutbox([saved]);
    h.session.sendMessage(h.now, "a", "typed", false, "typed");
    expect(ownSendEvents(h.events())).toEqual(["pending saved", "pending typed"]);
    const sent = h.connect([room("a", 0)]);
    const first = sent.find((f) => f.body.case === "sendMessage");
    h.feed(ackOf(first, 1));
    h.feed(echo("saved", 1));
    const typed = h.transmit()[0];
    h.feed(echo("typed", 2));
    h.feed(ackOf(typed, 2));
    expect(ownSendEvents(h.events())).toEqual([
      "delivered saved seq 1 was_pending true",
      "message saved from_self true sent_here true",
      "delivered typed seq 2 was_pending true",
      "message typed from_self true sent_here true",
    ]);
  });

  it("a refused send is never delivered", () => {
    const h = new Harness();
    h.connect([room("a", 0)]);
    h.session.sendMessage(h.now, "a", "no", false, "no");
    const send = h.transmit()[0];
    h.events();
    h.feed(errorFrame(send?.requestId ?? 0n, ErrorCode.NOT_A_MEMBER));
    const failed = h.events().find((e) => e.type === "SendFailed");
    expect(failed).toMatchObject({ type: "SendFailed", entry: { clientMsgId: "no" } });
    h.now += 5000;
    h.session.handleTimeout(h.now);
    expect(ownSendEvents(h.events())).toEqual([]);
  });

  it("restoring an id already queued does not queue or report it twice", () => {
    const h = new Harness();
    h.session.sendMessage(h.now, "a", "x", false, "dup");
    h.session.restoreOutbox([{ clientMsgId: "dup", room: "a", text: "x", action: false }]);
    expect(ownSendEvents(h.events())).toEqual(["pending dup"]);
    expect(h.session.outbox()).toHaveLength(1);
  });
});
