//! Chat commands: `!roll 2d6`, typed arguments, generated `!help`.
//!
//! ```no_run
//! use confab_bot_sdk::{Commands, Dice};
//!
//! let commands = Commands::new("!")
//!     .command("roll", "roll dice", |cmd, (dice,): (Dice,)| async move {
//!         let (rolls, total) = dice.roll();
//!         cmd.reply(&format!("{rolls:?} = {total}")).await?;
//!         Ok(())
//!     })
//!     .command("add", "add two numbers", |cmd, (a, b): (i64, i64)| async move {
//!         cmd.reply(&format!("{}", a + b)).await?;
//!         Ok(())
//!     });
//! assert!(commands.help_text().contains("!roll <dice>"));
//! ```
//!
//! A message starting with the prefix is a command: its first word is the
//! name, the rest are arguments split on whitespace and parsed with
//! [`FromArg`]. Bad arguments get a usage reply such as
//! `usage: !roll <dice>, e.g. !roll 2d6`; `!help` lists every command.
//! Messages the bot sent itself are never treated as commands.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rand::Rng;

use crate::client::{Context, Handler};
use crate::error::{Error, HandlerError};
use crate::event::{Event, Message};

/// A value parsed from one command argument.
pub trait FromArg: Sized {
    /// Placeholder in usage lines, e.g. `dice` in `!roll <dice>`.
    const NAME: &'static str;
    /// An example value for usage lines, e.g. `2d6`.
    const EXAMPLE: &'static str;
    /// Whether this argument takes the rest of the line (only as the last one).
    const REST: bool = false;

    /// Parses one argument; the error says what is wrong with it.
    fn from_arg(arg: &str) -> Result<Self, String>;
}

macro_rules! from_arg_number {
    ($($t:ty => $name:literal, $example:literal;)*) => {$(
        impl FromArg for $t {
            const NAME: &'static str = $name;
            const EXAMPLE: &'static str = $example;
            fn from_arg(arg: &str) -> Result<Self, String> {
                arg.parse().map_err(|_| format!("{arg:?} is not a {}", $name))
            }
        }
    )*};
}

from_arg_number! {
    i64 => "number", "42";
    i32 => "number", "42";
    u64 => "count", "3";
    u32 => "count", "3";
    f64 => "number", "1.5";
}

impl FromArg for String {
    const NAME: &'static str = "word";
    const EXAMPLE: &'static str = "hello";
    fn from_arg(arg: &str) -> Result<Self, String> {
        Ok(arg.to_owned())
    }
}

/// The rest of the command line as one argument (e.g. `!say <text...>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rest(pub String);

impl FromArg for Rest {
    const NAME: &'static str = "text...";
    const EXAMPLE: &'static str = "hello there";
    const REST: bool = true;
    fn from_arg(arg: &str) -> Result<Self, String> {
        if arg.is_empty() {
            return Err("text is missing".to_owned());
        }
        Ok(Rest(arg.to_owned()))
    }
}

/// Dice notation `NdS`: N dice (1-100) of S sides (2-1000); `d6` means `1d6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dice {
    /// How many dice.
    pub count: u32,
    /// Sides per die.
    pub sides: u32,
}

impl Dice {
    /// Rolls: each die's value, and the total.
    pub fn roll(&self) -> (Vec<u32>, u64) {
        let mut rng = rand::rng();
        let rolls: Vec<u32> = (0..self.count)
            .map(|_| rng.random_range(1..=self.sides))
            .collect();
        let total = rolls.iter().map(|r| u64::from(*r)).sum();
        (rolls, total)
    }
}

