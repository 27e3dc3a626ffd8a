// The app's model: drives the session core (src/session) through its
// Driver and turns session events into the plain values the screens show
// (view.ts). Ordering, dedupe, gap filling, resends, pending and delivered
// are the session's; this only arranges what it reports.

import { batch, signal } from "@preact/signals";
import {
  type ClientSession as Session,
  ClientSession,
  type ConnectionState,
  Driver,
  IndexedDbOutboxStore,
  type OutboxEntry,
  type OutboxRelation,
  type ReadCounts,
  type SessionEvent,
  sessionConfig,
} from "../session";
import { MessageKind, type Message } from "../gen/confab/v1/messages_pb";
import { type Member, type RoomInfo, RoomListUpdate_Kind } from "../gen/confab/v1/rooms_pb";
import { Presence_Kind } from "../gen/confab/v1/ephemeral_pb";
import type { Login } from "./api";
import { HELP, parseCommand } from "./commands";
import type { LineRelation } from "./relations";
import type { Connection, Line, RoomRow, Timeline } from "./view";

const PAGE = 50;
const LAST_ROOM_KEY = "confab.lastRoom";
/** Typing is renewed at half the server's TTL (§11.2), 6 s by default. */
const TYPING_RENEW_MS = 3000;

const EMPTY: Timeline = { lines: [], hasMore: false, loading: false };

function connectionOf(state: ConnectionState): Connection {
  switch (state.kind) {
    case "online":
      return { kind: "online" };
    case "connecting":
    case "authenticating":
      return { kind: "connecting" };
    case "reconnecting":
      return { kind: "reconnecting", atMs: state.at, attempt: state.attempt };
    case "offline":
      switch (state.reason.kind) {
        case "closed":
          return { kind: "offline", reason: "closed" };
        case "authRejected":
          return { kind: "offline", reason: "the server no longer accepts this login; log in again" };
        case "loggedOut":
          return { kind: "offline", reason: "this login was logged out; log in again" };
        case "closedByServer":
          return {
            kind: "offline",
            reason: `the server closed the connection (code ${state.reason.code}) and asked not to reconnect; reload to try again`,
          };
      }
  }
}

function stored(message: Message): Line {
  return {
    key: `s${message.seq}`,
    seq: Number(message.seq),
    sender: message.sender,
    text: message.text,
    action: message.kind === MessageKind.ACTION,
    tsMs: Number(message.serverTsMs),
    status: "delivered",
    clientMsgId: message.clientMsgId || undefined,
    messageId: message.messageId,
    relation: lineRelation(message),
    redacted: message.redacted || undefined,
  };
}

/** What a stored message does to an earlier one (§8.6), as a line keeps it. */
function lineRelation(message: Message): LineRelation | undefined {
  const rel = message.relation;
  if (rel === undefined) return undefined;
  const targetSeq = Number(rel.targetSeq);
  switch (rel.kind.case) {
    case "edit":
      return { kind: "edit", targetSeq };
    case "redact":
      return { kind: "redact", targetSeq };
    case "reply":
      return { kind: "reply", targetSeq, quote: rel.kind.value.quote };
    case "react":
      return { kind: "react", targetSeq, key: rel.kind.value.key, remove: rel.kind.value.remove };
    default:
      return undefined;
  }
}

function own(entry: OutboxEntry, me: string, status: Line["status"], tsMs: number): Line {
  return {
    key: `c${entry.clientMsgId}`,
    sender: me,
    text: entry.text,
    action: entry.action,
    tsMs,
    status,
    clientMsgId: entry.clientMsgId,
  };
}

/** Where a line goes: stored lines by seq, a notice after the line it
 * followed, own sends not yet stored last (in the order typed). */
function place(line: Line): number {
  if (line.seq !== undefined) return line.seq;
  if (line.notice) return (line.afterSeq ?? 0) + 0.5;
  return Number.POSITIVE_INFINITY;
}

function arrange(lines: Line[]): Line[] {
  // Array.prototype.sort is stable: equal places keep their order.
  return [...lines].sort((a, b) => place(a) - place(b));
}

function memberNames(members: Member[]): string[] {
  return members.map((m) => (m.online ? `${m.username} (online)` : m.username));
}

