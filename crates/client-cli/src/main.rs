//! `confab`: the Confab terminal client.
//!
//! Without a subcommand it is an IRC-style chat: a login screen when no
//! token is saved, then a room list, a chat view with slash commands, and
//! an outbox on disk so nothing typed offline is lost. `send` and `tail`
//! serve scripts. The protocol itself (ordering, dedupe, resume, outbox,
//! backoff) is the session's in `confab-protocol`, and the connection is the
//! bot SDK's driver; this crate is the user interface around them.
//!
//! Layout:
//! - `main`: the command line.
//! - `login`: the login screen. `store`: the saved token and outbox files.
//! - `interactive`: the chat loop. `chat`: what the chat shows (no I/O).
//! - `editor`: rustyline on its own thread, prompt, completion, printer.
//! - `commands`: the slash commands. `render`, `style`: text and colour.
//! - `script`: `send` and `tail`.

mod chat;
mod commands;
mod editor;
mod interactive;
mod login;
mod render;
mod script;
mod store;
mod style;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use confab_bot_sdk::{ServerUrl, http};

use crate::interactive::{ChatEnd, ChatOptions};
use crate::login::LoginError;
use crate::script::TailFormat;
use crate::store::{SavedLogin, Store};
use crate::style::Style;

/// Confab terminal client: chat like IRC, calm when the network is not.
#[derive(Debug, Parser)]
#[command(name = "confab", version)]
struct Cli {
    /// Server base URL, e.g. http://127.0.0.1:7420 (asked for at login when
    /// not given and no login is saved).
    #[arg(long, global = true, env = "CONFAB_SERVER", value_name = "URL")]
    server: Option<String>,

    /// Largest reconnect delay in milliseconds (default 30000); for tests.
    #[arg(long, global = true, hide = true, env = "CONFAB_RECONNECT_CAP_MS")]
    reconnect_cap_ms: Option<u64>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in (offering to register a new account) and save the token.
    Login,
    /// Revoke the saved token on the server and delete it.
    Logout,
    /// Print the saved token (and nothing else), for scripts:
    /// `CONFAB_TOKEN=$(confab token) confab send ...`.
    Token,
    /// Send one message and exit once the server has stored it.
    Send(SendArgs),
    /// Print a room's recent messages, then new ones as they arrive.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Bearer token to use instead of the saved login.
    #[arg(long, env = "CONFAB_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Seconds to keep trying to connect before giving up.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Room to send to (joined first if needed).
    #[arg(long, short)]
    room: String,

    /// Send as an action, like /me.
    #[arg(long)]
    me: bool,

    #[command(flatten)]
    auth: TokenArgs,

    /// The message; read from stdin when absent.
    text: Vec<String>,
}

#[derive(Debug, Args)]
struct TailArgs {
    /// Room to follow (joined first if needed).
    #[arg(long, short)]
    room: String,

    /// Print each message as one line of JSON (the proto3 JSON mapping of Message).
    #[arg(long)]
    json: bool,

    /// How many earlier messages to print first.
    #[arg(long, short = 'n', default_value_t = 10, value_name = "N")]
    history: u32,

    #[command(flatten)]
    auth: TokenArgs,
}

fn long_help() -> String {
    format!(
        "Chat commands (type them inside confab):\n{}\n\
         Environment:\n  \
         CONFAB_SERVER      server URL (same as --server)\n  \
         CONFAB_TOKEN       token for send and tail (same as --token)\n  \
         CONFAB_CONFIG_DIR  where the saved login and the outbox live\n  \
         NO_COLOR           set to turn colour off (colour is only used on a terminal)\n\n\
         Examples:\n  \
         confab --server http://127.0.0.1:7420\n  \
         confab send --room general 'deploy finished'\n  \
         confab tail --room general --json | jq -r .text",
        commands::help_text()
    )
}

fn main() -> ExitCode {
    let matches = Cli::command()
        .about("Confab terminal client: chat like IRC, calm when the network is not.")
        .long_about(
            "Confab terminal client.\n\n\
             Without a command, confab logs in (or uses the saved token) and opens the chat: \
             the room list, then rooms you /join, with history, live messages, typing and \
             presence. Messages typed while offline wait in an outbox on disk and are \
             delivered, once, when the connection is back.",
        )
        .after_long_help(long_help())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the async runtime: {err}")),
    };
    let result = run(cli, &runtime);
    // Don't wait for stray tasks (a connection attempt in progress).
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{}", render::error(Style::detect_stderr(), message));
    ExitCode::FAILURE
}

