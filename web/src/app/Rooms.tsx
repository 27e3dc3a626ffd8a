// The rooms list: every room with live member and online counts, unread and
// mention badges and last activity; a filter box; create a room.

import { useState } from "preact/hooks";
import { ago, badge } from "./format";
import { best, matching } from "./roomFilter";
import type { RoomRow } from "./view";

interface Props {
  rooms: RoomRow[];
  current: string | null;
  nowMs: number;
  onOpen: (room: string) => void;
  onCreate: (name: string, topic: string) => void;
}

export function Rooms({ rooms, current, nowMs, onOpen, onCreate }: Props) {
  const [filter, setFilter] = useState("");
  const [name, setName] = useState("");
  const shown = matching(rooms, filter);
  return (
    <nav class="rooms" aria-label="Rooms">
      <div class="rooms-head">
        <h2>Rooms</h2>
        <label class="visually-hidden" for="room-filter">
          Filter rooms
        </label>
        <input
          id="room-filter"
          type="search"
          placeholder="Filter rooms"
          value={filter}
          onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
          onKeyDown={(e) => {
            // Enter opens the best match: Ctrl+K, a few letters, Enter.
            const pick = e.key === "Enter" ? best(rooms, filter) : undefined;
            if (pick) {
              e.preventDefault();
              onOpen(pick.name);
            }
          }}
        />
      </div>
      <ul class="room-list">
        {shown.map((room) => (
          <li key={room.name}>
            <button
              type="button"
              class={`room${room.name === current ? " current" : ""}`}
              aria-current={room.name === current ? "page" : undefined}
              onClick={() => onOpen(room.name)}
            >
              <span class="room-name">#{room.name}</span>
              {room.unread > 0 && (
                <span
                  class={`badge${room.mentions > 0 ? " mention" : ""}`}
                  aria-label={`${room.unread} unread${room.mentions > 0 ? `, ${room.mentions} mentioning you` : ""}`}
                >
                  {badge(room.unread)}
                  {room.mentions > 0 ? ` @${badge(room.mentions)}` : ""}
                </span>
              )}
              <span class="room-meta">
                {room.memberCount} {room.memberCount === 1 ? "member" : "members"} · {room.onlineCount} online · {ago(room.lastActivityMs, nowMs)}
                {room.joined ? "" : " · not joined"}
              </span>
              {room.topic && <span class="room-topic">{room.topic}</span>}
            </button>
          </li>
        ))}
        {shown.length === 0 && <li class="empty">{rooms.length === 0 ? "No rooms yet: create one." : "No room matches."}</li>}
      </ul>
      <form
        class="create-room"
        onSubmit={(e) => {
          e.preventDefault();
          const trimmed = name.trim();
          if (trimmed) onCreate(trimmed, "");
          setName("");
        }}
      >
        <label for="new-room">New room</label>
        <input
          id="new-room"
          placeholder="name"
          autocapitalize="none"
          spellcheck={false}
          value={name}
          onInput={(e) => setName((e.target as HTMLInputElement).value)}
        />
        <button type="submit">Create</button>
      </form>
    </nav>
  );
}
