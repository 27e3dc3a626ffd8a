// The browser driver: all I/O of a ClientSession, and nothing else.
//
// Spec: §3.1-§3.3 (endpoint /v1/ws, subprotocol confab.v1, one binary
// message per frame), §12.1 (TransportStale drops the socket), §13.2 (close
// codes go to the session, which decides about reconnecting) and §14.1
// (the outbox is saved whenever it changes). Like the Rust bot driver
// (crates/bot-sdk/src/driver.rs), the driver:
//
// - opens a WebSocket whenever the session enters `connecting`, and closes
//   it (1000) when the session goes offline;
// - writes every pollTransmit output as one binary message, feeds every
//   binary message to handleBytes, and the close code to handleDisconnected;
// - arms one setTimeout at pollTimeout;
// - saves the outbox through an OutboxStore on OutboxChanged, and holds
//   outgoing frames until the save finished, so no frame of a new send
//   leaves before the store has it (a closed tab then loses nothing);
// - hands every session event, in order, to its listeners.
//
// The clock is read here only: Date.now(), so ConnectionState.reconnecting.at
// compares with the wall clock a screen shows.

import { ClientSession, DecodeError, type SessionEvent } from "./session";
import type { OutboxStore } from "./outbox";

/** The subprotocol of §3.2. */
export const SUBPROTOCOL = "confab.v1";

