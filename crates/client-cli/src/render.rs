//! Turning protocol values into lines of text. Pure functions: the caller
//! passes the time of day and the current time, so tests need no clock.

use std::collections::BTreeMap;
use std::time::Instant;

use confab_protocol::session::{ConnectionState, OfflineReason};
use confab_protocol::timeline::Shown;
use confab_protocol::wire::{self, MessageKind};

use crate::style::Style;

/// The connection state as the status line shows it.
pub fn state_label(style: Style, state: &ConnectionState, now: Instant) -> String {
    match state {
        ConnectionState::Online => style.green("online"),
        ConnectionState::Connecting | ConnectionState::Authenticating => style.yellow("connecting"),
        ConnectionState::Reconnecting { at, attempt } => {
            let secs = at.saturating_duration_since(now).as_secs_f64().ceil() as u64;
            style.yellow(&format!("reconnect in {secs}s (attempt {})", attempt + 1))
        }
        ConnectionState::Offline(_) => style.red("offline"),
    }
}

/// The input row's prompt: the current room.
pub fn prompt(style: Style, room: Option<&str>) -> String {
    match room {
        Some(room) => format!("{}> ", style.cyan(&format!("#{room}"))),
        None => format!("{}> ", style.dim("(no room)")),
    }
}

/// A joined room with something unread, for the status line's activity list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Room.
    pub room: String,
    /// Unread messages.
    pub unread: u32,
    /// Unread mentions of the user.
    pub mentions: u32,
}

/// What the status line shows.
#[derive(Debug, Clone, Copy)]
pub struct Status<'a> {
    /// Connection state.
    pub state: &'a ConnectionState,
    /// The current room.
    pub room: Option<&'a str>,
    /// Other rooms with unread messages, the ones with mentions first.
    pub activity: &'a [Activity],
    /// Who is typing in the current room.
    pub typing: &'a [String],
}

/// The status line above the input row (irssi's status bar): connection
/// state, current room, the activity list (`ops 3`, a mention as `dev 5@1`,
/// highlighted) and who is typing. At most `width` columns wide, so it
/// always takes one row: whole parts are left off from the end, and rooms
/// that do not fit are counted (`+2`).
pub fn status_line(style: Style, status: &Status<'_>, now: Instant, width: usize) -> String {
    // (plain text for the width, styled text to show)
    let mut parts: Vec<(String, String)> = Vec::new();
    let state = state_label(Style::plain(), status.state, now);
    parts.push((
        format!("[{state}]"),
        format!("[{}]", state_label(style, status.state, now)),
    ));
    let room = status
        .room
        .map_or("(no room)".to_owned(), |r| format!("#{r}"));
    parts.push((format!("[{room}]"), format!("[{}]", style.cyan(&room))));
    let used = |parts: &[(String, String)]| -> usize {
        parts
            .iter()
            .map(|(plain, _)| plain.chars().count() + 1)
            .sum()
    };
    if !status.activity.is_empty() {
        // Room by room, as many as fit with room for a "+N" after them.
        let room_left = width.saturating_sub(used(&parts) + "[act: +99]".len());
        let mut plain = Vec::new();
        let mut styled = Vec::new();
        let mut taken = 0;
        for entry in status.activity {
            let text = if entry.mentions > 0 {
                format!(
                    "{} {}@{}",
                    entry.room,
                    count(entry.unread),
                    count(entry.mentions)
                )
            } else {
                format!("{} {}", entry.room, count(entry.unread))
            };
            if taken + text.chars().count() + 1 > room_left {
                break;
            }
            taken += text.chars().count() + 1;
            styled.push(if entry.mentions > 0 {
                style.bold(&style.red(&text))
            } else {
                text.clone()
            });
            plain.push(text);
        }
        let more = status.activity.len() - plain.len();
        if more > 0 {
            plain.push(format!("+{more}"));
            styled.push(format!("+{more}"));
        }
        parts.push((
            format!("[act: {}]", plain.join(" ")),
            format!("[act: {}]", styled.join(" ")),
        ));
    }
    if !status.typing.is_empty() {
        let text = match status.typing {
            [one] => format!("{one} is typing…"),
            [one, two] => format!("{one} and {two} are typing…"),
            many => format!("{} people are typing…", many.len()),
        };
        parts.push((text.clone(), style.dim(&text)));
    }
    let mut line = String::new();
    let mut taken = 0;
    for (plain, styled) in parts {
        let w = plain.chars().count() + usize::from(taken > 0);
        if taken + w > width {
            break;
        }
        if taken > 0 {
            line.push(' ');
        }
        line.push_str(&styled);
        taken += w;
    }
    line
}

