// Name and text rules (spec §12.3, §8.5), as crates/protocol/src/names.rs
// has them; lengths count UTF-8 bytes.

import { expect, it } from "vitest";
import { parseClientMsgId, parseMessageText, parseRoomName, parseTopic, parseUsername, utf8Length, ValidationError } from "./names";

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ValidationError) return err.problem.kind;
    throw err;
  }
  return "ok";
}

it("identifiers: lowercase ASCII, digits, '-' and '_' after the first", () => {
  expect(parseRoomName("a")).toBe("a");
  expect(refusal(() => parseRoomName(""))).toBe("empty");
  expect(refusal(() => parseRoomName("-a"))).toBe("badChar");
  expect(refusal(() => parseRoomName("a".repeat(33)))).toBe("tooLong");
  expect(parseRoomName("a_b-1")).toBe("a_b-1");
  expect(refusal(() => parseUsername("a"))).toBe("tooShort");
  expect(refusal(() => parseUsername("Ab"))).toBe("badChar");
  expect(parseUsername("ab")).toBe("ab");
});

it("text: not blank, bytes within the limit, only \\n and \\t of the controls", () => {
  expect(parseMessageText("line\n\tindented", 100)).toBe("line\n\tindented");
  expect(refusal(() => parseMessageText(" \u3000\n", 100))).toBe("empty"); // ideographic space is White_Space
  expect(parseMessageText("\ufeff", 100)).toBe("\ufeff"); // U+FEFF is not White_Space (Rust's trim keeps it)
  expect(refusal(() => parseMessageText("bell\u0007", 100))).toBe("badChar");
  expect(refusal(() => parseMessageText("c1\u0085", 100))).toBe("badChar");
  expect(refusal(() => parseMessageText("lone \ud800", 100))).toBe("badChar");
  expect(parseMessageText("😀", 4)).toBe("😀");
  expect(refusal(() => parseMessageText("😀", 3))).toBe("tooLong");
  expect(utf8Length("aé€😀")).toBe(1 + 2 + 3 + 4);
});

it("topics: one line, nothing invisible, at most 256 bytes, empty allowed", () => {
  expect(parseTopic("")).toBe("");
  expect(refusal(() => parseTopic("é".repeat(129)))).toBe("tooLong");
  expect(refusal(() => parseTopic("zero\u200bwidth"))).toBe("invisible");
  expect(refusal(() => parseTopic("tab\there"))).toBe("badChar");
});

it("client_msg_id: 1-64 bytes of printable ASCII without spaces", () => {
  expect(parseClientMsgId("x".repeat(64))).toHaveLength(64);
  expect(refusal(() => parseClientMsgId("x".repeat(65)))).toBe("tooLong");
  expect(refusal(() => parseClientMsgId("é"))).toBe("badChar");
  expect(refusal(() => parseClientMsgId(""))).toBe("empty");
});