impl FromStr for Dice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not dice; write NdS like 2d6 (1-100 dice of 2-1000 sides)");
        let (count, sides) = s
            .to_ascii_lowercase()
            .split_once('d')
            .ok_or_else(bad)
            .and_then(|(count, sides)| {
                let count = if count.is_empty() {
                    Ok(1)
                } else {
                    count.parse()
                };
                Ok((
                    count.map_err(|_| bad())?,
                    sides.parse::<u32>().map_err(|_| bad())?,
                ))
            })?;
        if !(1..=100).contains(&count) || !(2..=1000).contains(&sides) {
            return Err(bad());
        }
        Ok(Dice { count, sides })
    }
}

impl fmt::Display for Dice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}d{}", self.count, self.sides)
    }
}

impl FromArg for Dice {
    const NAME: &'static str = "dice";
    const EXAMPLE: &'static str = "2d6";
    fn from_arg(arg: &str) -> Result<Self, String> {
        arg.parse()
    }
}

/// A command's whole argument list: `()` and tuples of up to four [`FromArg`]s.
pub trait FromArgs: Sized {
    /// `(placeholder, example)` of each argument, in order.
    fn specs() -> Vec<(&'static str, &'static str)>;
    /// Parses the text after the command name.
    fn from_args(input: &str) -> Result<Self, String>;
}

impl FromArgs for () {
    fn specs() -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    fn from_args(input: &str) -> Result<Self, String> {
        if input.trim().is_empty() {
            Ok(())
        } else {
            Err("this command takes no arguments".to_owned())
        }
    }
}

/// Splits `input` into `n` arguments; the last takes the rest when `rest`.
fn split_args(input: &str, n: usize, rest: bool) -> Result<Vec<&str>, String> {
    let mut args = Vec::with_capacity(n);
    let mut remaining = input.trim();
    for i in 0..n {
        if i + 1 == n && rest {
            args.push(remaining);
            remaining = "";
            break;
        }
        let end = remaining
            .find(char::is_whitespace)
            .unwrap_or(remaining.len());
        let (arg, tail) = remaining.split_at(end);
        if arg.is_empty() {
            return Err(format!(
                "expected {n} argument{}",
                if n == 1 { "" } else { "s" }
            ));
        }
        args.push(arg);
        remaining = tail.trim_start();
    }
    if !remaining.is_empty() {
        return Err(format!("unexpected extra argument {remaining:?}"));
    }
    Ok(args)
}

macro_rules! from_args_tuple {
    ($n:literal; $($t:ident),+; $last:ident) => {
        impl<$($t: FromArg),+> FromArgs for ($($t,)+) {
            fn specs() -> Vec<(&'static str, &'static str)> {
                vec![$(($t::NAME, $t::EXAMPLE)),+]
            }
            fn from_args(input: &str) -> Result<Self, String> {
                let args = split_args(input, $n, $last::REST)?;
                let mut args = args.into_iter();
                Ok(($($t::from_arg(args.next().unwrap_or_default())?,)+))
            }
        }
    };
}

from_args_tuple!(1; A; A);
from_args_tuple!(2; A, B; B);
from_args_tuple!(3; A, B, C; C);
from_args_tuple!(4; A, B, C, D; D);

/// What a command handler gets: the message, and a way to answer it.
#[derive(Debug, Clone)]
pub struct CommandContext {
    ctx: Context,
    message: Message,
}

impl CommandContext {
    /// The message that held the command.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Who sent the command.
    pub fn sender(&self) -> &str {
        self.message.sender()
    }

    /// The bot's context (send elsewhere, join, stop).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Replies in the command's room; returns the reply's seq once stored.
    pub async fn reply(&self, text: &str) -> Result<u64, Error> {
        self.ctx.room(self.message.room()).send(text).await
    }
}

type RunCommand = dyn Fn(CommandContext, &str) -> Result<BoxFuture<'static, Result<(), HandlerError>>, String>
    + Send
    + Sync;

struct Spec {
    name: String,
    about: String,
    specs: Vec<(&'static str, &'static str)>,
    run: Arc<RunCommand>,
}

