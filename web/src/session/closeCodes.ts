// WebSocket close codes of confab.v1 and whether a client reconnects after them.
//
// Spec: §13.2 (close-code table) and §14.2. Port of `CloseCode` in
// crates/protocol/src/error.rs.

/** The close codes confab.v1 defines (§13.2). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  UnsupportedData: 1003,
  InvalidPayload: 1007,
  MessageTooBig: 1009,
  InternalError: 1011,
  TryAgainLater: 1013,
  MalformedFrame: 4400,
  Unauthenticated: 4401,
  AuthFailed: 4403,
  AuthTimeout: 4408,
  LoggedOut: 4410,
  SlowConsumer: 4429,
  IdleTimeout: 4504,
} as const;

/** One of the codes of §13.2. */
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

const KNOWN: ReadonlySet<number> = new Set(Object.values(CloseCode));

/** Whether confab.v1 defines `code`; others (1005, 1006, …) are transport failures. */
export function isCloseCode(code: number): code is CloseCode {
  return KNOWN.has(code);
}

/**
 * Whether a client reconnects and resumes after this close (§14.2). Auth
 * failures and logout need a new login first, and protocol violations
 * would repeat, so only transient causes qualify; 1013 too, because the
 * backoff spaces the attempts while the user's other sockets hold the cap.
 */
export function shouldReconnect(code: CloseCode): boolean {
  switch (code) {
    case CloseCode.GoingAway:
    case CloseCode.InternalError:
    case CloseCode.TryAgainLater:
    case CloseCode.SlowConsumer:
    case CloseCode.IdleTimeout:
    case CloseCode.AuthTimeout:
      return true;
    default:
      return false;
  }
}
