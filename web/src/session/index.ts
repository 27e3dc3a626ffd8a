// The browser's session core: the sans-IO ClientSession (spec §6, §8-§11,
// §12.1, §13.2, §14), its outbox store and the WebSocket driver. Everything
// a front end needs is exported from here.

export { Backoff } from "./backoff";
export { CloseCode, isCloseCode, shouldReconnect } from "./closeCodes";
export {
  Driver,
  type DriverIssue,
  type DriverOptions,
  SUBPROTOCOL,
  type WebSocketConstructor,
  type WebSocketLike,
  wsUrl,
} from "./driver";
export {
  DEFAULT_MAX_TEXT_BYTES,
  MAX_CLIENT_MSG_ID_BYTES,
  MAX_ROOM_NAME_BYTES,
  MAX_TOPIC_BYTES,
  parseClientMsgId,
  parseMessageText,
  parseRoomName,
  parseTopic,
  parseUsername,
  ValidationError,
  type ValidationProblem,
} from "./names";
export {
  IndexedDbOutboxStore,
  type IndexedDbOutboxStoreOptions,
  MemoryOutboxStore,
  Outbox,
  type OutboxEntry,
  type OutboxRelation,
  type OutboxStore,
} from "./outbox";
export { COUNT_CAP, type Counted, countsFor, MAX_MENTIONS, markerAfter, mentions, type ReadCounts, RoomRead } from "./read";
export {
  CAPABILITIES,
  ClientSession,
  CommandError,
  type ConnectionState,
  DecodeError,
  DEFAULT_MAX_FRAME_BYTES,
  type HistoryAnchor,
  MAX_LISTED_ROOMS,
  MAX_SERVER_FRAME_BYTES,
  type OfflineReason,
  type RequestKind,
  type RoomPosition,
  type SessionConfig,
  sessionConfig,
  type SessionEvent,
} from "./session";