/// Why the session stopped, said so the user knows what to do.
pub fn offline_sentence(reason: OfflineReason) -> String {
    match reason {
        OfflineReason::Closed => "disconnected".to_owned(),
        OfflineReason::AuthRejected(_) => {
            "the server no longer accepts your saved login; log in again".to_owned()
        }
        OfflineReason::LoggedOut => "this login was logged out; log in again".to_owned(),
        OfflineReason::ClosedByServer(code) => format!(
            "the server closed the connection (code {code}) and asked not to reconnect; restart confab to try again"
        ),
        _ => "offline".to_owned(),
    }
}

/// Whether a message is one of ours still waiting for its SendAck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Stored by the server.
    Delivered,
    /// In the outbox, not yet acknowledged.
    Pending,
}

/// One chat line: `12:04 #7 <alice> hello`, or `12:04 #8 * alice waves` for
/// an action, where `#7` is the message's seq, which `/edit`, `/delete`,
/// `/reply` and `/react` name it by (none for a send not stored yet).
/// Further lines of a multi-line text are indented under the first.
pub fn chat_line(
    style: Style,
    time: &str,
    seq: Option<u64>,
    sender: &str,
    text: &str,
    action: bool,
    mark: Mark,
) -> String {
    let time = match seq {
        Some(seq) => format!("{} {}", style.dim(time), style.dim(&format!("#{seq}"))),
        None => style.dim(time),
    };
    let head = if action {
        format!("{time} * {} ", style.nick(sender))
    } else {
        format!("{time} <{}> ", style.nick(sender))
    };
    let indent = " ".repeat(time.chars().count() + 1);
    let mut out = head;
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(&indent);
        }
        out.push_str(line);
    }
    if mark == Mark::Pending {
        out.push(' ');
        out.push_str(&style.yellow("(pending)"));
    }
    out
}

/// A stored message as a chat line.
pub fn message_line(style: Style, time: &str, message: &wire::Message) -> String {
    let action = message.kind == MessageKind::Action as i32;
    chat_line(
        style,
        time,
        Some(message.seq),
        &message.sender,
        &message.text,
        action,
        Mark::Delivered,
    )
}

/// A message as it stands, its relations applied (§8.6.6): the latest
/// text marked `(edited)`, `(deleted)` instead of a deleted one's text, a
/// reply's quote before its text, and the reactions after it
/// (`[👍 2 🎉 1]`, the user's own marked with `*`).
pub fn shown_line(style: Style, time: &str, shown: &Shown, me: &str) -> String {
    let action = shown.message.kind == MessageKind::Action as i32;
    let mut text = String::new();
    if let Some((to, quote)) = &shown.reply_to {
        let quoted = if quote.is_empty() {
            "(deleted)".to_owned()
        } else {
            format!("\"{}\"", excerpt(quote, 40))
        };
        text.push_str(&style.dim(&format!("[re #{to} {quoted}] ")));
    }
    if shown.deleted {
        text.push_str(&style.dim("(deleted)"));
    } else {
        text.push_str(&shown.text);
        if shown.edited {
            text.push(' ');
            text.push_str(&style.dim("(edited)"));
        }
    }
    let reactions = reactions_text(shown, me);
    if !reactions.is_empty() {
        text.push(' ');
        text.push_str(&style.dim(&format!("[{reactions}]")));
    }
    chat_line(
        style,
        time,
        Some(shown.seq()),
        &shown.message.sender,
        &text,
        action,
        Mark::Delivered,
    )
}

