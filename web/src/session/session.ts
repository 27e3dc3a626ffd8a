// The sans-IO client session state machine.
//
// Spec: §6 (authentication), §8 (messages), §9 (history), §10 (resume),
// §11.3 (read state), §12.1 (liveness), §13.2 (close codes) and §14 (client
// behaviour). A port of crates/protocol/src/session/mod.rs, in the style of
// quinn-proto:
//
// - `handle*` feeds in what happened: a transport opened or closed, bytes
//   arrived, time passed. Time is always an argument (`now`, milliseconds
//   on any clock the driver likes, as long as it is one clock), randomness a
//   `random` argument; nothing here reads a clock or touches a socket.
// - `pollTransmit` yields encoded frames to write, `pollEvent` things to
//   show, `pollTimeout` the next instant `handleTimeout` must be called.
// - Commands (`sendMessage`, `joinRoom`, ...) queue requests; a command
//   that cannot be queued throws a CommandError.
//
// For a correct server it guarantees: every message is shown once, in seq
// order per room, with gaps filled from history; sends survive reconnects
// in the outbox and are resent in order with their original client_msg_id.
//
// Seqs, nonces and server timestamps are bigint, as protobuf-es gives
// uint64/int64; request ids are numbers (this session allocates them from 1).

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import type { Welcome } from "../gen/confab/v1/auth_pb";
import type { Presence, Typing } from "../gen/confab/v1/ephemeral_pb";
import { ErrorCode, type Error as WireError } from "../gen/confab/v1/errors_pb";
import { type ClientFrame, ClientFrameSchema, type ServerFrame, ServerFrameSchema } from "../gen/confab/v1/frames_pb";
import {
  type HistoryPage,
  type Message,
  MessageKind,
  type Resumed,
  type RoomResume,
  RoomResume_Status,
  RelationSchema,
  type SendAck,
} from "../gen/confab/v1/messages_pb";
import type { ReadState } from "../gen/confab/v1/read_pb";
import type { MemberList, RoomInfo, RoomList, RoomListUpdate } from "../gen/confab/v1/rooms_pb";
import { Backoff } from "./backoff";
import { CloseCode, isCloseCode, shouldReconnect } from "./closeCodes";
import {
  DEFAULT_MAX_TEXT_BYTES,
  parseClientMsgId,
  parseMessageText,
  parseReactionKey,
  parseRoomName,
  parseTopic,
  ValidationError,
} from "./names";
import { Outbox, type OutboxEntry, type OutboxRelation } from "./outbox";
import { type ReadCounts, RoomRead } from "./read";
import { RoomTrack } from "./rooms";
import { OwnSends } from "./sends";

/** Largest server frame a client accepts (§12.2): a full history page can be big. */
export const MAX_SERVER_FRAME_BYTES = 16 * 1024 * 1024;
/** Default largest frame (§12.2), until Welcome.limits says otherwise. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;
/** Most rooms collected while paging the room list, so a server that never
 * ends the list cannot grow the client without bound. */
export const MAX_LISTED_ROOMS = 100_000;

/** The optional capabilities of §3.4 this session knows and asks for by default. */
export const CAPABILITIES = [
  "typing",
  "presence",
  "room-list-push",
  "read-state",
  "edit",
  "redact",
  "reply",
  "react",
] as const;

/** Settings of a session. Durations are milliseconds. */
export interface SessionConfig {
  /** Bearer token from the login endpoint. */
  token: string;
  /** Optional capabilities to ask for (§3.4). */
  capabilities: string[];
  /** Client name for the server's logs. */
  clientName: string;
  /** How long a request may go unanswered before RequestTimedOut. */
  requestTimeout: number;
  /** How often to send a keepalive Ping while online (§12.1). */
  keepaliveInterval: number;
  /** Reconnect backoff (§14.2). */
  backoff: Backoff;
  /** Page size used to fill gaps. */
  gapPage: number;
  /** Sends on the wire at once. 1 keeps per-sender order even when the
   * server refuses a send as rate limited; more trades that for throughput. */
  maxInFlight: number;
  /** How long a send may wait for the server, while online, before it is
   * reported pending: a quick delivery is shown once, as delivered,
   * without a pending state flashing first. */
  pendingAfter: number;
}

/** Defaults with the given token (those of Rust's `SessionConfig::new`). */
export function sessionConfig(token: string, overrides: Partial<Omit<SessionConfig, "token">> = {}): SessionConfig {
  return {
    token,
    capabilities: [...CAPABILITIES],
    clientName: "confab-web",
    requestTimeout: 10_000,
    keepaliveInterval: 15_000,
    backoff: new Backoff(),
    gapPage: 100,
    maxInFlight: 1,
    pendingAfter: 400,
    ...overrides,
  };
}

/** Why a session stopped. */
export type OfflineReason =
  /** The user closed the session. */
  | { readonly kind: "closed" }
  /** The token was rejected (invalid, expired or revoked); log in again. */
  | { readonly kind: "authRejected"; readonly code: ErrorCode }
  /** The session was logged out (close 4410). */
  | { readonly kind: "loggedOut" }
  /** The server closed with a code after which reconnecting would not help. */
  | { readonly kind: "closedByServer"; readonly code: number };

/** Connection state, as shown to users (§14.2). */
export type ConnectionState =
  /** The driver should open a transport now and call handleConnected. */
  | { readonly kind: "connecting" }
  /** Transport open, Auth sent, waiting for Welcome. */
  | { readonly kind: "authenticating" }
  /** Welcome received; requests flow. */
  | { readonly kind: "online" }
  /** Waiting for the backoff timer (until `at`) before attempt `attempt` (from 0). */
  | { readonly kind: "reconnecting"; readonly at: number; readonly attempt: number }
  /** Stopped for good; only reauthenticate (after authRejected) or a new session continues. */
  | { readonly kind: "offline"; readonly reason: OfflineReason };

