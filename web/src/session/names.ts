// Validation of user-supplied strings before they become requests.
//
// Spec: §12.3 (name and text rules), §8.5 (client_msg_id). A port of
// crates/protocol/src/names.rs: the session checks values once, where they
// enter, so a bad room name or text fails at the call and never costs a
// round trip. Lengths are UTF-8 bytes, as on the wire, not UTF-16 units.

/** Longest username, in bytes. */
export const MAX_USERNAME_BYTES = 32;
/** Shortest username, in bytes. */
export const MIN_USERNAME_BYTES = 2;
/** Longest room name, in bytes. */
export const MAX_ROOM_NAME_BYTES = 32;
/** Longest room topic, in bytes. */
export const MAX_TOPIC_BYTES = 256;
/** Longest client message id, in bytes. */
export const MAX_CLIENT_MSG_ID_BYTES = 64;
/** Default longest message text, in bytes (§12.2), until Welcome says otherwise. */
export const DEFAULT_MAX_TEXT_BYTES = 4096;

const IDENT_RULE =
  "use lowercase ASCII letters, digits, '-' and '_', starting with a letter or digit";

/** Why a value was refused; the shape of Rust's `ValidationError`. */
export type ValidationProblem =
  | { kind: "empty" }
  | { kind: "tooLong"; len: number; max: number }
  | { kind: "tooShort"; len: number; min: number }
  | { kind: "invisible"; codePoint: number; at: number }
  | { kind: "badChar"; ch: string; at: number; rule: string };

function byteCount(n: number): string {
  return n === 1 ? "1 byte" : `${n} bytes`;
}

/** Rust's `{ch:?}` for a char, close enough for messages people read. */
function debugChar(ch: string): string {
  const special: Record<string, string> = { "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0" };
  const s = special[ch];
  if (s !== undefined) return `'${s}'`;
  const cp = ch.codePointAt(0) ?? 0;
  if (/[\p{Cc}\p{Cf}\p{Cs}]/u.test(ch)) return `'\\u{${cp.toString(16)}}'`;
  return `'${ch}'`;
}

function describe(field: string, p: ValidationProblem): string {
  switch (p.kind) {
    case "empty":
      return `${field} must not be empty`;
    case "tooLong":
      return `${field} is ${byteCount(p.len)} long; the limit is ${byteCount(p.max)}`;
    case "tooShort":
      return `${field} is ${byteCount(p.len)} long; it needs at least ${byteCount(p.min)}`;
    case "invisible":
      return (
        `${field} may not contain the invisible character U+${p.codePoint.toString(16).toUpperCase().padStart(4, "0")} ` +
        `(at byte ${p.at}); bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and zero-width ` +
        `characters (U+200B-U+200D, U+2060, U+FEFF) are not allowed: remove it`
      );
    case "badChar":
      return `${field} may not contain ${debugChar(p.ch)} (at byte ${p.at}); ${p.rule}`;
  }
}

/** A user-supplied value failed validation; `message` says which rule. */
export class ValidationError extends Error {
  readonly field: string;
  readonly problem: ValidationProblem;
  constructor(field: string, problem: ValidationProblem) {
    super(describe(field, problem));
    this.name = "ValidationError";
    this.field = field;
    this.problem = problem;
  }
}

