// What the screens show: plain values the model derives from the session's
// events. The screens render these and call the model's actions; they keep
// no protocol state.

import type { LineRelation, Reaction } from "./relations";

/** The connection as the app shows it. */
export type Connection =
  | { kind: "connecting" }
  | { kind: "online" }
  | { kind: "reconnecting"; atMs: number; attempt: number }
  | { kind: "offline"; reason: string };

/** A row of the rooms list. */
export interface RoomRow {
  name: string;
  topic: string;
  memberCount: number;
  onlineCount: number;
  lastActivityMs: number;
  joined: boolean;
  unread: number;
  mentions: number;
}

/** One line of a room's timeline. */
export interface Line {
  /** Stable key: the seq for stored messages, the client_msg_id for own sends. */
  key: string;
  seq?: number;
  sender: string;
  text: string;
  action: boolean;
  /** Server time of stored messages; the time typed for a pending one. */
  tsMs: number;
  status: "delivered" | "pending" | "failed";
  clientMsgId?: string;
  /** Why a failed send was refused. */
  error?: string;
  /** A presence notice ("bob joined"), not a message: shown after the
   * stored line `afterSeq`. */
  notice?: boolean;
  afterSeq?: number;
  /** The stored message's id, which edits, replies and reactions name. */
  messageId?: string;
  /** What the stored message does to an earlier one (§8.6). */
  relation?: LineRelation;
  /** Deleted, from the server (§8.6.3). */
  redacted?: boolean;
  // Set by `fold` (relations.ts) on the lines it shows:
  /** An edit replaced the text. */
  edited?: boolean;
  /** Deleted: shown without text. */
  deleted?: boolean;
  /** For a reply: what it answers. */
  replyTo?: { seq: number; quote: string };
  /** Reactions that count, by key. */
  reactions?: Reaction[];
}

/** A room's timeline as shown. */
export interface Timeline {
  lines: Line[];
  /** Older messages exist on the server. */
  hasMore: boolean;
  /** A page is being loaded. */
  loading: boolean;
  /** The read marker when the room was opened: unread lines come after it. */
  readSeqAtOpen?: number;
}
