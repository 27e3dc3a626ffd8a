//! The REPL's slash commands: one table that the parser, `/help`,
//! `confab --help` and tab completion all read.

/// What a completed argument names, for tab completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// No argument.
    None,
    /// Any room on the server.
    AnyRoom,
    /// A room the user has joined.
    JoinedRoom,
    /// Free text.
    Text,
}

/// One slash command.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Name without the slash.
    pub name: &'static str,
    /// Argument synopsis.
    pub args: &'static str,
    /// One-line description.
    pub about: &'static str,
    /// What its first argument is.
    pub arg: ArgKind,
}

/// Every slash command, in the order `/help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "join",
        args: "NAME",
        about: "join a room, show its recent history and make it current",
        arg: ArgKind::AnyRoom,
    },
    CommandSpec {
        name: "create",
        args: "NAME [TOPIC]",
        about: "create a room (you become its first member) and make it current",
        arg: ArgKind::Text,
    },
    CommandSpec {
        name: "switch",
        args: "NAME",
        about: "make another joined room current and show what it said recently",
        arg: ArgKind::JoinedRoom,
    },
    CommandSpec {
        name: "leave",
        args: "[NAME]",
        about: "leave the current room (or NAME)",
        arg: ArgKind::JoinedRoom,
    },
    CommandSpec {
        name: "who",
        args: "",
        about: "list the current room's members; * marks those online",
        arg: ArgKind::None,
    },
    CommandSpec {
        name: "history",
        args: "[N]",
        about: "show the current room's last N messages (default 20)",
        arg: ArgKind::Text,
    },
    CommandSpec {
        name: "me",
        args: "ACTION",
        about: "send an action, shown as '* you ACTION'",
        arg: ArgKind::Text,
    },
    CommandSpec {
        name: "edit",
        args: "[#N] TEXT",
        about: "replace the text of your message #N (default: your last one here)",
        arg: ArgKind::Text,
    },
    CommandSpec {
        name: "delete",
        args: "[#N]",
        about: "delete your message #N (default: your last one here) for everyone",
        arg: ArgKind::Text,
    },
    CommandSpec {
        name: "reply",
        args: "#N TEXT",
        about: "answer message #N, quoting it",
        arg: ArgKind::Text,
    },
    CommandSpec {
        name: "react",
        args: "[#N] EMOJI",
        about: "add EMOJI to message #N (default: the last one here), or take yours back",
        arg: ArgKind::Text,
    },
    CommandSpec {
        name: "rooms",
        args: "",
        about: "list every room: topic, members, online, unread, last activity",
        arg: ArgKind::None,
    },
    CommandSpec {
        name: "help",
        args: "",
        about: "show this list",
        arg: ArgKind::None,
    },
    CommandSpec {
        name: "reconnect",
        args: "",
        about: "try to connect now instead of waiting for the next retry",
        arg: ArgKind::None,
    },
    CommandSpec {
        name: "logout",
        args: "",
        about: "log out on the server, forget the saved token and exit",
        arg: ArgKind::None,
    },
    CommandSpec {
        name: "quit",
        args: "",
        about: "exit (unsent messages stay in the outbox for next time)",
        arg: ArgKind::None,
    },
];

/// Default page size of `/history` and of the history shown on `/join`.
pub const DEFAULT_HISTORY: u32 = 20;

/// A parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text for the current room. A leading `//` sends a literal `/`.
    Say(String),
    /// `/join NAME`.
    Join(String),
    /// `/create NAME [TOPIC]`.
    Create {
        /// Room name.
        name: String,
        /// Topic, possibly empty.
        topic: String,
    },
    /// `/switch NAME`.
    Switch(String),
    /// `/leave [NAME]`.
    Leave(Option<String>),
    /// `/who`.
    Who,
    /// `/history [N]`.
    History(u32),
    /// `/me ACTION`.
    Me(String),
    /// `/edit [#N] TEXT`: N is a seq of the current room.
    Edit {
        /// The message, or `None` for the user's last one.
        target: Option<u64>,
        /// The new text.
        text: String,
    },
    /// `/delete [#N]`.
    Delete(Option<u64>),
    /// `/reply #N TEXT`.
    Reply {
        /// The message answered.
        target: u64,
        /// The answer.
        text: String,
    },
    /// `/react [#N] EMOJI`: adds it, or removes the user's own.
    React {
        /// The message, or `None` for the room's last one.
        target: Option<u64>,
        /// The reaction.
        key: String,
    },
    /// `/rooms`.
    Rooms,
    /// `/help`.
    Help,
    /// `/reconnect`.
    Reconnect,
    /// `/logout`.
    Logout,
    /// `/quit`.
    Quit,
}