/** What a request was for, reported with its outcome. */
export type RequestKind =
  | { readonly kind: "auth" }
  | { readonly kind: "ping" }
  | { readonly kind: "listRooms" }
  | { readonly kind: "resume" }
  | { readonly kind: "createRoom"; readonly room: string }
  | { readonly kind: "joinRoom"; readonly room: string }
  | { readonly kind: "leaveRoom"; readonly room: string }
  | { readonly kind: "listMembers"; readonly room: string }
  /** SendMessage with this client_msg_id. */
  | { readonly kind: "send"; readonly clientMsgId: string }
  /** FetchHistory asked for by the user. */
  | { readonly kind: "history"; readonly room: string }
  /** FetchHistory filling a gap. */
  | { readonly kind: "gapFill"; readonly room: string }
  | { readonly kind: "setTyping"; readonly room: string }
  | { readonly kind: "markRead"; readonly room: string }
  /** The page that opens a view of this room (openView). */
  | { readonly kind: "view"; readonly room: string };

/** Something to show or act on. `type` is the name of the Rust variant. */
export type SessionEvent =
  /** The connection state changed. On connecting the driver opens a transport. */
  | { type: "StateChanged"; state: ConnectionState }
  /** Authenticated: who we are, what the server allows. */
  | { type: "Welcome"; welcome: Welcome }
  /** A room message, shown exactly once and in seq order per room. `fromSelf`:
   * this user sent it (from any connection); `sentHere`: it is the echo of
   * a send of this session, whose Delivered was or is reported; `epoch`: the
   * room epoch its seq counts in (empty while none is known). */
  | { type: "Message"; message: Message; fromSelf: boolean; sentHere: boolean; epoch: string }
  /** A send waited longer than pendingAfter, or was queued while not
   * online, or was restored: show it pending. At most once per send, never after Delivered. */
  | { type: "SendPending"; entry: OutboxEntry }
  /** A send is stored, as its echo or its SendAck showed, whichever came
   * first; once per send (Acked still follows the SendAck). */
  | { type: "Delivered"; entry: OutboxEntry; seq: bigint; serverTsMs: bigint; wasPending: boolean }
  /** The server durably stored one of our sends; it left the outbox. */
  | { type: "Acked"; ack: SendAck }
  /** The server refused a send for good; it left the outbox. */
  | { type: "SendFailed"; entry: OutboxEntry; error: WireError }
  /** The outbox changed: drivers persisting it save now. */
  | { type: "OutboxChanged" }
  /** Reply to listRooms: every page, each room once. */
  | { type: "RoomList"; rooms: RoomInfo[] }
  /** A pushed room-list change. */
  | { type: "RoomListUpdate"; update: RoomListUpdate }
  /** Joined (or created) a room. */
  | { type: "Joined"; room: RoomInfo }
  /** Left a room. */
  | { type: "Left"; room: string }
  /** Reply to listMembers. */
  | { type: "Members"; members: MemberList }
  /** Reply to a user's fetchHistory. */
  | { type: "History"; page: HistoryPage }
  /** A view opened by openView is ready: the room's newest messages merged
   * with those that arrived live meanwhile, ascending, each once. Later
   * Message events of the room continue after it without repeating any. */
  | { type: "View"; room: string; messages: Message[]; hasMore: boolean }
  /** How resuming a room went (§10.3). */
  | { type: "Resumed"; resume: RoomResume }
  /** The room's history was reset on the server (§10.5): messages shown
   * for it belong to the old epoch. */
  | { type: "EpochChanged"; room: string; headSeq: bigint }
  /** Messages the server could not supply were skipped (a server bug). */
  | { type: "GapSkipped"; room: string; from: bigint; to: bigint }
  | { type: "Presence"; presence: Presence }
  | { type: "Typing"; typing: Typing }
  /** A room's read state changed (§11.3); readState(room) has the same. */
  | { type: "ReadState"; room: string; counts: ReadCounts }
  /** Reply to a ping() of the user. */
  | { type: "Pong"; nonce: bigint }
  /** A request failed with a typed error. */
  | { type: "RequestFailed"; requestId: number; kind: RequestKind; error: WireError }
  /** A request got no answer in time. */
  | { type: "RequestTimedOut"; requestId: number; kind: RequestKind }
  /** A request was lost with the connection before it was answered. */
  | { type: "RequestAborted"; requestId: number; kind: RequestKind }
  /** An error frame that answers no request of ours. */
  | { type: "ServerError"; error: WireError }
  /** The keepalive Ping (or the Auth) went unanswered: the driver drops the
   * transport and calls handleDisconnected. */
  | { type: "TransportStale" };

/** Why a command could not be queued. */
export class CommandError extends Error {
  readonly kind: "invalid" | "notOnline" | "stopped";
  /** The failed check, for kind "invalid". */
  readonly validation: ValidationError | undefined;

  constructor(kind: "invalid" | "notOnline" | "stopped", validation?: ValidationError) {
    super(
      kind === "invalid"
        ? (validation?.message ?? "invalid argument")
        : kind === "notOnline"
          ? "not connected; wait until the session is online, or send a message (those are queued)"
          : "the session has stopped; log in again",
    );
    this.name = "CommandError";
    this.kind = kind;
    this.validation = validation;
  }
}

/** Why bytes from the server were not a frame (the session is unchanged). */
export class DecodeError extends Error {
  readonly problem:
    | { kind: "oversize"; size: number; max: number }
    | { kind: "malformed"; reason: string }
    | { kind: "unknownBody"; requestId: bigint };

  constructor(problem: DecodeError["problem"]) {
    super(
      problem.kind === "oversize"
        ? `frame of ${problem.size} bytes exceeds the ${problem.max}-byte limit`
        : problem.kind === "malformed"
          ? `frame is not a valid confab.v1 envelope (${problem.reason}); the peer is broken or speaks another protocol`
          : `frame with request_id ${problem.requestId} has no body known to confab.v1; the peer may speak a newer minor version`,
    );
    this.name = "DecodeError";
    this.problem = problem;
  }
}

/** A room position: what a position store saves, what Resume sends (§10.1). */
export interface RoomPosition {
  room: string;
  lastSeq: bigint;
  epoch: string;
}

/** A FetchHistory anchor (§9), in protobuf-es oneof form; undefined: the newest page. */
export type HistoryAnchor = { case: "beforeSeq"; value: bigint } | { case: "afterSeq"; value: bigint } | undefined;

type ClientBody = NonNullable<MessageInitShape<typeof ClientFrameSchema>["body"]>;

interface Pending {
  kind: RequestKind;
  deadline: number | undefined;
}