export class ChatModel {
  readonly connection = signal<Connection>({ kind: "connecting" });
  readonly rooms = signal<RoomRow[]>([]);
  readonly current = signal<string | null>(null);
  readonly timelines = signal<Record<string, Timeline>>({});
  /** client_msg_id -> message_id of sends acknowledged but not yet
   * reported delivered (one event apart). */
  private readonly ackedIds = new Map<string, string>();
  readonly typing = signal<Record<string, string[]>>({});
  readonly members = signal<Record<string, string[] | null>>({});
  /** The last thing that went wrong, in words. */
  readonly notice = signal("");
  /** The token was refused or logged out: back to the login screen. */
  readonly loggedOut = signal(false);
  /** Unread messages in all joined rooms, counting the open one while the
   * tab is hidden: the tab's title shows it. */
  readonly unreadTotal = signal(0);

  private readonly me: string;
  private readonly driver: Driver;
  private readonly infos = new Map<string, RoomInfo>();
  private readonly joined = new Set<string>();
  private readonly reads = new Map<string, ReadCounts>();
  private readonly typingUntil = new Map<string, Map<string, number>>();
  private typingTimer: ReturnType<typeof setTimeout> | undefined;
  private myTyping: { room: string; atMs: number } | undefined;
  /** Rooms to open once joined. */
  private readonly opening = new Set<string>();
  private unsubscribe: (() => void) | undefined;
  private readonly memberLists = new Map<string, Member[]>();
  private notices = 0;
  /** The saved outbox is restored before anything new is queued. */
  private started: Promise<void> = Promise.resolve();

  constructor(login: Login) {
    this.me = login.username;
    const session = new ClientSession(sessionConfig(login.token, { clientName: "confab-web" }));
    this.driver = new Driver(session, {
      outboxStore: new IndexedDbOutboxStore({ server: location.origin, account: login.username }),
      onIssue: (issue) => {
        if (issue.kind === "outboxNotSaved") {
          this.notice.value = "unsent messages could not be saved in this browser; keep the tab open until they are delivered";
        }
      },
    });
  }

  start(): void {
    this.unsubscribe = this.driver.subscribe((event) => batch(() => this.onEvent(event)));
    this.started = this.driver.start();
    document.addEventListener("visibilitychange", this.onVisibility);
  }

  stop(): void {
    this.unsubscribe?.();
    this.driver.stop();
    clearTimeout(this.typingTimer);
    document.removeEventListener("visibilitychange", this.onVisibility);
  }

  /** A hidden tab reads nothing (§11.3: a marker says what was seen); once
   * shown again, the open room is read up to its newest stored line. */
  private readonly onVisibility = (): void => {
    batch(() => {
      const room = this.current.value;
      if (room && document.visibilityState === "visible") {
        const last = [...this.timeline(room).lines].reverse().find((l) => l.seq !== undefined && !l.notice);
        if (last) this.markRead(room, last.seq!);
      }
      this.refreshRooms();
    });
  };

  timeline(room: string): Timeline {
    return this.timelines.value[room] ?? EMPTY;
  }

  // ----- actions ------------------------------------------------------------

  open(room: string): void {
    this.notice.value = "";
    if (!this.joined.has(room)) {
      this.opening.add(room);
      this.run((s, now) => s.joinRoom(now, room));
      return;
    }
    this.show(room);
  }

  create(name: string, topic: string): void {
    this.notice.value = "";
    this.opening.add(name);
    this.run((s, now) => s.createRoom(now, name, topic));
  }

  leave(room: string): void {
    this.run((s, now) => s.leaveRoom(now, room));
  }

  /**
   * What the composer submitted: a message or a command. Returns whether the
   * draft was used; a refused one (an unknown /command) stays in the
   * composer with the reason in the notice, so nothing typed is lost.
   */
  submit(room: string, draft: string): boolean {
    const command = parseCommand(draft);
    if (command === null) return false;
    this.notice.value = "";
    switch (command.kind) {
      case "say":
        this.send(room, command.text, command.action);
        return true;
      case "join":
        this.open(command.room);
        return true;
      case "leave":
        this.leave(room);
        return true;
      case "members":
        if (!this.members.value[room]) this.toggleMembers(room);
        return true;
      case "help":
        this.notice.value = HELP;
        return true;
      case "error":
        this.notice.value = command.message;
        return false;
    }
  }