/// A set of commands; a [`Handler`] for [`Client::run`](crate::Client::run).
pub struct Commands {
    prefix: String,
    commands: Vec<Spec>,
    fallback: Option<Arc<dyn Handler>>,
}

impl fmt::Debug for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Commands")
            .field("prefix", &self.prefix)
            .field(
                "commands",
                &self.commands.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Commands {
    /// No commands yet but `help`; commands start with `prefix` (e.g. `!`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            commands: Vec::new(),
            fallback: None,
        }
    }

    /// Adds a command. `A` is the argument tuple, e.g. `(Dice,)` or `(i64, i64)`.
    pub fn command<A, F, Fut>(mut self, name: &str, about: &str, handler: F) -> Self
    where
        A: FromArgs + Send + 'static,
        F: Fn(CommandContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let run = move |cmd: CommandContext, input: &str| {
            let args = A::from_args(input)?;
            let future: BoxFuture<'static, Result<(), HandlerError>> = Box::pin(handler(cmd, args));
            Ok(future)
        };
        self.commands.retain(|c| c.name != name);
        self.commands.push(Spec {
            name: name.to_owned(),
            about: about.to_owned(),
            specs: A::specs(),
            run: Arc::new(run),
        });
        self
    }

    /// Also hands every event that is not a command to `handler`.
    pub fn on_event(mut self, handler: impl Handler) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// `!roll <dice>`.
    fn synopsis(&self, spec: &Spec) -> String {
        let mut line = format!("{}{}", self.prefix, spec.name);
        for (name, _) in &spec.specs {
            line.push_str(&format!(" <{name}>"));
        }
        line
    }

    /// The usage line of a command, e.g. `usage: !roll <dice>, e.g. !roll 2d6`.
    pub fn usage(&self, name: &str) -> Option<String> {
        let spec = self.commands.iter().find(|c| c.name == name)?;
        let mut usage = format!("usage: {}", self.synopsis(spec));
        if !spec.specs.is_empty() {
            let example: Vec<&str> = spec.specs.iter().map(|(_, e)| *e).collect();
            usage.push_str(&format!(
                ", e.g. {}{} {}",
                self.prefix,
                spec.name,
                example.join(" ")
            ));
        }
        Some(usage)
    }

    /// The `help` reply: one line per command, in the order they were added.
    pub fn help_text(&self) -> String {
        let mut text = String::from("commands:");
        for spec in &self.commands {
            text.push_str(&format!("\n{} - {}", self.synopsis(spec), spec.about));
        }
        text.push_str(&format!("\n{}help - list the commands", self.prefix));
        text
    }

    /// Parses `text` as a command: (name, rest of line).
    fn parse<'t>(&self, text: &'t str) -> Option<(&'t str, &'t str)> {
        let body = text.trim().strip_prefix(self.prefix.as_str())?;
        let end = body.find(char::is_whitespace).unwrap_or(body.len());
        let (name, rest) = body.split_at(end);
        (!name.is_empty()).then_some((name, rest))
    }

    /// What to do with a command message: the reply to send, or the handler
    /// to run. Split out so it can be tested without a server.
    fn dispatch(&self, cmd: CommandContext) -> Dispatch {
        let Some((name, input)) = self.parse(cmd.message.text()) else {
            return Dispatch::NotACommand(cmd);
        };
        if name == "help" && !self.commands.iter().any(|c| c.name == "help") {
            return Dispatch::Reply(cmd, self.help_text());
        }
        let Some(spec) = self.commands.iter().find(|c| c.name == name) else {
            let reply = format!(
                "unknown command {}{name}; try {}help",
                self.prefix, self.prefix
            );
            return Dispatch::Reply(cmd, reply);
        };
        match (spec.run)(cmd.clone(), input) {
            Ok(future) => Dispatch::Run(future),
            Err(why) => {
                let usage = self.usage(name).unwrap_or_default();
                Dispatch::Reply(cmd, format!("{usage} ({why})"))
            }
        }
    }
}

