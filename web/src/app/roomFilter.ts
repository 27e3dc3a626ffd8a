// The rooms list's filter box: which rooms it shows, and which one Enter
// opens (Ctrl+K, a few letters, Enter), the way Slack's and Element's
// quick switchers pick.

import type { RoomRow } from "./view";

/** What is looked for: the filter without case, spaces around, or a
 * leading `#` (the room's sigil, not part of its name). */
function needleOf(filter: string): string {
  return filter.trim().toLowerCase().replace(/^#/, "");
}

/** Rooms whose name or topic holds the filter, in list order. */
export function matching(rooms: RoomRow[], filter: string): RoomRow[] {
  const needle = needleOf(filter);
  return rooms.filter((room) => `${room.name} ${room.topic}`.toLowerCase().includes(needle));
}

/**
 * The room Enter opens: the one named exactly so, else the first whose
 * name starts so, else the first whose name holds it, else the first shown
 * (a topic match).
 */
export function best(rooms: RoomRow[], filter: string): RoomRow | undefined {
  const shown = matching(rooms, filter);
  const needle = needleOf(filter);
  const name = (room: RoomRow) => room.name.toLowerCase();
  return (
    shown.find((room) => name(room) === needle) ??
    shown.find((room) => name(room).startsWith(needle)) ??
    shown.find((room) => name(room).includes(needle)) ??
    shown[0]
  );
}