  /** The unsent draft of a room, kept in this browser across reloads. */
  draft(room: string): string {
    return localStorage.getItem(this.draftKey(room)) ?? "";
  }

  saveDraft(room: string, text: string): void {
    try {
      if (text) localStorage.setItem(this.draftKey(room), text);
      else localStorage.removeItem(this.draftKey(room));
    } catch {
      // Storage full or refused: the draft still lives in the composer.
    }
  }

  private draftKey(room: string): string {
    return `confab.draft.${this.me}.${room}`;
  }

  /** Joined rooms in the list's order, for moving between them by key. */
  joinedRooms(): string[] {
    return this.rooms.value.filter((r) => r.joined).map((r) => r.name);
  }

  /** Takes a failed send out of the timeline and gives back its text, for
   * the composer: the user edits it and sends it again. */
  discard(clientMsgId: string): string | undefined {
    const line = this.takeFailed(clientMsgId)?.line;
    if (!line) return undefined;
    return line.action ? `/me ${line.text}` : line.text.startsWith("/") ? `/${line.text}` : line.text;
  }

  /** Removes a failed line from its timeline and gives it back, with its room. */
  private takeFailed(clientMsgId: string): { room: string; line: Line } | undefined {
    for (const [room, t] of Object.entries(this.timelines.value)) {
      const line = t.lines.find((l) => l.clientMsgId === clientMsgId && l.status === "failed");
      if (!line) continue;
      this.update(room, (t) => ({ ...t, lines: t.lines.filter((l) => l !== line) }));
      return { room, line };
    }
    return undefined;
  }

  private send(room: string, text: string, action: boolean): void {
    const id = crypto.randomUUID();
    const entry: OutboxEntry = { clientMsgId: id, room, text, action };
    // Shown at once, marked pending until the session says it is stored.
    this.update(room, (t) => ({ ...t, lines: arrange([...t.lines, own(entry, this.me, "pending", Date.now())]) }));
    this.myTyping = undefined;
    // After the restored outbox, so sends leave in the order they were typed.
    void this.started.then(() => {
      try {
        this.driver.call((s, now) => s.sendMessage(now, room, text, action, id));
      } catch (error) {
        this.failed(entry, error instanceof Error ? error.message : String(error));
      }
    });
  }

  /** Edits (§8.6.2) the user's message `line` to `text`. */
  edit(room: string, line: Line, text: string): void {
    if (line.messageId) this.relate(room, { kind: "edit", targetId: line.messageId }, text);
  }

  /** Deletes (§8.6.3) the user's message `line` for everyone. */
  remove(room: string, line: Line): void {
    if (line.messageId) this.relate(room, { kind: "redact", targetId: line.messageId }, "");
  }

  /** Answers `line` with `text` (§8.6.4); the server adds the quote. */
  reply(room: string, line: Line, text: string): void {
    if (line.messageId) this.relate(room, { kind: "reply", targetId: line.messageId }, text);
  }

  /** Adds the user's reaction `key` to `line`, or takes it back when the
   * user has it already (§8.6.5). */
  react(room: string, line: Line, key: string): void {
    if (!line.messageId) return;
    const remove = line.reactions?.some((r) => r.key === key && r.mine) ?? false;
    this.relate(room, { kind: "react", targetId: line.messageId, key, remove }, "");
  }

  private relate(room: string, relation: OutboxRelation, text: string): void {
    const id = crypto.randomUUID();
    this.myTyping = undefined;
    void this.started.then(() => {
      try {
        this.driver.call((s, now) => s.sendRelation(now, room, relation, text, id));
      } catch (error) {
        const entry: OutboxEntry = { clientMsgId: id, room, text, action: false, relation };
        this.failed(entry, error instanceof Error ? error.message : String(error));
      }
    });
  }

  retry(clientMsgId: string): void {
    const taken = this.takeFailed(clientMsgId);
    if (taken) this.send(taken.room, taken.line.text, taken.line.action);
  }

