// The browser driver over a fake WebSocket (spec §3.1-§3.3, §12.1, §13.2,
// §14.1): it opens the socket when the session connects, writes what the
// session transmits, feeds it what arrives, saves the outbox before a new
// send leaves, and acts on closes and staleness. A real browser test covers
// a real socket.

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type ClientFrame, ClientFrameSchema, ServerFrameSchema } from "../gen/confab/v1/frames_pb";
import { Driver, type DriverIssue, SUBPROTOCOL, type WebSocketLike, wsUrl } from "./driver";
import type { OutboxEntry, OutboxStore } from "./outbox";
import { ClientSession, sessionConfig, type SessionEvent } from "./session";

type ServerBody = NonNullable<MessageInitShape<typeof ServerFrameSchema>["body"]>;

class FakeWebSocket implements WebSocketLike {
  static instances: FakeWebSocket[] = [];
  binaryType: BinaryType = "blob";
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  readonly sent: Uint8Array[] = [];
  closed: { code: number | undefined; reason: string | undefined } | undefined;

  constructor(
    readonly url: string,
    readonly protocols: string | string[],
  ) {
    FakeWebSocket.instances.push(this);
  }

  send(data: Uint8Array<ArrayBuffer>): void {
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closed = { code, reason };
  }

  // ----- the server's side ----------------------------------------------

  open(): void {
    this.onopen?.(new Event("open"));
  }

  receive(requestId: bigint | number, body: ServerBody): void {
    const bytes = toBinary(ServerFrameSchema, create(ServerFrameSchema, { requestId: BigInt(requestId), body }));
    this.onmessage?.({ data: bytes.buffer } as MessageEvent);
  }

  receiveRaw(data: unknown): void {
    this.onmessage?.({ data } as MessageEvent);
  }

  serverClose(code: number, reason = ""): void {
    this.onclose?.({ code, reason } as CloseEvent);
  }

  frames(): ClientFrame[] {
    return this.sent.map((b) => fromBinary(ClientFrameSchema, b));
  }
}

/** A store whose saves finish only when the test says so. */
class GatedStore implements OutboxStore {
  readonly saves: OutboxEntry[][] = [];
  private release: (() => void)[] = [];
  constructor(private readonly initial: OutboxEntry[] = []) {}
  async load(): Promise<OutboxEntry[]> {
    return this.initial;
  }
  save(entries: OutboxEntry[]): Promise<void> {
    this.saves.push(entries);
    return new Promise((resolve) => this.release.push(resolve));
  }
  finishSaves(): void {
    for (const r of this.release.splice(0)) r();
  }
}

/** Lets promise callbacks (a finished save) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

function setup(options: { store?: OutboxStore; random?: () => number } = {}) {
  const session = new ClientSession(sessionConfig("tok"));
  const events: SessionEvent[] = [];
  const issues: DriverIssue[] = [];
  const driver = new Driver(session, {
    url: "ws://chat.test/v1/ws",
    webSocket: FakeWebSocket,
    outboxStore: options.store,
    now: () => Date.now(),
    random: options.random ?? (() => 0),
    onIssue: (issue) => issues.push(issue),
  });
  driver.subscribe((e) => events.push(e));
  const states = () => events.flatMap((e) => (e.type === "StateChanged" ? [e.state.kind] : []));
  return { session, driver, events, issues, states };
}

/** Opens the latest socket, answers its Auth with Welcome and its Resume. */
function goOnline(ws: FakeWebSocket): void {
  ws.open();
  const auth = ws.frames().find((f) => f.body.case === "auth");
  ws.receive(auth?.requestId ?? 0n, { case: "welcome", value: { username: "me", rooms: [{ name: "a", epoch: "e1" }] } });
  const resume = ws.frames().find((f) => f.body.case === "resume");
  ws.receive(resume?.requestId ?? 0n, { case: "resumed", value: { rooms: [] } });
}

const latest = (): FakeWebSocket => {
  const ws = FakeWebSocket.instances.at(-1);
  if (ws === undefined) throw new Error("no socket opened");
  return ws;
};

beforeEach(() => {
  FakeWebSocket.instances = [];
  vi.useFakeTimers({ now: 1_700_000_000_000 });
});

afterEach(() => {
  vi.useRealTimers();
});