/// Parses one line; `Ok(None)` for a blank line. Errors are sentences for the user.
pub fn parse(line: &str) -> Result<Option<Input>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Some(Input::Say(line.to_owned())));
    };
    if rest.starts_with('/') {
        return Ok(Some(Input::Say(rest.to_owned())));
    }
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((name, args)) => (name, args.trim()),
        None => (rest, ""),
    };
    let one_word = |usage: &str| -> Result<String, String> {
        let mut words = args.split_whitespace();
        match (words.next(), words.next()) {
            (Some(word), None) => Ok(word.to_owned()),
            _ => Err(format!("usage: {usage}")),
        }
    };
    let no_args = |input: Input| {
        if args.is_empty() {
            Ok(input)
        } else {
            Err(format!("/{name} takes no arguments"))
        }
    };
    let input = match name {
        "join" | "j" => Input::Join(one_word("/join NAME")?),
        "create" => {
            let (room, topic) = match args.split_once(char::is_whitespace) {
                Some((room, topic)) => (room, topic.trim()),
                None => (args, ""),
            };
            if room.is_empty() {
                return Err("usage: /create NAME [TOPIC]".to_owned());
            }
            Input::Create {
                name: room.to_owned(),
                topic: topic.to_owned(),
            }
        }
        "switch" | "s" => Input::Switch(one_word("/switch NAME")?),
        "leave" | "part" => {
            if args.is_empty() {
                Input::Leave(None)
            } else {
                Input::Leave(Some(one_word("/leave [NAME]")?))
            }
        }
        "who" | "names" => no_args(Input::Who)?,
        "history" => {
            if args.is_empty() {
                Input::History(DEFAULT_HISTORY)
            } else {
                match args.parse::<u32>() {
                    Ok(n) if n > 0 => Input::History(n),
                    _ => return Err("usage: /history [N], N a positive number".to_owned()),
                }
            }
        }
        "me" => {
            if args.is_empty() {
                return Err("usage: /me ACTION".to_owned());
            }
            Input::Me(args.to_owned())
        }
        "edit" => {
            let (target, text) = message_number(args);
            if text.is_empty() {
                return Err("usage: /edit [#N] TEXT".to_owned());
            }
            Input::Edit {
                target,
                text: text.to_owned(),
            }
        }
        "delete" | "del" => match message_number(args) {
            (target, "") => Input::Delete(target),
            _ => return Err("usage: /delete [#N]".to_owned()),
        },
        "reply" | "re" => match message_number(args) {
            (Some(target), text) if !text.is_empty() => Input::Reply {
                target,
                text: text.to_owned(),
            },
            _ => return Err("usage: /reply #N TEXT (N: the number before a message)".to_owned()),
        },
        "react" => match message_number(args) {
            (target, key) if !key.is_empty() && !key.contains(char::is_whitespace) => {
                Input::React {
                    target,
                    key: key.to_owned(),
                }
            }
            _ => return Err("usage: /react [#N] EMOJI (one emoji or word)".to_owned()),
        },
        "rooms" | "list" => no_args(Input::Rooms)?,
        "help" | "?" => Input::Help,
        "logout" => no_args(Input::Logout)?,
        "reconnect" => no_args(Input::Reconnect)?,
        "quit" | "exit" | "q" => Input::Quit,
        other => {
            return Err(format!(
                "unknown command /{other}; /help lists the commands (start a message with // to send a literal /)"
            ));
        }
    };
    Ok(Some(input))
}

/// A leading message number (`#12` or `12`) and the rest of `args`.
fn message_number(args: &str) -> (Option<u64>, &str) {
    let (first, rest) = match args.split_once(char::is_whitespace) {
        Some((first, rest)) => (first, rest.trim()),
        None => (args, ""),
    };
    match first.strip_prefix('#').unwrap_or(first).parse::<u64>() {
        Ok(n) if n > 0 => (Some(n), rest),
        _ => (None, args),
    }
}