  loadOlder(room: string): void {
    const t = this.timeline(room);
    const first = t.lines.find((l) => l.seq !== undefined);
    if (!first || t.loading || !t.hasMore) return;
    this.update(room, (t) => ({ ...t, loading: true }));
    this.run((s, now) => s.fetchHistory(now, room, { case: "beforeSeq", value: BigInt(first.seq!) }, PAGE));
  }

  setTyping(room: string, active: boolean): void {
    if (this.connection.value.kind !== "online") return;
    const now = Date.now();
    if (!active) {
      if (this.myTyping) this.run((s) => s.setTyping(this.myTyping!.room, false));
      this.myTyping = undefined;
      return;
    }
    if (this.myTyping && this.myTyping.room === room && now - this.myTyping.atMs < TYPING_RENEW_MS) return;
    this.myTyping = { room, atMs: now };
    this.run((s) => s.setTyping(room, true));
  }

  toggleMembers(room: string): void {
    if (this.members.value[room]) {
      this.members.value = { ...this.members.value, [room]: null };
      return;
    }
    this.run((s, now) => s.listMembers(now, room));
  }

  // ----- internals ----------------------------------------------------------

  /** Runs a command; one refused because the session is offline says so. */
  private run(fn: (session: Session, now: number) => unknown): void {
    try {
      this.driver.call(fn);
    } catch (error) {
      this.notice.value = error instanceof Error ? error.message : String(error);
    }
  }

  private show(room: string): void {
    this.current.value = room;
    localStorage.setItem(LAST_ROOM_KEY, room);
    const read = this.reads.get(room);
    this.update(room, (t) => ({
      ...t,
      loading: true,
      readSeqAtOpen: read && read.unread > 0 ? Number(read.readSeq) : undefined,
    }));
    this.run((s, now) => s.openView(now, room, PAGE));
    this.refreshRooms();
  }

  private update(room: string, fn: (t: Timeline) => Timeline): void {
    this.timelines.value = { ...this.timelines.value, [room]: fn(this.timeline(room)) };
  }

  private markRead(room: string, seq: number): void {
    if (this.current.value !== room || document.visibilityState !== "visible") return;
    this.run((s, now) => s.markRead(now, room, BigInt(seq)));
  }

  /** Gives the stored line `seq` of `room` its message_id, once known. */
  private identify(room: string, seq: number, messageId: string): boolean {
    const t = this.timelines.value[room];
    if (!t || !t.lines.some((l) => l.seq === seq)) return false;
    if (t.lines.some((l) => l.seq === seq && l.messageId === undefined)) {
      this.update(room, (t) => ({
        ...t,
        lines: t.lines.map((l) => (l.seq === seq && l.messageId === undefined ? { ...l, messageId } : l)),
      }));
    }
    return true;
  }

  private failed(entry: OutboxEntry, error: string): void {
    if (entry.relation) {
      // Nothing of it is on screen to mark: say it where the user looks.
      this.notice.value = `your ${entry.relation.kind} in #${entry.room} was refused: ${error}`;
      return;
    }
    this.update(entry.room, (t) => ({
      ...t,
      lines: t.lines.map((l) => (l.clientMsgId === entry.clientMsgId && l.seq === undefined ? { ...l, status: "failed", error } : l)),
    }));
    // A failure out of sight is said where the user is looking, or the
    // line would wait unnoticed in a room they are not in.
    if (this.current.value !== entry.room) {
      this.notice.value = `a message to #${entry.room} was not sent: ${error}; open #${entry.room} to retry or edit it`;
    }
  }

  private refreshRooms(): void {
    const rows: RoomRow[] = [...this.infos.values()].map((info) => {
      const read = this.reads.get(info.name);
      // The open room counts as read only while someone can see it.
      const current = this.current.value === info.name && document.visibilityState === "visible";
      return {
        name: info.name,
        topic: info.topic,
        memberCount: info.memberCount,
        onlineCount: info.onlineCount,
        lastActivityMs: Number(info.lastActivityMs),
        joined: this.joined.has(info.name),
        unread: current ? 0 : (read?.unread ?? 0),
        mentions: current ? 0 : (read?.mentions ?? 0),
      };
    });
    // The server's order (§7.1): most recent activity first, then by name.
    rows.sort((a, b) => b.lastActivityMs - a.lastActivityMs || a.name.localeCompare(b.name));
    this.rooms.value = rows;
    this.unreadTotal.value = rows.reduce((sum, row) => sum + (row.joined ? row.unread : 0), 0);
  }