/** A FIFO with O(1) removal at the front; events can come by the hundred (a history page). */
class Queue<T> {
  private items: T[] = [];
  private head = 0;
  push(item: T): void {
    this.items.push(item);
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.head++;
    if (this.head > 64 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

function sameReason(a: OfflineReason, b: OfflineReason): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "authRejected" && b.kind === "authRejected") return a.code === b.code;
  if (a.kind === "closedByServer" && b.kind === "closedByServer") return a.code === b.code;
  return true;
}

function sameState(a: ConnectionState, b: ConnectionState): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "reconnecting" && b.kind === "reconnecting") return a.at === b.at && a.attempt === b.attempt;
  if (a.kind === "offline" && b.kind === "offline") return sameReason(a.reason, b.reason);
  return true;
}

function minDefined(...values: (number | undefined)[]): number | undefined {
  let min: number | undefined;
  for (const v of values) if (v !== undefined && (min === undefined || v < min)) min = v;
  return min;
}

function sortedKeys<V>(map: Map<string, V>): string[] {
  // Rust keeps these in BTreeMaps; the order shows in Resume and in the
  // order of ReadState events, so it is kept here too (names are ASCII, so
  // UTF-16 order is byte order).
  return [...map.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function toSeq(seq: bigint | number): bigint {
  return typeof seq === "bigint" ? seq : BigInt(Math.max(0, Math.floor(seq)));
}

/** Runs a validator, turning its refusal into the command's error. */
/** The wire form of an outbox relation (§8.6); the server sets
 * target_seq and a reply's quote. */
function wireRelation(relation: OutboxRelation): MessageInitShape<typeof RelationSchema> {
  switch (relation.kind) {
    case "edit":
      return { targetId: relation.targetId, kind: { case: "edit", value: {} } };
    case "redact":
      return { targetId: relation.targetId, kind: { case: "redact", value: {} } };
    case "reply":
      return { targetId: relation.targetId, kind: { case: "reply", value: {} } };
    case "react":
      return {
        targetId: relation.targetId,
        kind: { case: "react", value: { key: relation.key, remove: relation.remove } },
      };
  }
}

function valid<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof ValidationError) throw new CommandError("invalid", err);
    throw err;
  }
}

/** The client session state machine. See the header comment. */
export class ClientSession {
  private config: SessionConfig;
  private _state: ConnectionState = { kind: "connecting" };
  private attempt = 0;
  private nextRequestId = 1;
  private transmit: ClientFrame[] = [];
  private events = new Queue<SessionEvent>();
  /** Unanswered requests by id. Ids only grow, so insertion order is id order. */
  private pending = new Map<number, Pending>();
  private _outbox = new Outbox();
  /** What the user was told of their sends: pending, delivered. */
  private sends = new OwnSends();
  private rooms = new Map<string, RoomTrack>();
  private _welcome: Welcome | undefined;
  private maxTextBytes = DEFAULT_MAX_TEXT_BYTES;
  private keepaliveAt: number | undefined;
  private keepalivePing: number | undefined;
  /** Sends wait until then after a retryable refusal (§12.5 retry_after_ms). */
  private sendsPausedUntil: number | undefined;
  /** Rooms of the RoomList pages so far while following next_cursor (§7.1). */
  private roomList: RoomInfo[] = [];
  /** Per room, the read state (§11.3), with capability read-state. */
  private reads = new Map<string, RoomRead>();
  /** Markers the user moved that the server has not confirmed: sent when
   * online and no MarkRead of the room is in flight, so scrolling through
   * a room costs one request at a time, and a read made offline reaches
   * the server on reconnect. */
  private marksWanted = new Map<string, bigint>();
  /** Views being opened: the room's live messages held until its page comes. */
  private viewsLoading = new Map<string, Message[]>();
  /** Per room, the highest seq a view showed: a live message at or below it is not shown again. */
  private viewFloor = new Map<string, bigint>();
  private userClosed = false;

  /** A session that wants to connect now (its first event is StateChanged connecting). */
  constructor(config: SessionConfig) {
    this.config = { ...config, capabilities: [...config.capabilities] };
    this.events.push({ type: "StateChanged", state: this._state });
  }

  // ----- inspection -------------------------------------------------------

  /** Current connection state. */
  state(): ConnectionState {
    return this._state;
  }

  /** The Welcome of the current or last connection. */
  welcome(): Welcome | undefined {
    return this._welcome;
  }

  /** Unacknowledged sends, oldest first: what an OutboxStore saves. */
  outbox(): OutboxEntry[] {
    return this._outbox.entries();
  }

  /** Highest seq shown per room, with its epoch: what a position store saves. */
  positions(): RoomPosition[] {
    return sortedKeys(this.rooms).map((room) => {
      const t = this.rooms.get(room) as RoomTrack;
      return { room, lastSeq: t.lastSeq, epoch: t.epoch };
    });
  }

  /** A room's read state (§11.3); undefined when the server reported none. */
  readState(room: string): RoomRead | undefined {
    return this.reads.get(room);
  }

  /** Every room's read state, by room name. */
  readStates(): [string, RoomRead][] {
    return sortedKeys(this.reads).map((room) => [room, this.reads.get(room) as RoomRead]);
  }

  // ----- restoring saved state -------------------------------------------

  /** Loads outbox entries saved by an earlier run; they are sent, in order
   * and with their ids, once online. Entries already queued are skipped.
   * Each is reported pending (SendPending) at once. */
  restoreOutbox(entries: Iterable<OutboxEntry>): void {
    for (const e of entries) {
      const entry = { clientMsgId: e.clientMsgId, room: e.room, text: e.text, action: e.action };
      if (this.sends.queued(entry.clientMsgId, undefined)) {
        this.events.push({ type: "SendPending", entry: { ...entry } });
      }
      this._outbox.push(entry);
    }
  }

  /** Loads room positions saved by an earlier run, so the next Resume
   * replays exactly what came after them (§10.1). */
  restorePositions(positions: Iterable<RoomPosition>): void {
    for (const p of positions) this.rooms.set(p.room, new RoomTrack(p.lastSeq, p.epoch));
  }

  // ----- transport events -------------------------------------------------

  /** The transport is open: authenticate (§6.1). */
  handleConnected(now: number): void {
    if (this._state.kind === "offline") return;
    this.setState({ kind: "authenticating" });
    this.request(
      {
        case: "auth",
        value: { token: this.config.token, capabilities: this.config.capabilities, clientName: this.config.clientName },
      },
      { kind: "auth" },
      now,
    );
  }