/** What the driver needs of a WebSocket; the browser's WebSocket is one. */
export interface WebSocketLike {
  binaryType: BinaryType;
  onopen: ((ev: Event) => void) | null;
  onmessage: ((ev: MessageEvent) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  onerror: ((ev: Event) => void) | null;
  send(data: Uint8Array<ArrayBuffer>): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: the global one, or a fake in tests. */
export type WebSocketConstructor = new (url: string, protocols: string | string[]) => WebSocketLike;

/** Something the driver could not hand to the session as an event. */
export type DriverIssue =
  /** Bytes from the server that were not a frame, or a text message. */
  | { kind: "invalidFrame"; message: string }
  /** The transport closed or failed; the session decides what follows. */
  | { kind: "disconnected"; closeCode: number | undefined; reason: string }
  /** Saving the outbox failed: the sends are still queued in memory. */
  | { kind: "outboxNotSaved"; error: unknown }
  /** Loading the saved outbox failed: earlier sends were not restored. */
  | { kind: "outboxNotLoaded"; error: unknown }
  /** A listener threw; the driver went on with the next one. */
  | { kind: "listenerFailed"; error: unknown };

/** Options of a Driver; all optional in a browser. */
export interface DriverOptions {
  /** The socket URL; default `wsUrl(location.origin)`. */
  url?: string;
  /** The WebSocket constructor; default the global WebSocket. */
  webSocket?: WebSocketConstructor;
  /** Where the outbox is kept between runs; none: in memory only. */
  outboxStore?: OutboxStore;
  /** The clock, in ms; default Date.now. */
  now?: () => number;
  /** Randomness for the backoff jitter, in [0, 1); default Math.random. */
  random?: () => number;
  /** Told about what is not a session event (see DriverIssue). */
  onIssue?: (issue: DriverIssue) => void;
}

/** The socket URL of a page origin: `https://host` → `wss://host/v1/ws` (§3.1). */
export function wsUrl(origin: string): string {
  const url = new URL("/v1/ws", origin);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

function defaultUrl(): string {
  if (typeof location === "undefined") throw new Error("no page location: pass DriverOptions.url");
  return wsUrl(location.origin);
}

/** Runs a ClientSession over a browser WebSocket. See the header comment. */
export class Driver {
  private readonly session: ClientSession;
  private readonly url: string;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly store: OutboxStore | undefined;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly onIssue: (issue: DriverIssue) => void;
  private readonly listeners = new Set<(event: SessionEvent) => void>();
  private ws: WebSocketLike | undefined;
  /** Whether `ws` reached open (a close before that is a failed connect). */
  private opened = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt: number | undefined;
  private started = false;
  private stopped = false;
  private pumping = false;
  private pumpAgain = false;
  private saving: Promise<void> | undefined;
  private saveAgain = false;
  private readonly onNetworkBack = (): void => {
    this.call((session) => session.reconnectNow());
  };
  /** The browser says the network is gone: a socket would only find out
   * at its next unanswered keepalive, so drop it now and show offline. */
  private readonly onNetworkGone = (): void => {
    this.drop("the browser reports the network is gone");
    this.pump();
  };

  constructor(session: ClientSession, options: DriverOptions = {}) {
    this.session = session;
    this.url = options.url ?? defaultUrl();
    this.WebSocketImpl = options.webSocket ?? WebSocket;
    this.store = options.outboxStore;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.onIssue = options.onIssue ?? (() => {});
  }

  /**
   * Restores the saved outbox into the session, then connects. Await it
   * before sending: a send queued earlier would go out before the restored ones.
   */
  async start(): Promise<void> {
    if (this.started || this.stopped) return;
    if (this.store !== undefined) {
      try {
        this.session.restoreOutbox(await this.store.load());
      } catch (error) {
        this.onIssue({ kind: "outboxNotLoaded", error });
      }
    }
    if (this.stopped) return;
    this.started = true;
    // The browser says when the network is back: skip the backoff wait.
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this.onNetworkBack);
      globalThis.addEventListener("offline", this.onNetworkGone);
    }
    this.pump();
  }

  /** Closes the session for good (the socket with 1000) and stops the timer. */
  stop(): void {
    this.stopped = true;
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this.onNetworkBack);
      globalThis.removeEventListener("offline", this.onNetworkGone);
    }
    this.session.close();
    this.pump();
    this.clearTimer();
  }

  /** Adds a listener of every session event, in order; returns its removal. */
  subscribe(listener: (event: SessionEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Runs a command on the session with the current time, then writes what
   * it queued and hands out its events. Returns (or throws) what `fn` does.
   */
  call<T>(fn: (session: ClientSession, now: number) => T): T {
    try {
      return fn(this.session, this.now());
    } finally {
      this.pump();
    }
  }

  /** Moves the session's output out, until there is none. Re-entrant calls
   * (a listener running a command) are folded into the running one, so
   * listeners see events strictly in order. */
  private pump(): void {
    if (!this.started) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        this.pumpOnce();
      } while (this.pumpAgain);
    } finally {
      this.pumping = false;
    }
  }

  private pumpOnce(): void {
    let outboxChanged = false;
    for (let event = this.session.pollEvent(); event !== undefined; event = this.session.pollEvent()) {
      if (event.type === "OutboxChanged") outboxChanged = true;
      for (const listener of this.listeners) {
        try {
          listener(event);
        } catch (error) {
          this.onIssue({ kind: "listenerFailed", error });
        }
      }
      if (event.type === "TransportStale") this.dropStale();
    }
    if (outboxChanged) this.save();
    this.flushTransmit();
    this.syncSocket();
    this.schedule();
  }

  /** Saves the outbox; one save at a time, the latest outbox winning. */
  private save(): void {
    const store = this.store;
    if (store === undefined) return;
    if (this.saving !== undefined) {
      this.saveAgain = true;
      return;
    }
    this.saving = store
      .save(this.session.outbox())
      .catch((error: unknown) => this.onIssue({ kind: "outboxNotSaved", error }))
      .finally(() => {
        this.saving = undefined;
        if (this.saveAgain) {
          this.saveAgain = false;
          this.save();
        }
        this.pump();
      });
  }

  private flushTransmit(): void {
    const ws = this.ws;
    // No open socket: the frames belong to a connection that is gone
    // (the session redoes what matters after the next Welcome).
    if (ws === undefined || !this.opened) {
      while (this.session.pollTransmit() !== undefined);
      return;
    }
    if (this.saving !== undefined) return;
    for (let bytes = this.session.pollTransmit(); bytes !== undefined; bytes = this.session.pollTransmit()) {
      ws.send(bytes);
    }
  }

  /** Opens a socket when the session wants one; closes it when the session stopped. */
  private syncSocket(): void {
    const state = this.session.state();
    if (state.kind === "offline") {
      const ws = this.ws;
      this.ws = undefined;
      if (ws !== undefined) ws.close(1000, "bye");
      return;
    }
    if (state.kind === "connecting" && this.ws === undefined) this.open();
  }

  private open(): void {
    let ws: WebSocketLike;
    try {
      ws = new this.WebSocketImpl(this.url, SUBPROTOCOL);
    } catch (error) {
      // A URL the browser refuses: a failed connect, backed off like any other.
      this.onIssue({ kind: "disconnected", closeCode: undefined, reason: String(error) });
      this.session.handleConnectFailed(this.now(), this.random);
      this.pumpAgain = true;
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.opened = true;
      this.session.handleConnected(this.now());
      this.pump();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.receive(ev.data);
      this.pump();
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      // 1005 (no status) and 1006 (no close frame) are not the server's words.
      const code = ev.code === 1005 || ev.code === 1006 ? undefined : ev.code;
      this.onIssue({ kind: "disconnected", closeCode: code, reason: ev.reason });
      if (this.opened) this.session.handleDisconnected(this.now(), code, this.random);
      else this.session.handleConnectFailed(this.now(), this.random);
      this.pump();
    };
    // An error is always followed by a close event, which does the work.
    ws.onerror = () => {};
  }

  private receive(data: unknown): void {
    let bytes: Uint8Array;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      this.onIssue({ kind: "invalidFrame", message: "text message received; confab.v1 uses binary messages only (§3.3)" });
      return;
    }
    try {
      this.session.handleBytes(this.now(), bytes);
    } catch (error) {
      if (!(error instanceof DecodeError)) throw error;
      this.onIssue({ kind: "invalidFrame", message: error.message });
    }
  }

  /** The keepalive went unanswered: drop the socket without waiting for its close. */
  private dropStale(): void {
    this.drop("no answer from the server; connection presumed dead");
  }

  /** Closes the socket and tells the session it is gone. */
  private drop(reason: string): void {
    const ws = this.ws;
    if (ws === undefined) return;
    this.ws = undefined;
    ws.close();
    this.onIssue({ kind: "disconnected", closeCode: undefined, reason });
    this.session.handleDisconnected(this.now(), undefined, this.random);
  }

  private schedule(): void {
    const at = this.session.pollTimeout();
    if (at === this.timerAt && this.timer !== undefined) return;
    this.clearTimer();
    if (at === undefined) return;
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = undefined;
      this.session.handleTimeout(this.now());
      this.pump();
    }, Math.max(0, at - this.now()));
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = undefined;
  }
}