enum Dispatch {
    NotACommand(CommandContext),
    Reply(CommandContext, String),
    Run(BoxFuture<'static, Result<(), HandlerError>>),
}

impl Handler for Commands {
    fn handle(&self, ctx: Context, event: Event) -> BoxFuture<'static, Result<(), HandlerError>> {
        let message = match event {
            // Never answer ourselves: a reply that looks like a command
            // would otherwise loop.
            Event::Message(message) if !message.from_self() => message,
            other => return self.fall_through(ctx, other),
        };
        match self.dispatch(CommandContext { ctx, message }) {
            Dispatch::NotACommand(cmd) => self.fall_through(cmd.ctx, Event::Message(cmd.message)),
            Dispatch::Reply(cmd, text) => Box::pin(async move {
                cmd.reply(&text).await?;
                Ok(())
            }),
            Dispatch::Run(future) => future,
        }
    }
}

impl Commands {
    fn fall_through(
        &self,
        ctx: Context,
        event: Event,
    ) -> BoxFuture<'static, Result<(), HandlerError>> {
        match &self.fallback {
            Some(handler) => handler.handle(ctx, event),
            None => Box::pin(async { Ok(()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice() {
        assert_eq!("2d6".parse::<Dice>(), Ok(Dice { count: 2, sides: 6 }));
        assert_eq!(
            "d20".parse::<Dice>(),
            Ok(Dice {
                count: 1,
                sides: 20
            })
        );
        assert_eq!("3D8".parse::<Dice>(), Ok(Dice { count: 3, sides: 8 }));
        for bad in ["", "2", "2d", "0d6", "2d1", "101d6", "2d6d6", "xd6", "-1d6"] {
            assert!(bad.parse::<Dice>().is_err(), "{bad}");
        }
        let (rolls, total) = Dice { count: 3, sides: 6 }.roll();
        assert_eq!(rolls.len(), 3);
        assert!(rolls.iter().all(|r| (1..=6).contains(r)));
        assert_eq!(total, rolls.iter().map(|r| u64::from(*r)).sum::<u64>());
    }

    #[test]
    fn argument_lists() {
        assert_eq!(<(i64, i64)>::from_args(" 1   -2 "), Ok((1, -2)));
        assert!(<(i64, i64)>::from_args("1").is_err());
        assert!(<(i64, i64)>::from_args("1 2 3").is_err());
        assert!(
            <(i64,)>::from_args("x")
                .unwrap_err()
                .contains("not a number")
        );
        assert_eq!(
            <(String, Rest)>::from_args("bob hello  there"),
            Ok(("bob".to_owned(), Rest("hello  there".to_owned())))
        );
        assert!(<(Rest,)>::from_args("  ").is_err());
        assert_eq!(<()>::from_args(""), Ok(()));
        assert!(<()>::from_args("x").is_err());
    }

    fn sample() -> Commands {
        Commands::new("!")
            .command("roll", "roll dice", |_cmd, (_dice,): (Dice,)| async {
                Ok(())
            })
            .command("time", "the current time", |_cmd, (): ()| async { Ok(()) })
    }

    #[test]
    fn usage_and_help() {
        let commands = sample();
        assert_eq!(
            commands.usage("roll").as_deref(),
            Some("usage: !roll <dice>, e.g. !roll 2d6")
        );
        assert_eq!(commands.usage("time").as_deref(), Some("usage: !time"));
        assert_eq!(
            commands.help_text(),
            "commands:\n!roll <dice> - roll dice\n!time - the current time\n!help - list the commands"
        );
        assert_eq!(commands.parse("!roll 2d6"), Some(("roll", " 2d6")));
        assert_eq!(commands.parse("  !time"), Some(("time", "")));
        assert_eq!(commands.parse("roll 2d6"), None);
        assert_eq!(commands.parse("!"), None);
    }
}