  /** Opening the transport failed: back off and try again. */
  handleConnectFailed(now: number, random: () => number): void {
    this.handleDisconnected(now, undefined, random);
  }

  /**
   * The transport closed, with the peer's close code if a close frame came
   * (§13.2; pass undefined for 1005/1006 or a failed connect).
   */
  handleDisconnected(now: number, closeCode: number | undefined, random: () => number): void {
    if (this._state.kind === "offline") return;
    this.dropConnection();
    if (this.userClosed) {
      this.setState({ kind: "offline", reason: { kind: "closed" } });
      return;
    }
    if (closeCode !== undefined && isCloseCode(closeCode)) {
      let reason: OfflineReason | undefined;
      if (closeCode === CloseCode.LoggedOut) reason = { kind: "loggedOut" };
      else if (closeCode === CloseCode.AuthFailed) reason = { kind: "authRejected", code: ErrorCode.TOKEN_INVALID };
      else if (!shouldReconnect(closeCode)) reason = { kind: "closedByServer", code: closeCode };
      if (reason !== undefined) {
        this.setState({ kind: "offline", reason });
        return;
      }
    }
    const attempt = this.attempt;
    this.attempt++;
    const at = now + this.config.backoff.delay(attempt, random);
    this.setState({ kind: "reconnecting", at, attempt });
  }

  /** Time passed: expire requests, start a due reconnect, send keepalives. */
  handleTimeout(now: number): void {
    for (const clientMsgId of this.sends.due(now)) {
      const entry = this._outbox.get(clientMsgId);
      if (entry !== undefined) this.events.push({ type: "SendPending", entry: { ...entry } });
    }
    if (this._state.kind === "reconnecting") {
      if (now >= this._state.at) this.setState({ kind: "connecting" });
      return;
    }
    const expired: number[] = [];
    for (const [id, p] of this.pending) if (p.deadline !== undefined && p.deadline <= now) expired.push(id);
    for (const requestId of expired) {
      const p = this.pending.get(requestId);
      if (p === undefined) continue;
      this.pending.delete(requestId);
      if (this.keepalivePing === requestId) {
        this.keepalivePing = undefined;
        this.events.push({ type: "TransportStale" });
        continue;
      }
      let resend = false;
      switch (p.kind.kind) {
        // The send keeps its place and goes out again with the same
        // client_msg_id: a late original and the resend are one message
        // to the server (§8.5).
        case "send":
          this._outbox.unsend(requestId);
          resend = true;
          break;
        // Asked again; otherwise the held messages would wait for a reconnect.
        case "gapFill": {
          const room = p.kind.room;
          const track = this.rooms.get(room);
          if (track !== undefined) {
            track.gapFill = undefined;
            this.startGapFill(now, room, track.lastSeq);
          }
          break;
        }
        default:
          break;
      }
      this.releaseView(p.kind);
      this.events.push({ type: "RequestTimedOut", requestId, kind: p.kind });
      // Unlike Rust: an unanswered Auth means the transport is as dead as
      // an unanswered keepalive, and nothing else would end the wait
      // (keepalives only run online).
      if (p.kind.kind === "auth") this.events.push({ type: "TransportStale" });
      if (resend) this.pumpOutbox(now);
    }
    if (this.sendsPausedUntil !== undefined && this.sendsPausedUntil <= now) this.pumpOutbox(now);
    if (
      this._state.kind === "online" &&
      this.keepaliveAt !== undefined &&
      this.keepaliveAt <= now &&
      this.keepalivePing === undefined
    ) {
      this.keepalivePing = this.request({ case: "ping", value: { nonce: 0n } }, { kind: "ping" }, now);
      this.keepaliveAt = now + this.config.keepaliveInterval;
    }
  }

  /**
   * Decodes and handles one binary message from the server. Throws a
   * DecodeError (and changes nothing) for oversize, malformed or unknown frames.
   */
  handleBytes(now: number, bytes: Uint8Array): void {
    // §12.2: max_frame_bytes bounds what clients send; a server frame
    // carries up to a full history page, so clients accept 16 MiB.
    const limit = this._welcome?.limits?.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    const max = Math.max(limit, MAX_SERVER_FRAME_BYTES);
    if (bytes.length > max) throw new DecodeError({ kind: "oversize", size: bytes.length, max });
    let frame: ServerFrame;
    try {
      frame = fromBinary(ServerFrameSchema, bytes);
    } catch (err) {
      throw new DecodeError({ kind: "malformed", reason: err instanceof Error ? err.message : String(err) });
    }
    // Unknown oneof members decode as unknown fields: no body.
    if (frame.body.case === undefined) throw new DecodeError({ kind: "unknownBody", requestId: frame.requestId });
    this.handleFrame(now, frame);
  }

  /** Handles one decoded frame from the server. */
  handleFrame(now: number, frame: ServerFrame): void {
    if (this._state.kind === "offline") return;
    const body = frame.body;
    if (body.case === undefined) return;
    // 0 is a push; an id beyond 2^53 was never allocated here.
    const id =
      frame.requestId === 0n || frame.requestId > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(frame.requestId);
    let pending: Pending | undefined;
    if (id !== undefined) {
      pending = this.pending.get(id);
      this.pending.delete(id);
    }
    if (id !== undefined && this.keepalivePing === id) {
      this.keepalivePing = undefined;
      return;
    }
    switch (body.case) {
      case "welcome":
        this.onWelcome(now, body.value);
        break;
      case "error":
        this.onError(now, id, pending, body.value);
        break;
      case "message":
        this.onMessage(now, body.value);
        break;
      case "sendAck":
        this.onAck(now, body.value);
        break;
      case "historyPage":
        this.onHistory(now, pending, body.value);
        break;
      case "resumed":
        this.onResumed(now, body.value);
        break;
      case "roomJoined": {
        const room = body.value.room;
        if (room !== undefined) {
          this.onJoined(now, room);
          this.events.push({ type: "Joined", room });
        }
        break;
      }
      case "roomLeft": {
        const name = body.value.name;
        this.rooms.delete(name);
        this.reads.delete(name);
        this.viewFloor.delete(name);
        this.marksWanted.delete(name);
        this.events.push({ type: "Left", room: name });
        break;
      }
      case "roomList":
        this.onRoomList(now, pending, body.value);
        break;
      case "roomListUpdate":
        this.events.push({ type: "RoomListUpdate", update: body.value });
        break;
      case "memberList":
        this.events.push({ type: "Members", members: body.value });
        break;
      case "presence":
        this.events.push({ type: "Presence", presence: body.value });
        break;
      case "typing":
        this.events.push({ type: "Typing", typing: body.value });
        break;
      case "readState":
        this.onReadState(now, pending, body.value);
        break;
      case "pong":
        if (pending !== undefined) this.events.push({ type: "Pong", nonce: body.value.nonce });
        break;
    }
  }