/// The command list as `/help` and `confab --help` print it.
pub fn help_text() -> String {
    let width = COMMANDS
        .iter()
        .map(|c| c.name.len() + c.args.len() + 2)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in COMMANDS {
        let synopsis = if c.args.is_empty() {
            format!("/{}", c.name)
        } else {
            format!("/{} {}", c.name, c.args)
        };
        out.push_str(&format!("  {synopsis:<width$}  {}\n", c.about));
    }
    out.push_str("  Anything else is sent to the current room; start with // to send a line beginning with /.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Option<Input> {
        parse(line).unwrap()
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(ok("hello there"), Some(Input::Say("hello there".into())));
        assert_eq!(ok("   "), None);
        assert_eq!(ok("//etc/passwd"), Some(Input::Say("/etc/passwd".into())));
        assert_eq!(ok("/join general"), Some(Input::Join("general".into())));
        assert_eq!(
            ok("/create ops  all things  ops"),
            Some(Input::Create {
                name: "ops".into(),
                topic: "all things  ops".into()
            })
        );
        assert_eq!(
            ok("/create ops"),
            Some(Input::Create {
                name: "ops".into(),
                topic: String::new()
            })
        );
        assert_eq!(ok("/switch ops"), Some(Input::Switch("ops".into())));
        assert_eq!(ok("/leave"), Some(Input::Leave(None)));
        assert_eq!(ok("/leave ops"), Some(Input::Leave(Some("ops".into()))));
        assert_eq!(ok("/who"), Some(Input::Who));
        assert_eq!(ok("/history"), Some(Input::History(DEFAULT_HISTORY)));
        assert_eq!(ok("/history 5"), Some(Input::History(5)));
        assert_eq!(ok("/me waves"), Some(Input::Me("waves".into())));
        assert_eq!(
            ok("/edit #12 fixed it"),
            Some(Input::Edit {
                target: Some(12),
                text: "fixed it".into()
            })
        );
        assert_eq!(
            ok("/edit fixed it"),
            Some(Input::Edit {
                target: None,
                text: "fixed it".into()
            })
        );
        assert_eq!(
            ok("/edit 2023 was a year"),
            Some(Input::Edit {
                target: Some(2023),
                text: "was a year".into()
            }),
            "a leading number is the message's"
        );
        assert_eq!(ok("/delete"), Some(Input::Delete(None)));
        assert_eq!(ok("/delete #3"), Some(Input::Delete(Some(3))));
        assert_eq!(
            ok("/reply #3 sure"),
            Some(Input::Reply {
                target: 3,
                text: "sure".into()
            })
        );
        assert_eq!(
            ok("/react 👍"),
            Some(Input::React {
                target: None,
                key: "👍".into()
            })
        );
        assert_eq!(
            ok("/react #4 🎉"),
            Some(Input::React {
                target: Some(4),
                key: "🎉".into()
            })
        );
        assert_eq!(ok("/rooms"), Some(Input::Rooms));
        assert_eq!(ok("/help"), Some(Input::Help));
        assert_eq!(ok("/logout"), Some(Input::Logout));
        assert_eq!(ok("/quit"), Some(Input::Quit));
    }

    #[test]
    fn bad_usage_says_how() {
        assert_eq!(parse("/join").unwrap_err(), "usage: /join NAME");
        assert_eq!(parse("/join a b").unwrap_err(), "usage: /join NAME");
        assert!(parse("/history x").unwrap_err().contains("positive"));
        assert!(parse("/me").unwrap_err().contains("/me ACTION"));
        assert!(parse("/frobnicate").unwrap_err().contains("/help"));
        assert!(parse("/who extra").unwrap_err().contains("no arguments"));
        assert!(parse("/edit").unwrap_err().contains("/edit [#N] TEXT"));
        assert!(parse("/edit #3").unwrap_err().contains("/edit [#N] TEXT"));
        assert!(parse("/delete me").unwrap_err().contains("/delete [#N]"));
        assert!(
            parse("/reply hello")
                .unwrap_err()
                .contains("/reply #N TEXT")
        );
        assert!(parse("/react #3").unwrap_err().contains("/react"));
        assert!(parse("/react #3 thumbs up").unwrap_err().contains("/react"));
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_text();
        for c in COMMANDS {
            assert!(help.contains(&format!("/{}", c.name)), "{}", c.name);
        }
    }
}
