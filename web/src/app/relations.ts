// Relations folded into the lines they name (spec §8.6.6), for the chat
// view: the latest edit's text and "edited", a deleted message shown as
// deleted with its edits and reactions dropped, a reply's quote, and the
// reaction counts per key. The same rules as crates/protocol's timeline:
// each relation is compared by seq with what it replaces, so the order the
// lines arrived in does not matter. Pure: lines in, lines out.

import type { Line } from "./view";

/** What a stored message does to an earlier one (§8.6). */
export type LineRelation =
  | { kind: "edit"; targetSeq: number }
  | { kind: "redact"; targetSeq: number }
  | { kind: "reply"; targetSeq: number; quote: string }
  | { kind: "react"; targetSeq: number; key: string; remove: boolean };

/** A reaction as the view shows it. */
export interface Reaction {
  key: string;
  count: number;
  /** One of them is the viewer's. */
  mine: boolean;
}

/** Whether a line is a message of its own, not an edit, deletion or
 * reaction of another. */
export function showsAsLine(line: Line): boolean {
  return line.relation === undefined || line.relation.kind === "reply";
}

/** The lines to show: relations applied to their targets and left out. */
export function fold(lines: Line[], me: string): Line[] {
  const targets = new Map<number, Line>();
  const shown: Line[] = [];
  for (const line of lines) {
    if (!showsAsLine(line)) continue;
    const copy: Line = { ...line };
    if (copy.relation?.kind === "reply") copy.replyTo = { seq: copy.relation.targetSeq, quote: copy.relation.quote };
    if (copy.seq !== undefined) targets.set(copy.seq, copy);
    shown.push(copy);
  }
  const editSeq = new Map<number, number>();
  // target -> key -> user -> [seq, present]
  const reacts = new Map<number, Map<string, Map<string, [number, boolean]>>>();
  const deleted = new Set<number>();
  for (const line of lines) {
    const rel = line.relation;
    if (rel === undefined || line.seq === undefined) continue;
    const target = targets.get(rel.targetSeq);
    if (target === undefined) continue;
    switch (rel.kind) {
      case "edit":
        if (line.redacted || (editSeq.get(rel.targetSeq) ?? 0) > line.seq) break;
        editSeq.set(rel.targetSeq, line.seq);
        target.text = line.text;
        target.edited = true;
        break;
      case "redact":
        deleted.add(rel.targetSeq);
        break;
      case "react": {
        const keys = reacts.get(rel.targetSeq) ?? new Map<string, Map<string, [number, boolean]>>();
        reacts.set(rel.targetSeq, keys);
        const users = keys.get(rel.key) ?? new Map<string, [number, boolean]>();
        keys.set(rel.key, users);
        const before = users.get(line.sender);
        if (before === undefined || before[0] < line.seq) users.set(line.sender, [line.seq, !rel.remove]);
        break;
      }
      case "reply":
        break;
    }
  }
  for (const [seq, keys] of reacts) {
    const target = targets.get(seq)!;
    const reactions: Reaction[] = [];
    for (const [key, users] of [...keys].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const present = [...users].filter(([, [, on]]) => on);
      if (present.length > 0) reactions.push({ key, count: present.length, mine: present.some(([u]) => u === me) });
    }
    target.reactions = reactions;
  }
  for (const line of shown) {
    if (line.seq !== undefined && (deleted.has(line.seq) || line.redacted)) {
      line.deleted = true;
      line.text = "";
      line.edited = false;
      line.reactions = undefined;
    }
    // A reply to a deleted message quotes nothing.
    if (line.replyTo && deleted.has(line.replyTo.seq)) line.replyTo = { ...line.replyTo, quote: "" };
  }
  return shown;
}