describe("Driver", () => {
  it("connects: Auth bytes go out, Welcome comes in, the session is online", async () => {
    const { driver, events, states } = setup();
    await driver.start();
    expect(FakeWebSocket.instances).toHaveLength(1);
    const ws = latest();
    expect([ws.url, ws.protocols, ws.binaryType]).toEqual(["ws://chat.test/v1/ws", SUBPROTOCOL, "arraybuffer"]);
    expect(ws.sent).toEqual([]); // nothing before the socket opened
    ws.open();
    const [auth] = ws.frames();
    expect(auth?.body.case === "auth" && auth.body.value.token).toBe("tok");
    ws.receive(auth?.requestId ?? 0n, { case: "welcome", value: { username: "me" } });
    expect(states()).toEqual(["connecting", "authenticating", "online"]);
    expect(events.some((e) => e.type === "Welcome" && e.welcome.username === "me")).toBe(true);
    expect(ws.frames().map((f) => f.body.case)).toEqual(["auth", "resume"]);
    driver.stop();
  });

  it("restores the saved outbox before connecting and sends it after Welcome", async () => {
    const store = new GatedStore([{ clientMsgId: "saved-1", room: "a", text: "from before", action: false }]);
    const { driver, events } = setup({ store });
    const started = driver.start();
    expect(FakeWebSocket.instances).toHaveLength(0); // still loading
    await started;
    expect(events.map((e) => e.type)).toEqual(["StateChanged", "SendPending"]);
    goOnline(latest());
    const send = latest().frames().find((f) => f.body.case === "sendMessage");
    expect(send?.body.case === "sendMessage" && send.body.value.clientMsgId).toBe("saved-1");
    driver.stop();
  });

  it("saves the outbox on OutboxChanged before the new send leaves", async () => {
    const store = new GatedStore();
    const { driver } = setup({ store });
    await driver.start();
    const ws = latest();
    goOnline(ws);
    const id = driver.call((session, now) => session.sendMessage(now, "a", "hello", false, "new-1"));
    expect(id).toBe("new-1");
    expect(store.saves).toEqual([[{ clientMsgId: "new-1", room: "a", text: "hello", action: false }]]);
    expect(ws.frames().some((f) => f.body.case === "sendMessage")).toBe(false);
    store.finishSaves();
    await settle();
    const send = ws.frames().find((f) => f.body.case === "sendMessage");
    expect(send?.body.case === "sendMessage" && send.body.value.clientMsgId).toBe("new-1");
    // The ack empties the outbox, which is saved again.
    ws.receive(send?.requestId ?? 0n, { case: "sendAck", value: { room: "a", clientMsgId: "new-1", seq: 1n } });
    expect(store.saves.at(-1)).toEqual([]);
    store.finishSaves();
    driver.stop();
  });

  it("reconnects after a transport failure, with backoff, and not after 4410", async () => {
    const { driver, session, issues } = setup({ random: () => 0.5 });
    await driver.start();
    goOnline(latest());
    latest().serverClose(1006);
    expect(session.state()).toEqual({ kind: "reconnecting", at: Date.now() + 125, attempt: 0 });
    expect(issues).toContainEqual({ kind: "disconnected", closeCode: undefined, reason: "" });
    vi.advanceTimersByTime(124);
    expect(FakeWebSocket.instances).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeWebSocket.instances).toHaveLength(2);
    // This one fails before opening: a failed connect, backed off further.
    latest().serverClose(1006);
    expect(session.state()).toMatchObject({ kind: "reconnecting", attempt: 1 });
    vi.advanceTimersByTime(250);
    expect(FakeWebSocket.instances).toHaveLength(3);
    goOnline(latest());
    latest().serverClose(4410, "logged out");
    expect(session.state()).toEqual({ kind: "offline", reason: { kind: "loggedOut" } });
    vi.advanceTimersByTime(60_000);
    expect(FakeWebSocket.instances).toHaveLength(3);
    driver.stop();
  });

  it("drops a stale socket (keepalive unanswered) and reconnects", async () => {
    const { driver, events } = setup();
    await driver.start();
    const first = latest();
    goOnline(first);
    vi.advanceTimersByTime(15_000);
    expect(first.frames().filter((f) => f.body.case === "ping")).toHaveLength(1);
    vi.advanceTimersByTime(10_000);
    expect(events.some((e) => e.type === "TransportStale")).toBe(true);
    expect(first.closed).toBeDefined();
    vi.advanceTimersByTime(1);
    expect(FakeWebSocket.instances).toHaveLength(2);
    // The dropped socket's late close changes nothing.
    first.serverClose(1006);
    expect(FakeWebSocket.instances).toHaveLength(2);
    driver.stop();
  });

  it("reports bytes that are not frames without stopping", async () => {
    const { driver, issues, session } = setup();
    await driver.start();
    goOnline(latest());
    latest().receiveRaw("hello");
    latest().receiveRaw(new Uint8Array([0xff, 0xff]).buffer);
    expect(issues.map((i) => i.kind)).toEqual(["invalidFrame", "invalidFrame"]);
    expect(session.state()).toEqual({ kind: "online" });
    driver.stop();
  });

  it("a listener's command runs after the event it answers, in order", async () => {
    const { driver, events } = setup();
    driver.subscribe((e) => {
      if (e.type === "StateChanged" && e.state.kind === "online") driver.call((s, now) => s.listRooms(now, true));
    });
    await driver.start();
    goOnline(latest());
    expect(latest().frames().map((f) => f.body.case)).toEqual(["auth", "resume", "listRooms"]);
    const types = events.map((e) => e.type);
    expect(types.indexOf("Welcome")).toBeLessThan(types.lastIndexOf("StateChanged"));
    driver.stop();
  });

  it("stop closes the socket with 1000 and the session for good", async () => {
    const { driver, states } = setup();
    await driver.start();
    const ws = latest();
    goOnline(ws);
    driver.stop();
    expect(ws.closed).toEqual({ code: 1000, reason: "bye" });
    expect(states().at(-1)).toBe("offline");
    vi.advanceTimersByTime(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });
});

it("wsUrl maps the page origin to the socket endpoint (§3.1)", () => {
  expect(wsUrl("https://chat.example")).toBe("wss://chat.example/v1/ws");
  expect(wsUrl("http://localhost:8080")).toBe("ws://localhost:8080/v1/ws");
});