  // ----- commands ---------------------------------------------------------

  /**
   * Queues a message. It goes into the outbox at once (so it survives a
   * disconnect) and is sent when online. Returns its id. Throws
   * CommandError "stopped" when offline, "invalid" for a bad field.
   */
  sendMessage(now: number, room: string, text: string, action: boolean, clientMsgId: string): string {
    if (this._state.kind === "offline") throw new CommandError("stopped");
    const entry: OutboxEntry = {
      room: valid(() => parseRoomName(room)),
      text: valid(() => parseMessageText(text, this.maxTextBytes)),
      clientMsgId: valid(() => parseClientMsgId(clientMsgId)),
      action,
    };
    if (!this._outbox.contains(entry.clientMsgId)) {
      // Not online, it waits for a connection: pending at once.
      const pendingAt = this._state.kind === "online" ? now + this.config.pendingAfter : undefined;
      if (this.sends.queued(entry.clientMsgId, pendingAt)) {
        this.events.push({ type: "SendPending", entry: { ...entry } });
      }
    }
    this._outbox.push(entry);
    this.events.push({ type: "OutboxChanged" });
    this.pumpOutbox(now);
    return entry.clientMsgId;
  }

  /**
   * Queues an edit, deletion, reply or reaction (§8.6) like sendMessage:
   * through the outbox, resent with its id until acknowledged. `text` is an
   * edit's new text or a reply's answer, and empty for the others.
   */
  sendRelation(now: number, room: string, relation: OutboxRelation, text: string, clientMsgId: string): string {
    if (this._state.kind === "offline") throw new CommandError("stopped");
    const hasText = relation.kind === "edit" || relation.kind === "reply";
    if (!hasText && text !== "") {
      throw new CommandError(
        "invalid",
        new ValidationError("text", { kind: "tooLong", len: text.length, max: 0 }),
      );
    }
    if (relation.kind === "react") valid(() => parseReactionKey(relation.key));
    const entry: OutboxEntry = {
      room: valid(() => parseRoomName(room)),
      text: hasText ? valid(() => parseMessageText(text, this.maxTextBytes)) : "",
      clientMsgId: valid(() => parseClientMsgId(clientMsgId)),
      action: false,
      relation: { ...relation },
    };
    this._outbox.push(entry);
    this.events.push({ type: "OutboxChanged" });
    this.pumpOutbox(now);
    return entry.clientMsgId;
  }

  /** Lists every room, optionally subscribing to changes (§7.1). The session
   * follows next_cursor itself and reports one RoomList once the last page came. */
  listRooms(now: number, subscribe: boolean): number {
    const id = this.onlineRequest(now, { case: "listRooms", value: { subscribe } }, { kind: "listRooms" });
    this.roomList = [];
    return id;
  }

  /** Creates a room and joins it (§7.2). */
  createRoom(now: number, name: string, topic: string): number {
    const room = valid(() => parseRoomName(name));
    const t = valid(() => parseTopic(topic));
    return this.onlineRequest(now, { case: "createRoom", value: { name: room, topic: t } }, { kind: "createRoom", room });
  }

  /** Joins a room (§7.3). */
  joinRoom(now: number, name: string): number {
    const room = valid(() => parseRoomName(name));
    return this.onlineRequest(now, { case: "joinRoom", value: { name: room } }, { kind: "joinRoom", room });
  }

  /** Leaves a room (§7.4). */
  leaveRoom(now: number, name: string): number {
    const room = valid(() => parseRoomName(name));
    return this.onlineRequest(now, { case: "leaveRoom", value: { name: room } }, { kind: "leaveRoom", room });
  }

  /** Lists a room's members (§7.5). */
  listMembers(now: number, name: string): number {
    const room = valid(() => parseRoomName(name));
    return this.onlineRequest(now, { case: "listMembers", value: { room } }, { kind: "listMembers", room });
  }

  /** Fetches a page of history (§9); the reply comes as a History event. */
  fetchHistory(now: number, name: string, anchor: HistoryAnchor, limit: number): number {
    const room = valid(() => parseRoomName(name));
    return this.onlineRequest(
      now,
      { case: "fetchHistory", value: { room, anchor: anchor ?? { case: undefined }, limit } },
      { kind: "history", room },
    );
  }

  /**
   * Opens a view of `room`: its newest `limit` messages, then its live
   * ones, nothing repeated or out of order where they meet. The page comes
   * as a View event; until then the room's live messages are held (and
   * come inside the view).
   */
  openView(now: number, name: string, limit: number): number {
    const room = valid(() => parseRoomName(name));
    const id = this.onlineRequest(
      now,
      { case: "fetchHistory", value: { room, anchor: { case: undefined }, limit } },
      { kind: "view", room },
    );
    if (!this.viewsLoading.has(room)) this.viewsLoading.set(room, []);
    return id;
  }

  /** Says the user started or stopped typing (§11.2). No reply on success. */
  setTyping(name: string, active: boolean): number {
    const room = valid(() => parseRoomName(name));
    if (this._state.kind !== "online") throw new CommandError("notOnline");
    const id = this.allocId();
    // Not tracked as pending: success has no reply. An error still echoes
    // the id and surfaces as ServerError.
    this.transmit.push(create(ClientFrameSchema, { requestId: BigInt(id), body: { case: "setTyping", value: { room, active } } }));
    return id;
  }