fn run(cli: Cli, runtime: &tokio::runtime::Runtime) -> Result<ExitCode, String> {
    let store = Store::locate().map_err(|e| e.to_string())?;
    let style = Style::detect();
    let reconnect_cap = cli.reconnect_cap_ms.map(Duration::from_millis);
    let server_arg = cli.server.as_deref().map(login::parse_server).transpose()?;
    match cli.command {
        None => chat(runtime, &store, style, server_arg, reconnect_cap),
        Some(Command::Login) => {
            let saved = store.load_login().map_err(|e| e.to_string())?;
            let server = server_arg.or_else(|| saved_server(saved.as_ref()));
            let username = saved.map(|s| s.username);
            match login::login_screen(runtime.handle(), &store, style, server, username) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(err) => login_failed(err),
            }
        }
        Some(Command::Token) => match store.load_login().map_err(|e| e.to_string())? {
            Some(saved) => {
                println!("{}", saved.token);
                Ok(ExitCode::SUCCESS)
            }
            None => Err("not logged in: run `confab login` first, then `confab token`".to_owned()),
        },
        Some(Command::Logout) => {
            let Some(saved) = store.load_login().map_err(|e| e.to_string())? else {
                println!("not logged in; nothing to do");
                return Ok(ExitCode::SUCCESS);
            };
            let server = login::parse_server(&saved.server)?;
            match runtime.block_on(http::logout(&server, &saved.token)) {
                Ok(()) | Err(http::Error::Unauthorized { .. }) => {
                    store.delete_login().map_err(|e| e.to_string())?;
                    println!(
                        "logged out of {server} as {}; the saved token is deleted",
                        saved.username
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => Err(format!(
                    "could not log out ({err}); the token still works and stays saved; try again"
                )),
            }
        }
        Some(Command::Send(args)) => {
            let (server, token) = script_auth(&store, server_arg, &args.auth)?;
            let text = if args.text.is_empty() {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| format!("cannot read the message from stdin: {e}"))?;
                text.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                args.text.join(" ")
            };
            runtime
                .block_on(script::send(
                    &server,
                    &token,
                    &args.room,
                    &text,
                    args.me,
                    Duration::from_secs(args.auth.timeout),
                    reconnect_cap,
                ))
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Tail(args)) => {
            let (server, token) = script_auth(&store, server_arg, &args.auth)?;
            let format = if args.json {
                TailFormat::Json
            } else {
                TailFormat::Text(style)
            };
            runtime
                .block_on(script::tail(
                    &server,
                    &token,
                    &args.room,
                    args.history,
                    format,
                    Duration::from_secs(args.auth.timeout),
                    reconnect_cap,
                ))
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn saved_server(saved: Option<&SavedLogin>) -> Option<ServerUrl> {
    saved.and_then(|s| login::parse_server(&s.server).ok())
}

fn login_failed(err: LoginError) -> Result<ExitCode, String> {
    match err {
        LoginError::Cancelled => {
            println!();
            Ok(ExitCode::from(130))
        }
        err => Err(err.to_string()),
    }
}

/// The interactive chat: log in when needed, chat, log in again when the
/// saved token stops working.
fn chat(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    style: Style,
    server_arg: Option<ServerUrl>,
    reconnect_cap: Option<Duration>,
) -> Result<ExitCode, String> {
    let saved = store.load_login().map_err(|e| e.to_string())?;
    let usable = saved.filter(|s| {
        let server = login::parse_server(&s.server).ok();
        server.is_some() && (server_arg.is_none() || server == server_arg)
    });
    let (mut server, mut login) = match usable {
        Some(saved) => (login::parse_server(&saved.server)?, saved),
        None => match login::login_screen(runtime.handle(), store, style, server_arg, None) {
            Ok(done) => done,
            Err(err) => return login_failed(err),
        },
    };
    let options = ChatOptions {
        style,
        reconnect_cap,
    };
    loop {
        let end = runtime
            .block_on(interactive::run(&server, &login, store, &options))
            .map_err(|e| e.to_string())?;
        match end {
            ChatEnd::Quit | ChatEnd::LoggedOut => return Ok(ExitCode::SUCCESS),
            ChatEnd::LoginAgain => {
                store.delete_login().map_err(|e| e.to_string())?;
                match login::login_screen(
                    runtime.handle(),
                    store,
                    style,
                    Some(server.clone()),
                    Some(login.username.clone()),
                ) {
                    Ok((new_server, new_login)) => {
                        server = new_server;
                        login = new_login;
                    }
                    Err(err) => return login_failed(err),
                }
            }
        }
    }
}

/// Server and token for `send` and `tail`: `--token`/`CONFAB_TOKEN`, else
/// the saved login.
fn script_auth(
    store: &Store,
    server_arg: Option<ServerUrl>,
    auth: &TokenArgs,
) -> Result<(ServerUrl, String), String> {
    let saved = store.load_login().map_err(|e| e.to_string())?;
    if let Some(token) = &auth.token {
        let server = server_arg
            .or_else(|| saved_server(saved.as_ref()))
            .ok_or("no server given: pass --server URL (or set CONFAB_SERVER)")?;
        return Ok((server, token.clone()));
    }
    let Some(saved) = saved else {
        return Err(
            "not logged in: run `confab login` first, or pass --token (or set CONFAB_TOKEN)".into(),
        );
    };
    let saved_at = login::parse_server(&saved.server)?;
    if let Some(server) = server_arg
        && server != saved_at
    {
        return Err(format!(
            "the saved login is for {saved_at}; pass --token for {server}, or log in there with `confab --server {server} login`"
        ));
    }
    Ok((saved_at, saved.token))
}