  private refreshTyping(): void {
    const now = Date.now();
    const shown: Record<string, string[]> = {};
    let next: number | undefined;
    for (const [room, users] of this.typingUntil) {
      const names = [...users].filter(([, until]) => until > now).map(([name]) => name).sort();
      if (names.length) shown[room] = names;
      for (const until of users.values()) if (until > now) next = Math.min(next ?? until, until);
    }
    this.typing.value = shown;
    clearTimeout(this.typingTimer);
    if (next !== undefined) this.typingTimer = setTimeout(() => this.refreshTyping(), next - now);
  }

  private onEvent(event: SessionEvent): void {
    switch (event.type) {
      case "StateChanged": {
        this.connection.value = connectionOf(event.state);
        if (event.state.kind === "offline" && event.state.reason.kind !== "closed" && event.state.reason.kind !== "closedByServer") {
          this.loggedOut.value = true;
        }
        if (event.state.kind !== "online") {
          this.typingUntil.clear();
          this.refreshTyping();
        }
        return;
      }
      case "Welcome": {
        this.joined.clear();
        for (const room of event.welcome.rooms) {
          this.joined.add(room.name);
          this.infos.set(room.name, room);
        }
        this.refreshRooms();
        // The room-list subscription belongs to the connection (§7.1).
        this.run((s, now) => s.listRooms(now, true));
        const current = this.current.value;
        if (current && !this.joined.has(current)) this.current.value = null;
        const last = localStorage.getItem(LAST_ROOM_KEY);
        if (!this.current.value && last && this.joined.has(last)) this.show(last);
        return;
      }
      case "RoomList":
        for (const room of event.rooms) this.infos.set(room.name, room);
        this.refreshRooms();
        return;
      case "RoomListUpdate": {
        const room = event.update.room;
        if (!room) return;
        if (event.update.kind === RoomListUpdate_Kind.REMOVED) this.infos.delete(room.name);
        else this.infos.set(room.name, room);
        this.refreshRooms();
        return;
      }
      case "Joined":
        this.joined.add(event.room.name);
        this.infos.set(event.room.name, event.room);
        this.refreshRooms();
        if (this.opening.delete(event.room.name)) this.show(event.room.name);
        return;
      case "Left":
        this.joined.delete(event.room);
        if (this.current.value === event.room) this.current.value = null;
        this.refreshRooms();
        return;
      case "View": {
        const lines = event.messages.map(stored);
        this.update(event.room, (t) => ({
          ...t,
          // Own sends still waiting stay after what is stored.
          lines: arrange([...lines, ...t.lines.filter((l) => l.seq === undefined)]),
          hasMore: event.hasMore,
          loading: false,
        }));
        const last = lines[lines.length - 1];
        if (last) this.markRead(event.room, last.seq!);
        return;
      }
      case "History": {
        const room = event.page.room;
        const older = event.page.messages.map(stored);
        this.update(room, (t) => {
          const have = new Set(t.lines.map((l) => l.seq));
          return {
            ...t,
            lines: arrange([...older.filter((l) => !have.has(l.seq)), ...t.lines]),
            hasMore: event.page.hasMore,
            loading: false,
          };
        });
        return;
      }
      case "Message": {
        const { message } = event;
        const room = message.room;
        const users = this.typingUntil.get(room);
        if (users?.delete(message.sender)) this.refreshTyping();
        if (event.sentHere && !message.relation) {
          // Its Delivered placed it; only the marker moves past it, and
          // the line learns its id (edits and reactions name it).
          this.identify(room, Number(message.seq), message.messageId);
          this.markRead(room, Number(message.seq));
          return;
        }
        if (!this.timelines.value[room]) return;
        const line = stored(message);
        this.update(room, (t) =>
          t.lines.some((l) => l.seq === line.seq) ? t : { ...t, lines: arrange([...t.lines, line]) },
        );
        this.markRead(room, line.seq!);
        return;
      }
      case "Acked":
        // Before its Delivered: the line it makes takes the id from here.
        if (!this.identify(event.ack.room, Number(event.ack.seq), event.ack.messageId)) {
          // Bounded: an ack whose Delivered never comes (a repeat) is forgotten.
          if (this.ackedIds.size >= 256) this.ackedIds.delete(this.ackedIds.keys().next().value!);
          this.ackedIds.set(event.ack.clientMsgId, event.ack.messageId);
        }
        return;
      case "SendPending":
        // A relation shows in the line it names, once stored.
        if (event.entry.relation) return;
        this.update(event.entry.room, (t) =>
          t.lines.some((l) => l.clientMsgId === event.entry.clientMsgId)
            ? t
            : { ...t, lines: arrange([...t.lines, own(event.entry, this.me, "pending", Date.now())]) },
        );
        return;
      case "Delivered": {
        if (event.entry.relation) return;
        const seq = Number(event.seq);
        const messageId = this.ackedIds.get(event.entry.clientMsgId);
        this.ackedIds.delete(event.entry.clientMsgId);
        const line: Line = {
          ...own(event.entry, this.me, "delivered", Number(event.serverTsMs)),
          key: `s${seq}`,
          seq,
          messageId,
        };
        this.update(event.entry.room, (t) => ({
          ...t,
          lines: arrange([
            ...t.lines.filter((l) => l.clientMsgId !== event.entry.clientMsgId && l.seq !== seq),
            line,
          ]),
        }));
        return;
      }
      case "SendFailed":
        this.failed(event.entry, event.error.message);
        return;
      case "ReadState":
        this.reads.set(event.room, event.counts);
        this.refreshRooms();
        return;
      case "Members":
        this.memberLists.set(event.members.room, event.members.members);
        this.members.value = { ...this.members.value, [event.members.room]: memberNames(event.members.members) };
        return;
      case "Presence": {
        const { room, username, kind } = event.presence;
        if (username === this.me) return;
        // An open member list follows who is online and who is in.
        const list = this.memberLists.get(room);
        if (list && this.members.value[room]) {
          const rest = list.filter((m) => m.username !== username);
          const known = list.find((m) => m.username === username);
          const next =
            kind === Presence_Kind.LEFT
              ? rest
              : [...rest, { ...(known ?? { username, online: false }), online: kind !== Presence_Kind.OFFLINE } as Member];
          next.sort((a, b) => a.username.localeCompare(b.username));
          this.memberLists.set(room, next);
          this.members.value = { ...this.members.value, [room]: memberNames(next) };
        }
        // Joins and leaves are said in the room, as chat apps do.
        if ((kind === Presence_Kind.JOINED || kind === Presence_Kind.LEFT) && this.timelines.value[room]) {
          const lastSeq = [...this.timeline(room).lines].reverse().find((l) => l.seq !== undefined)?.seq ?? 0;
          this.notices += 1;
          const line: Line = {
            key: `p${this.notices}`,
            sender: "",
            text: kind === Presence_Kind.JOINED ? `${username} joined #${room}` : `${username} left #${room}`,
            action: false,
            tsMs: Date.now(),
            status: "delivered",
            notice: true,
            afterSeq: lastSeq,
          };
          this.update(room, (t) => ({ ...t, lines: arrange([...t.lines, line]) }));
        }
        return;
      }
      case "Typing": {
        const { typing } = event;
        if (typing.username === this.me) return;
        const users = this.typingUntil.get(typing.room) ?? new Map<string, number>();
        if (typing.active) users.set(typing.username, Date.now() + Math.max(typing.ttlMs, 1));
        else users.delete(typing.username);
        this.typingUntil.set(typing.room, users);
        this.refreshTyping();
        return;
      }
      case "RequestFailed":
        if (event.kind.kind === "history" || event.kind.kind === "view") {
          this.update(event.kind.room, (t) => ({ ...t, loading: false }));
        }
        this.notice.value = event.error.message;
        return;
      case "RequestTimedOut":
      case "RequestAborted":
        if (event.kind.kind === "history" || event.kind.kind === "view") {
          this.update(event.kind.room, (t) => ({ ...t, loading: false }));
        }
        return;
      case "ServerError":
        this.notice.value = event.error.message;
        return;
      default:
        return;
    }
  }
}