  /**
   * Says the user has read `room` up to `seq` (§11.3). The counts drop at
   * once; the server is told when online, one MarkRead per room at a time
   * (later marks wait for the reply and go as one), and again after a
   * reconnect if it never answered. A seq at or below the marker does nothing.
   */
  markRead(now: number, name: string, seq: bigint | number): void {
    if (this._state.kind === "offline") throw new CommandError("stopped");
    const room = valid(() => parseRoomName(name));
    const target = toSeq(seq);
    let read = this.reads.get(room);
    if (read === undefined) {
      read = new RoomRead();
      this.reads.set(room, read);
    }
    if (target <= read.readSeq()) return;
    read.readUpTo(target);
    const wanted = this.marksWanted.get(room);
    this.marksWanted.set(room, wanted !== undefined && wanted > target ? wanted : target);
    this.events.push({ type: "ReadState", room, counts: read.counts() });
    this.sendMark(now, room);
  }

  /** Sends a Ping (§12.1); the reply comes as Pong(nonce). */
  ping(now: number, nonce: bigint | number): number {
    return this.onlineRequest(now, { case: "ping", value: { nonce: toSeq(nonce) } }, { kind: "ping" });
  }

  /**
   * Replaces the bearer token, e.g. after logging in again (§6.2). A
   * session stopped by a rejected token connects again at once, keeping
   * its positions and outbox; in other non-offline states the token is
   * used from the next Auth on. Throws "stopped" when offline for another reason.
   */
  reauthenticate(token: string): void {
    const s = this._state;
    if (s.kind === "offline") {
      if (s.reason.kind !== "authRejected") throw new CommandError("stopped");
      this.config.token = token;
      this.attempt = 0;
      this.setState({ kind: "connecting" });
      return;
    }
    this.config.token = token;
  }

  /** Ends the wait of a reconnect backoff (the user asked, or the network
   * came back): connects at once. Does nothing in any other state. */
  reconnectNow(): void {
    if (this._state.kind === "reconnecting") this.setState({ kind: "connecting" });
  }

  /** Closes the session for good; the driver closes the transport with 1000. */
  close(): void {
    this.userClosed = true;
    this.dropConnection();
    this.setState({ kind: "offline", reason: { kind: "closed" } });
  }

  // ----- polling ----------------------------------------------------------

  /** The next frame to write to the transport, encoded as one binary message. */
  pollTransmit(): Uint8Array<ArrayBuffer> | undefined {
    const frame = this.transmit.shift();
    return frame === undefined ? undefined : toBinary(ClientFrameSchema, frame);
  }

  /** The next event to show or act on. */
  pollEvent(): SessionEvent | undefined {
    return this.events.shift();
  }

  /**
   * The next instant at which handleTimeout has work. Unlike Rust, a
   * deadline handleTimeout cannot act on in the current state (keepalive
   * and send pauses while not online, anything but pending reports while
   * offline) is not reported, so a driver never spins on a past one.
   */
  pollTimeout(): number | undefined {
    const s = this._state;
    if (s.kind === "reconnecting") return minDefined(s.at, this.sends.nextDue());
    if (s.kind === "offline") return this.sends.nextDue();
    let requests: number | undefined;
    for (const p of this.pending.values()) requests = minDefined(requests, p.deadline);
    const online = s.kind === "online";
    const resumeSends = online && !this._outbox.isEmpty() ? this.sendsPausedUntil : undefined;
    return minDefined(requests, online ? this.keepaliveAt : undefined, resumeSends, this.sends.nextDue());
  }

  // ----- internals --------------------------------------------------------

  private setState(state: ConnectionState): void {
    if (!sameState(this._state, state)) {
      this._state = state;
      this.events.push({ type: "StateChanged", state });
    }
  }

  private allocId(): number {
    return this.nextRequestId++;
  }

  private request(body: ClientBody, kind: RequestKind, now: number): number {
    const id = this.allocId();
    this.pending.set(id, { kind, deadline: now + this.config.requestTimeout });
    this.transmit.push(create(ClientFrameSchema, { requestId: BigInt(id), body }));
    return id;
  }

  private onlineRequest(now: number, body: ClientBody, kind: RequestKind): number {
    if (this._state.kind === "online") return this.request(body, kind, now);
    if (this._state.kind === "offline") throw new CommandError("stopped");
    throw new CommandError("notOnline");
  }

  /**
   * Forgets everything tied to the connection: unsent frames, the
   * keepalive, in-flight marks, fills, unanswered requests (user-visible
   * ones are reported aborted; sends, fills, marks and Resume are redone
   * by the session itself after the next Welcome). Used on disconnect, and
   * (unlike Rust) also when a token rejection or close() stops the
   * session, whose connection is as good as gone: so a later
   * reauthenticate starts clean instead of waiting for stale requests to time out.
   */
  private dropConnection(): void {
    this.transmit = [];
    this.keepaliveAt = undefined;
    this.keepalivePing = undefined;
    this._outbox.resetInFlight();
    for (const track of this.rooms.values()) track.gapFill = undefined;
    const aborted = [...this.pending];
    this.pending.clear();
    for (const [requestId, p] of aborted) {
      this.releaseView(p.kind);
      switch (p.kind.kind) {
        case "send":
        case "gapFill":
        case "resume":
        case "auth":
        case "markRead":
          break;
        default:
          this.events.push({ type: "RequestAborted", requestId, kind: p.kind });
      }
    }
  }

  /** Puts outbox entries on the wire, oldest first, up to maxInFlight. */
  private pumpOutbox(now: number): void {
    if (this._state.kind !== "online") return;
    if (this.sendsPausedUntil !== undefined && now < this.sendsPausedUntil) return;
    this.sendsPausedUntil = undefined;
    while (this._outbox.inFlight() < Math.max(1, this.config.maxInFlight)) {
      const entry = this._outbox.nextUnsent(this.nextRequestId);
      if (entry === undefined) break;
      this.request(
        {
          case: "sendMessage",
          value: {
            room: entry.room,
            clientMsgId: entry.clientMsgId,
            text: entry.text,
            kind: entry.action ? MessageKind.ACTION : MessageKind.TEXT,
            relation: entry.relation === undefined ? undefined : wireRelation(entry.relation),
          },
        },
        { kind: "send", clientMsgId: entry.clientMsgId },
        now,
      );
    }
  }

  /** Sends the wanted MarkRead of `room`, unless one is in flight. */
  private sendMark(now: number, room: string): void {
    if (this._state.kind !== "online") return;
    const seq = this.marksWanted.get(room);
    if (seq === undefined) return;
    for (const p of this.pending.values()) if (p.kind.kind === "markRead" && p.kind.room === room) return;
    this.request({ case: "markRead", value: { room, seq } }, { kind: "markRead", room }, now);
  }