/// The reactions of a message: `👍 2 🎉*1` (`*`: one of them is `me`'s).
pub fn reactions_text(shown: &Shown, me: &str) -> String {
    shown
        .reactions(me)
        .iter()
        .map(|(key, n, mine)| format!("{key}{}{n}", if *mine { "*" } else { " " }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The update line that clears a pending mark.
/// A pending message was stored: said with the time the server stamped
/// it, which is where it sits in everyone's history.
pub fn delivered_line(style: Style, room: &str, text: &str, time: &str) -> String {
    format!(
        "{} {}",
        style.green("✓ delivered"),
        style.dim(&format!("#{room}: {} (stored {time})", excerpt(text, 40)))
    )
}

/// At most `max` characters of the first line of `text`, with an ellipsis when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() <= max && !text.contains('\n') {
        return first.to_owned();
    }
    let cut: String = first.chars().take(max).collect();
    format!("{cut}…")
}

/// A notice from the client itself.
pub fn notice(style: Style, text: &str) -> String {
    style.dim(&format!("-- {text}"))
}

/// Something went wrong; `text` says what to do.
pub fn error(style: Style, text: &str) -> String {
    style.red(&format!("!! {text}"))
}

/// How long ago `then_ms` was, compactly.
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "never".to_owned();
    }
    let secs = (now_ms - then_ms).max(0) / 1000;
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// What the rooms table knows about one room beyond its RoomInfo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomMark {
    /// The user is a member.
    pub joined: bool,
    /// Unread messages (§11.3); known only for joined rooms.
    pub unread: u32,
    /// Unread mentions of the user among them.
    pub mentions: u32,
    /// The current room.
    pub current: bool,
}

/// A count as shown: the protocol's cap (§11.3) as "9999+".
pub fn count(n: u32) -> String {
    if n >= confab_protocol::read::COUNT_CAP {
        format!("{}+", confab_protocol::read::COUNT_CAP)
    } else {
        n.to_string()
    }
}

/// The rooms table, most recently active first (the server's order, §7.1).
pub fn rooms_table(
    style: Style,
    rooms: &[wire::RoomInfo],
    marks: &BTreeMap<String, RoomMark>,
    now_ms: i64,
) -> String {
    if rooms.is_empty() {
        return notice(style, "no rooms yet; create one with /create NAME [TOPIC]");
    }
    let name_width = rooms
        .iter()
        .map(|r| r.name.len() + 1)
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = style.bold(&format!(
        "  {:<name_width$}  {:>7}  {:>6}  {:>10}  {:<13}  TOPIC",
        "ROOM", "MEMBERS", "ONLINE", "UNREAD", "LAST ACTIVITY"
    ));
    for room in rooms {
        let mark = marks.get(&room.name).copied().unwrap_or_default();
        let flag = if mark.current {
            ">"
        } else if mark.joined {
            "*"
        } else {
            " "
        };
        let unread = if mark.joined && mark.mentions > 0 {
            format!("{}@{}", count(mark.unread), count(mark.mentions))
        } else if mark.joined {
            count(mark.unread)
        } else {
            "-".to_owned()
        };
        let name = format!("#{}", room.name);
        out.push('\n');
        out.push_str(&format!(
            "{flag} {:<name_width$}  {:>7}  {:>6}  {:>10}  {:<13}  {}",
            name,
            room.member_count,
            room.online_count,
            unread,
            ago(now_ms, room.last_activity_ms),
            excerpt(&room.topic, 50),
        ));
    }
    out.push('\n');
    out.push_str(&style.dim(
        "  > current room, * joined; UNREAD 3@1: 3 unread, 1 mentioning you. /join NAME to enter one, /create NAME [TOPIC] to start one.",
    ));
    out
}

