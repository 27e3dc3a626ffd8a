// The outbox: sends the server has not acknowledged yet, and where it is kept.
//
// Spec: §8.5 (idempotency) and §14.1 (outbox and idempotent resend). Port of
// crates/protocol/src/session/outbox.rs. An entry keeps its client_msg_id
// for life, so a resend after a reconnect, or after the tab was closed and
// the outbox reloaded from IndexedDB, is the same message to the server.

import { type DBSchema, type IDBPDatabase, openDB } from "idb";

/** One unacknowledged send. Plain data, so it can be stored as it is. */
export interface OutboxEntry {
  /** Idempotency key, fixed when the user hit enter. */
  clientMsgId: string;
  /** Target room. */
  room: string;
  /** Text. */
  text: string;
  /** True for an action (`/me`). */
  action: boolean;
  /** For an edit, deletion, reply or reaction (§8.6): what it does to
   * which message (by message_id); resent with the entry. */
  relation?: OutboxRelation;
}

/** A relation as the outbox keeps it: plain data for IndexedDB. */
export type OutboxRelation =
  | { kind: "edit" | "redact" | "reply"; targetId: string }
  | { kind: "react"; targetId: string; key: string; remove: boolean };

interface Slot {
  entry: OutboxEntry;
  /** Request id of the copy on the current connection, if one was sent. */
  inFlight: number | undefined;
}

/** Unacknowledged sends, oldest first. Sends leave the outbox in order. */
export class Outbox {
  private slots: Slot[] = [];

  /** Appends an entry; false (and nothing added) if its id is already queued. */
  push(entry: OutboxEntry): boolean {
    if (this.contains(entry.clientMsgId)) return false;
    this.slots.push({ entry, inFlight: undefined });
    return true;
  }

  /** Whether an entry with this id is queued. */
  contains(clientMsgId: string): boolean {
    return this.slots.some((s) => s.entry.clientMsgId === clientMsgId);
  }

  /** The entry with this id. */
  get(clientMsgId: string): OutboxEntry | undefined {
    return this.slots.find((s) => s.entry.clientMsgId === clientMsgId)?.entry;
  }

  /** Removes and returns the entry with this id. */
  remove(clientMsgId: string): OutboxEntry | undefined {
    const idx = this.slots.findIndex((s) => s.entry.clientMsgId === clientMsgId);
    if (idx < 0) return undefined;
    return this.slots.splice(idx, 1)[0]?.entry;
  }

  /** The entry sent with `requestId` on the current connection. */
  byRequest(requestId: number): OutboxEntry | undefined {
    return this.slots.find((s) => s.inFlight === requestId)?.entry;
  }

  /** Number of entries on the wire. */
  inFlight(): number {
    return this.slots.filter((s) => s.inFlight !== undefined).length;
  }

  /** The oldest entry not yet sent on this connection, now marked sent with `requestId`. */
  nextUnsent(requestId: number): OutboxEntry | undefined {
    const slot = this.slots.find((s) => s.inFlight === undefined);
    if (slot === undefined) return undefined;
    slot.inFlight = requestId;
    return slot.entry;
  }

  /** Marks the copy sent with `requestId` as not on the wire (to send again). */
  unsend(requestId: number): void {
    for (const slot of this.slots) if (slot.inFlight === requestId) slot.inFlight = undefined;
  }

  /** Forgets every in-flight mark: the connection they were sent on is gone. */
  resetInFlight(): void {
    for (const slot of this.slots) slot.inFlight = undefined;
  }

  /** The entries, oldest first (copies: callers may keep or store them). */
  entries(): OutboxEntry[] {
    return this.slots.map((s) => ({ ...s.entry }));
  }

  /** Number of entries. */
  get length(): number {
    return this.slots.length;
  }

  /** Whether the outbox is empty. */
  isEmpty(): boolean {
    return this.slots.length === 0;
  }
}

/**
 * Where a driver keeps the outbox between runs. `save` replaces the whole
 * saved outbox: outboxes are short, and a whole-value write can never
 * leave half an update behind.
 */
export interface OutboxStore {
  load(): Promise<OutboxEntry[]>;
  save(entries: OutboxEntry[]): Promise<void>;
}

/** Keeps entries read from storage that have the shape of an entry: the
 * store may hold data of another version, or be edited by hand. */
function wellFormed(value: unknown): OutboxEntry[] {
  if (!Array.isArray(value)) return [];
  const out: OutboxEntry[] = [];
  for (const v of value as unknown[]) {
    if (typeof v !== "object" || v === null) continue;
    const e = v as Record<string, unknown>;
    if (typeof e.clientMsgId === "string" && typeof e.room === "string" && typeof e.text === "string") {
      out.push({ clientMsgId: e.clientMsgId, room: e.room, text: e.text, action: e.action === true });
    }
  }
  return out;
}

/** An in-memory store: for tests, and for a browser without IndexedDB. */
export class MemoryOutboxStore implements OutboxStore {
  private saved: OutboxEntry[] = [];
  /** How many times `save` was called. */
  saves = 0;

  constructor(initial: OutboxEntry[] = []) {
    this.saved = initial.map((e) => ({ ...e }));
  }

  async load(): Promise<OutboxEntry[]> {
    return this.saved.map((e) => ({ ...e }));
  }

  async save(entries: OutboxEntry[]): Promise<void> {
    this.saves++;
    this.saved = entries.map((e) => ({ ...e }));
  }
}

const STORE = "outbox";

interface OutboxDb extends DBSchema {
  outbox: {
    /** [server, account]: one outbox per account on each server. */
    key: [string, string];
    value: { entries: OutboxEntry[] };
  };
}

/** Options of {@link IndexedDbOutboxStore}. */
export interface IndexedDbOutboxStoreOptions {
  /** The username whose sends these are. */
  account: string;
  /** The server they go to, e.g. `location.origin`. */
  server: string;
  /** Database name; one database holds every account's outbox. */
  dbName?: string;
}

/**
 * The outbox in IndexedDB: one object store, one record per (server,
 * account), so the sends of one account never go out as another's, and
 * survive a reload or a closed tab.
 */
export class IndexedDbOutboxStore implements OutboxStore {
  private readonly key: [string, string];
  private readonly dbName: string;
  private db: Promise<IDBPDatabase<OutboxDb>> | undefined;

  constructor(options: IndexedDbOutboxStoreOptions) {
    this.key = [options.server, options.account];
    this.dbName = options.dbName ?? "confab";
  }

  private open(): Promise<IDBPDatabase<OutboxDb>> {
    this.db ??= openDB<OutboxDb>(this.dbName, 1, {
      upgrade(db) {
        db.createObjectStore(STORE);
      },
      // Another tab wants a newer schema: let it, rather than block it;
      // the next call here opens again.
      blocking: () => {
        void this.close();
      },
    });
    return this.db;
  }

  async load(): Promise<OutboxEntry[]> {
    const db = await this.open();
    const record = await db.get(STORE, this.key);
    return wellFormed(record?.entries);
  }

  async save(entries: OutboxEntry[]): Promise<void> {
    const db = await this.open();
    if (entries.length === 0) {
      // Nothing left to send: leave no empty record per account behind.
      await db.delete(STORE, this.key);
    } else {
      await db.put(STORE, { entries: entries.map((e) => ({ ...e })) }, this.key);
    }
  }

  /** Closes the database connection (it is opened again when needed). */
  async close(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    if (db !== undefined) (await db).close();
  }
}