  private onReadState(now: number, pending: Pending | undefined, state: ReadState): void {
    let read = this.reads.get(state.room);
    if (read === undefined) {
      read = new RoomRead();
      this.reads.set(state.room, read);
    }
    const taken = read.handleState(state);
    const wanted = this.marksWanted.get(state.room);
    if (wanted !== undefined) {
      if (wanted <= state.readSeq) this.marksWanted.delete(state.room);
      // The server counted from an older marker than the user's.
      else read.readUpTo(wanted);
    }
    if (taken) this.pushCounts(state.room);
    if (pending !== undefined) this.sendMark(now, state.room);
  }

  private pushCounts(room: string): void {
    const read = this.reads.get(room);
    if (read !== undefined) this.events.push({ type: "ReadState", room, counts: read.counts() });
  }

  private onWelcome(now: number, welcome: Welcome): void {
    this.attempt = 0;
    // A limit of 0 would refuse every text; no real server sends it.
    if (welcome.limits !== undefined && welcome.limits.maxTextBytes > 0) {
      this.maxTextBytes = welcome.limits.maxTextBytes;
    }
    // §10.1: resume every room we know and every room we are a member of.
    const positions = new Map<string, RoomPosition>();
    for (const info of welcome.rooms) {
      let track = this.rooms.get(info.name);
      if (track === undefined) {
        track = new RoomTrack(info.headSeq, info.epoch);
        this.rooms.set(info.name, track);
      }
      positions.set(info.name, { room: info.name, lastSeq: track.lastSeq, epoch: track.epoch });
    }
    for (const [room, track] of this.rooms) {
      if (!positions.has(room)) positions.set(room, { room, lastSeq: track.lastSeq, epoch: track.epoch });
    }
    // The server's counts replace ours: they are exact as of Welcome, which
    // is newer than anything this session saw before it.
    if (welcome.readStates.length > 0) {
      this.reads = new Map(welcome.readStates.map((s) => [s.room, RoomRead.fromWire(s)]));
      for (const [room, wanted] of this.marksWanted) this.reads.get(room)?.readUpTo(wanted);
    }
    this.events.push({ type: "Welcome", welcome });
    for (const room of sortedKeys(this.reads)) this.pushCounts(room);
    this._welcome = welcome;
    this.setState({ kind: "online" });
    const rooms = sortedKeys(positions).map((room) => positions.get(room) as RoomPosition);
    this.request({ case: "resume", value: { rooms } }, { kind: "resume" }, now);
    for (const room of sortedKeys(this.marksWanted)) this.sendMark(now, room);
    this.keepaliveAt = now + this.config.keepaliveInterval;
    this.pumpOutbox(now);
  }

  private onError(now: number, requestId: number | undefined, pending: Pending | undefined, error: WireError): void {
    const code = error.code;
    if (code === ErrorCode.TOKEN_INVALID || code === ErrorCode.TOKEN_EXPIRED || code === ErrorCode.TOKEN_REVOKED) {
      this.dropConnection();
      this.setState({ kind: "offline", reason: { kind: "authRejected", code } });
      this.events.push({ type: "ServerError", error });
      return;
    }
    if (pending === undefined || requestId === undefined) {
      this.events.push({ type: "ServerError", error });
      return;
    }
    const kind = pending.kind;
    switch (kind.kind) {
      case "send":
        if (error.retryable) {
          // The send keeps its place at the head of the outbox and goes out
          // again once retry_after_ms passed (or one backoff base without a
          // hint). Nothing is surfaced: a retry the session handles is not
          // the user's error.
          this._outbox.unsend(requestId);
          const wait = error.retryAfterMs > 0 ? error.retryAfterMs : this.config.backoff.base;
          this.sendsPausedUntil = now + wait;
        } else {
          const entry = this._outbox.remove(kind.clientMsgId);
          if (entry !== undefined) {
            this.sends.refused(kind.clientMsgId);
            this.events.push({ type: "OutboxChanged" });
            this.events.push({ type: "SendFailed", entry, error });
          }
          // Unlike Rust: the next queued send goes now, rather than
          // waiting for some other event to pump the outbox.
          this.pumpOutbox(now);
        }
        return;
      case "markRead":
        // A refused mark is not tried again (NOT_A_MEMBER, a bad name); one
        // refused for the rate goes with the next mark or reconnect, and is
        // not the user's error.
        if (!error.retryable) {
          this.marksWanted.delete(kind.room);
          this.events.push({ type: "RequestFailed", requestId, kind, error });
        }
        return;
      case "gapFill": {
        const track = this.rooms.get(kind.room);
        if (track !== undefined) track.gapFill = undefined;
        this.events.push({ type: "RequestFailed", requestId, kind, error });
        return;
      }
      default:
        this.releaseView(kind);
        this.events.push({ type: "RequestFailed", requestId, kind, error });
    }
  }

  private onMessage(now: number, message: Message): void {
    const room = message.room;
    let track = this.rooms.get(room);
    if (track === undefined) {
      // First sight of a room we hold no position for: start here.
      track = new RoomTrack(message.seq > 0n ? message.seq - 1n : 0n, "");
      this.rooms.set(room, track);
    }
    const out: Message[] = [];
    const accepted = track.accept(message, out);
    this.emitMessages(out);
    if (accepted.kind === "held" && accepted.startFill) this.startGapFill(now, room, track.lastSeq);
  }

  private startGapFill(now: number, room: string, afterSeq: bigint): void {
    if (this._state.kind !== "online") return;
    const id = this.request(
      { case: "fetchHistory", value: { room, anchor: { case: "afterSeq", value: afterSeq }, limit: this.config.gapPage } },
      { kind: "gapFill", room },
      now,
    );
    const track = this.rooms.get(room);
    if (track !== undefined) track.gapFill = id;
  }