/// `/who`: the members, online ones marked.
pub fn members_line(style: Style, list: &wire::MemberList) -> String {
    let names: Vec<String> = list
        .members
        .iter()
        .map(|m| {
            if m.online {
                format!("{}*", style.nick(&m.username))
            } else {
                m.username.clone()
            }
        })
        .collect();
    format!(
        "members of #{} ({}; * online): {}",
        list.room,
        list.members.len(),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    const PLAIN: Style = Style::plain();

    #[test]
    fn the_status_line_shows_state_room_activity_and_typing_in_one_row() {
        let now = Instant::now();
        let activity = [
            Activity {
                room: "dev".into(),
                unread: 5,
                mentions: 1,
            },
            Activity {
                room: "ops".into(),
                unread: 12_000,
                mentions: 0,
            },
        ];
        let typing = ["bob".to_owned()];
        let status = Status {
            state: &ConnectionState::Online,
            room: Some("general"),
            activity: &activity,
            typing: &typing,
        };
        assert_eq!(
            status_line(PLAIN, &status, now, 80),
            "[online] [#general] [act: dev 5@1 ops 9999+] bob is typing…"
        );
        // Narrow: rooms that do not fit are counted, later parts left off.
        assert_eq!(
            status_line(PLAIN, &status, now, 40),
            "[online] [#general] [act: dev 5@1 +1]"
        );
        assert_eq!(status_line(PLAIN, &status, now, 12), "[online]");
        for width in 0..90 {
            assert!(status_line(PLAIN, &status, now, width).chars().count() <= width);
        }
        let retry = ConnectionState::Reconnecting {
            at: now + Duration::from_millis(2100),
            attempt: 3,
        };
        let typing = ["bob".to_owned(), "carol".to_owned()];
        let status = Status {
            state: &retry,
            room: None,
            activity: &[],
            typing: &typing,
        };
        assert_eq!(
            status_line(PLAIN, &status, now, 80),
            "[reconnect in 3s (attempt 4)] [(no room)] bob and carol are typing…"
        );
        assert_eq!(prompt(PLAIN, Some("general")), "#general> ");
    }

    #[test]
    fn chat_lines() {
        assert_eq!(
            chat_line(
                PLAIN,
                "12:04",
                Some(7),
                "alice",
                "hi",
                false,
                Mark::Delivered
            ),
            "12:04 #7 <alice> hi"
        );
        assert_eq!(
            chat_line(PLAIN, "12:04", None, "alice", "waves", true, Mark::Pending),
            "12:04 * alice waves (pending)"
        );
        assert_eq!(
            chat_line(
                PLAIN,
                "12:04",
                None,
                "bob",
                "one\ntwo",
                false,
                Mark::Delivered
            ),
            "12:04 <bob> one\n      two"
        );
        assert_eq!(
            delivered_line(PLAIN, "general", "hello", "12:04"),
            "✓ delivered #general: hello (stored 12:04)"
        );
    }

    #[test]
    fn excerpts_and_ages() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("a\nb", 10), "a…");
        assert_eq!(ago(100_000, 99_000), "just now");
        assert_eq!(ago(10 * 60_000, 0), "never");
        assert_eq!(ago(3_600_000 * 5, 3_600_000 * 2), "3h ago");
    }

    #[test]
    fn rooms_table_marks_joined_and_current() {
        let room = |name: &str, topic: &str| wire::RoomInfo {
            name: name.into(),
            topic: topic.into(),
            member_count: 3,
            online_count: 1,
            last_activity_ms: 1_000,
            head_seq: 7,
            epoch: "e".into(),
        };
        let mut marks = BTreeMap::new();
        marks.insert(
            "general".to_owned(),
            RoomMark {
                joined: true,
                unread: 2,
                mentions: 1,
                current: true,
            },
        );
        let table = rooms_table(
            PLAIN,
            &[room("general", "chat"), room("ops", "")],
            &marks,
            121_000,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("ROOM") && lines[0].contains("UNREAD"));
        assert_eq!(
            lines[1],
            "> #general        3       1         2@1  2m ago         chat"
        );
        assert!(lines[2].starts_with("  #ops "), "{}", lines[2]);
        assert!(lines[2].contains("          -  "), "{}", lines[2]);
    }
}
