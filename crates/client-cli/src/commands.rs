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
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_text();
        for c in COMMANDS {
            assert!(help.contains(&format!("/{}", c.name)), "{}", c.name);
        }
    }
}