  private emitMessages(messages: Message[]): void {
    const me = this._welcome?.username ?? "";
    for (const message of messages) {
      const held = this.viewsLoading.get(message.room);
      if (held !== undefined) {
        this.reads.get(message.room)?.handleMessage(message, me);
        held.push(message);
        continue;
      }
      const floor = this.viewFloor.get(message.room);
      if (floor !== undefined && message.seq <= floor) continue;
      const counted = this.reads.get(message.room)?.handleMessage(message, me) ?? false;
      const fromSelf = me !== "" && message.sender === me;
      const epoch = this.rooms.get(message.room)?.epoch ?? "";
      const sentHere = fromSelf && this.sends.isKnown(message.clientMsgId);
      if (sentHere) this.delivered(message.clientMsgId, message.seq, message.serverTsMs);
      this.events.push({ type: "Message", message, fromSelf, sentHere, epoch });
      if (counted) this.pushCounts(message.room);
    }
  }

  private onAck(now: number, ack: SendAck): void {
    // An ack for an id not in the outbox (already acked, or never ours) is
    // ignored: acks are idempotent by construction.
    if (this._outbox.contains(ack.clientMsgId)) {
      this.delivered(ack.clientMsgId, ack.seq, ack.serverTsMs);
      this._outbox.remove(ack.clientMsgId);
      this.events.push({ type: "OutboxChanged" });
      this.events.push({ type: "Acked", ack });
    }
    this.pumpOutbox(now);
  }

  /** Reports a send of ours delivered, the first time a sign of its storage comes. */
  private delivered(clientMsgId: string, seq: bigint, serverTsMs: bigint): void {
    const entry = this._outbox.get(clientMsgId);
    if (entry === undefined) return;
    const wasPending = this.sends.stored(clientMsgId);
    if (wasPending !== undefined) {
      this.events.push({ type: "Delivered", entry: { ...entry }, seq, serverTsMs, wasPending });
    }
  }

  private onHistory(now: number, pending: Pending | undefined, page: HistoryPage): void {
    const kind = pending?.kind;
    if (kind === undefined) return;
    switch (kind.kind) {
      case "gapFill": {
        const room = kind.room;
        const track = this.rooms.get(room);
        if (track === undefined) return;
        const out: Message[] = [];
        const next = track.fill(page.messages, page.hasMore, out);
        this.emitMessages(out);
        if (next.kind === "more") this.startGapFill(now, room, next.afterSeq);
        else if (next.kind === "skipped") this.events.push({ type: "GapSkipped", room, from: next.from, to: next.to });
        return;
      }
      case "view": {
        const room = kind.room;
        const held = this.viewsLoading.get(room) ?? [];
        this.viewsLoading.delete(room);
        const merged = new Map<bigint, Message>();
        for (const m of page.messages) merged.set(m.seq, m);
        for (const m of held) if (!merged.has(m.seq)) merged.set(m.seq, m);
        const messages = [...merged.values()].sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
        const top = messages[messages.length - 1];
        if (top !== undefined) {
          const floor = this.viewFloor.get(room) ?? 0n;
          this.viewFloor.set(room, floor > top.seq ? floor : top.seq);
        }
        this.events.push({ type: "View", room, messages, hasMore: page.hasMore });
        return;
      }
      default:
        this.events.push({ type: "History", page });
    }
  }

  /** A view's page will not come: what was held for it is shown live. */
  private releaseView(kind: RequestKind): void {
    if (kind.kind !== "view") return;
    const held = this.viewsLoading.get(kind.room);
    if (held === undefined) return;
    this.viewsLoading.delete(kind.room);
    this.emitMessages(held);
  }

  private onResumed(now: number, resumed: Resumed): void {
    for (const outcome of resumed.rooms) {
      switch (outcome.status) {
        case RoomResume_Status.REPLAYED: {
          const track = this.rooms.get(outcome.room);
          if (track !== undefined) track.epoch = outcome.epoch;
          break;
        }
        case RoomResume_Status.GAP_TOO_LARGE: {
          const track = this.rooms.get(outcome.room);
          if (track !== undefined) {
            track.epoch = outcome.epoch;
            if (outcome.headSeq > track.fillUntil) track.fillUntil = outcome.headSeq;
            // §10.4: page forward unless a live message already started it.
            if (track.gapFill === undefined && track.lastSeq < outcome.headSeq) {
              this.startGapFill(now, outcome.room, track.lastSeq);
            }
          }
          break;
        }
        case RoomResume_Status.EPOCH_CHANGED: {
          this.viewFloor.delete(outcome.room);
          let track = this.rooms.get(outcome.room);
          if (track === undefined) {
            track = new RoomTrack();
            this.rooms.set(outcome.room, track);
          }
          track.resetTo(outcome.headSeq, outcome.epoch);
          this.events.push({ type: "EpochChanged", room: outcome.room, headSeq: outcome.headSeq });
          break;
        }
        default:
          // NOT_A_MEMBER, or a status this version does not know.
          this.rooms.delete(outcome.room);
      }
      this.events.push({ type: "Resumed", resume: outcome });
    }
  }

  private onJoined(now: number, room: RoomInfo): void {
    const readState = this._welcome?.capabilities.includes("read-state") ?? false;
    if (readState && !this.reads.has(room.name)) {
      // a new member's marker is the head at joining.
      this.reads.set(
        room.name,
        RoomRead.fromWire({ readSeq: room.headSeq, countedSeq: room.headSeq, unreadCount: 0, mentionCount: 0 }),
      );
    }
    const track = this.rooms.get(room.name);
    if (track !== undefined && track.epoch === room.epoch) {
      // We held a position in this epoch: fetch what we missed.
      if (track.lastSeq < room.headSeq && track.gapFill === undefined) {
        this.startGapFill(now, room.name, track.lastSeq);
      }
      return;
    }
    this.rooms.set(room.name, new RoomTrack(room.headSeq, room.epoch));
  }

  /** One RoomList page (§7.1): ask for the next, or report them all. A
   * room seen twice (paging moved it) is reported once, where first seen. */
  private onRoomList(now: number, pending: Pending | undefined, list: RoomList): void {
    this.roomList.push(...list.rooms);
    const ours = pending?.kind.kind === "listRooms";
    if (ours && list.nextCursor !== "" && this.roomList.length < MAX_LISTED_ROOMS) {
      this.request(
        { case: "listRooms", value: { subscribe: false, cursor: list.nextCursor, limit: 0 } },
        { kind: "listRooms" },
        now,
      );
      return;
    }
    const seen = new Set<string>();
    const rooms = this.roomList.filter((r) => {
      if (seen.has(r.name)) return false;
      seen.add(r.name);
      return true;
    });
    this.roomList = [];
    this.events.push({ type: "RoomList", rooms });
  }
}