/** UTF-8 length of one code point. */
function cpBytes(cp: number): number {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/** UTF-8 length of a string, as the server counts it. */
export function utf8Length(s: string): number {
  let n = 0;
  for (const ch of s) n += cpBytes(ch.codePointAt(0) ?? 0);
  return n;
}

/** Each code point with its UTF-8 byte offset, like Rust's `char_indices`. */
function* charIndices(s: string): Generator<[number, string]> {
  let at = 0;
  for (const ch of s) {
    yield [at, ch];
    at += cpBytes(ch.codePointAt(0) ?? 0);
  }
}

function checkLen(field: string, s: string, min: number, max: number): void {
  if (s.length === 0) throw new ValidationError(field, { kind: "empty" });
  const len = utf8Length(s);
  if (len > max) throw new ValidationError(field, { kind: "tooLong", len, max });
  if (len < min) throw new ValidationError(field, { kind: "tooShort", len, min });
}

function checkIdent(field: string, s: string, min: number, max: number): string {
  checkLen(field, s, min, max);
  for (const [at, ch] of charIndices(s)) {
    const ok = /^[a-z0-9]$/.test(ch) || (at > 0 && (ch === "-" || ch === "_"));
    if (!ok) throw new ValidationError(field, { kind: "badChar", ch, at, rule: IDENT_RULE });
  }
  return s;
}

/**
 * A lone surrogate cannot be encoded as UTF-8: the protobuf encoder would
 * replace it with U+FFFD, so the server would store other text than the
 * outbox holds. Rust strings cannot hold one; here it is refused.
 */
function checkWellFormed(field: string, s: string, rule: string): void {
  for (const [at, ch] of charIndices(s)) {
    if (/\p{Cs}/u.test(ch)) throw new ValidationError(field, { kind: "badChar", ch, at, rule });
  }
}

/** A username: 2-32 bytes of `[a-z0-9_-]`, starting with a letter or digit. */
export function parseUsername(s: string): string {
  return checkIdent("username", s, MIN_USERNAME_BYTES, MAX_USERNAME_BYTES);
}

/** Whether `s` is a valid username (the mention rule needs only yes or no). */
export function isUsername(s: string): boolean {
  try {
    parseUsername(s);
    return true;
  } catch {
    return false;
  }
}

/** A room name: 1-32 bytes of `[a-z0-9_-]`, starting with a letter or digit. */
export function parseRoomName(s: string): string {
  return checkIdent("room name", s, 1, MAX_ROOM_NAME_BYTES);
}

/** Whether `c` is a bidi control or a zero-width character (§12.3). */
export function isInvisibleFormat(cp: number): boolean {
  return (
    cp === 0x061c ||
    cp === 0x200e ||
    cp === 0x200f ||
    (cp >= 0x202a && cp <= 0x202e) ||
    (cp >= 0x2066 && cp <= 0x2069) ||
    (cp >= 0x200b && cp <= 0x200d) ||
    cp === 0x2060 ||
    cp === 0xfeff
  );
}

/** A topic: at most 256 bytes, one line, nothing invisible; empty is allowed. */
export function parseTopic(s: string): string {
  const len = utf8Length(s);
  if (len > MAX_TOPIC_BYTES) {
    throw new ValidationError("topic", { kind: "tooLong", len, max: MAX_TOPIC_BYTES });
  }
  const rule = "a topic is one line of text without control characters";
  for (const [at, ch] of charIndices(s)) {
    if (/\p{Cc}/u.test(ch)) throw new ValidationError("topic", { kind: "badChar", ch, at, rule });
  }
  checkWellFormed("topic", s, rule);
  // Bidi controls can make a topic display as other text than it holds
  // (Trojan Source); zero-width ones make equal-looking topics differ.
  for (const [at, ch] of charIndices(s)) {
    const cp = ch.codePointAt(0) ?? 0;
    if (isInvisibleFormat(cp)) {
      throw new ValidationError("topic", { kind: "invisible", codePoint: cp, at });
    }
  }
  return s;
}

/** A client message id: 1-64 bytes of printable ASCII, no spaces (§8.5). */
export function parseClientMsgId(s: string): string {
  checkLen("client_msg_id", s, 1, MAX_CLIENT_MSG_ID_BYTES);
  for (const [at, ch] of charIndices(s)) {
    if (!/^[\x21-\x7e]$/.test(ch)) {
      throw new ValidationError("client_msg_id", {
        kind: "badChar",
        ch,
        at,
        rule: "use printable ASCII without spaces, e.g. a UUID",
      });
    }
  }
  return s;
}

/**
 * Message text: not blank, within `maxBytes`, no control characters but
 * `\n` and `\t` (§12.3). Blank means Unicode White_Space only, as Rust's
 * `str::trim` (JS `trim` would also strip U+FEFF).
 */
export function parseMessageText(s: string, maxBytes: number): string {
  if (/^\p{White_Space}*$/u.test(s)) throw new ValidationError("text", { kind: "empty" });
  const len = utf8Length(s);
  if (len > maxBytes) throw new ValidationError("text", { kind: "tooLong", len, max: maxBytes });
  const rule = "control characters other than newline and tab are not allowed";
  for (const [at, ch] of charIndices(s)) {
    if (/\p{Cc}/u.test(ch) && ch !== "\n" && ch !== "\t") {
      throw new ValidationError("text", { kind: "badChar", ch, at, rule });
    }
  }
  checkWellFormed("text", s, "the text is not valid Unicode (a lone surrogate)");
  return s;
}

/** Longest reaction key, in bytes (§12.3). */
export const MAX_REACTION_KEY_BYTES = 32;

/**
 * A reaction key (§8.6.5, §12.3): 1-32 bytes, no whitespace, no control
 * characters, no bidi controls or zero-width characters but the joiner
 * U+200D that emoji need. Port of `ReactionKey::parse`.
 */
export function parseReactionKey(s: string): string {
  checkLen("reaction key", s, 1, MAX_REACTION_KEY_BYTES);
  const rule = "a reaction is one emoji or short word, without spaces or control characters";
  for (const [at, ch] of charIndices(s)) {
    if (/\p{Cc}|\p{White_Space}/u.test(ch)) throw new ValidationError("reaction key", { kind: "badChar", ch, at, rule });
    const cp = ch.codePointAt(0) ?? 0;
    if (cp !== 0x200d && isInvisibleFormat(cp)) {
      throw new ValidationError("reaction key", { kind: "invisible", codePoint: cp, at });
    }
  }
  return s;
}
