//! The login screen: server, username, hidden password; registration when
//! the account does not exist. Every failure is a sentence and a retry.

use confab_bot_sdk::{ServerUrl, http};
use confab_protocol::names::{PASSWORD_RULE, Username, check_password};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::runtime::Handle;

use crate::render;
use crate::store::{SavedLogin, Store, StoreError};
use crate::style::Style;

/// The server offered when none is given (the reference server's default, §5.6).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7420";

/// Why the login screen ended without a login.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The user pressed Ctrl-C or Ctrl-D.
    #[error("login cancelled")]
    Cancelled,
    /// No terminal to read from.
    #[error("cannot read from the terminal: {0}")]
    Terminal(String),
    /// The token could not be saved.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses what a user types as a server: `http(s)://host:port`, or a bare
/// `host:port` meaning `http://host:port`.
pub fn parse_server(input: &str) -> Result<ServerUrl, String> {
    let input = input.trim();
    let with_scheme = if input.contains("://") {
        input.to_owned()
    } else {
        format!("http://{input}")
    };
    ServerUrl::parse(&with_scheme).map_err(|err| err.to_string())
}

/// Runs the login screen on the terminal and saves the token. `server` and
/// `username`, when given, are used (the server) or offered (the username).
pub fn login_screen(
    runtime: &Handle,
    store: &Store,
    style: Style,
    server: Option<ServerUrl>,
    username: Option<String>,
) -> Result<(ServerUrl, SavedLogin), LoginError> {
    let mut prompts = Prompts::new()?;
    let mut server = match server {
        Some(server) => server,
        None => prompts.server(style, None)?,
    };
    let mut username_hint = username;
    println!(
        "{}",
        render::notice(style, &format!("logging in to {server}"))
    );
    loop {
        let username = prompts.username(style, username_hint.as_deref())?;
        username_hint = Some(username.clone());
        let password = prompts.password("Password: ")?;
        match runtime.block_on(http::login(&server, &username, &password)) {
            Ok(login) => return Ok((server.clone(), save(store, style, &server, login)?)),
            Err(http::Error::InvalidCredentials { .. }) => {
                let question =
                    format!("No account '{username}' here or wrong password. Register it? [y/N] ");
                if !prompts.yes(&question)? {
                    println!("{}", render::notice(style, "then try again"));
                    continue;
                }
                if let Some(login) =
                    register(runtime, &mut prompts, style, &server, &username, password)?
                {
                    return Ok((server.clone(), save(store, style, &server, login)?));
                }
            }
            Err(err) if err.is_unreachable() => {
                println!(
                    "{}",
                    render::error(
                        style,
                        &format!("{err}. Enter the server again (Enter keeps it):")
                    )
                );
                server = prompts.server(style, Some(&server))?;
            }
            Err(http::Error::Throttled { retry_after, .. }) => println!(
                "{}",
                render::error(
                    style,
                    &format!(
                        "too many failed logins for '{username}'; wait {}s and try again",
                        retry_after.as_secs_f64().ceil()
                    )
                )
            ),
            Err(err) => println!("{}", render::error(style, &format!("{err}; try again"))),
        }
    }
}

/// Registers `username` with a password typed twice (the first try is the
/// one just used to log in), then logs in. `None` sends the user back to
/// the username prompt.
fn register(
    runtime: &Handle,
    prompts: &mut Prompts,
    style: Style,
    server: &ServerUrl,
    username: &str,
    mut password: String,
) -> Result<Option<http::LoginResponse>, LoginError> {
    // Say the rule up front: the first try was typed as a login, before
    // anyone knew it would become a new password.
    println!(
        "{}",
        render::notice(style, &format!("new passwords: {PASSWORD_RULE}"))
    );
    loop {
        if let Err(err) = check_password(&password) {
            println!("{}", render::error(style, &err.to_string()));
            password = prompts.password("Choose a password: ")?;
            continue;
        }
        let again = prompts.password("Repeat the password: ")?;
        if again != password {
            println!(
                "{}",
                render::error(style, "the passwords differ; choose one again")
            );
            password = prompts.password("Choose a password: ")?;
            continue;
        }
        break;
    }
    match runtime.block_on(http::register(server, username, &password)) {
        Ok(_) => {}
        Err(http::Error::UsernameTaken { .. }) => {
            println!(
                "{}",
                render::error(
                    style,
                    &format!("'{username}' exists already, so the password was wrong; try again")
                )
            );
            return Ok(None);
        }
        Err(err) => {
            println!("{}", render::error(style, &format!("{err}; try again")));
            return Ok(None);
        }
    }
    println!(
        "{}",
        render::notice(style, &format!("registered '{username}'"))
    );
    match runtime.block_on(http::login(server, username, &password)) {
        Ok(login) => Ok(Some(login)),
        Err(err) => {
            println!("{}", render::error(style, &format!("{err}; try again")));
            Ok(None)
        }
    }
}

fn save(
    store: &Store,
    style: Style,
    server: &ServerUrl,
    login: http::LoginResponse,
) -> Result<SavedLogin, LoginError> {
    let saved = SavedLogin {
        server: server.to_string(),
        username: login.username,
        token: login.token,
        expires_at_ms: login.expires_at_ms,
    };
    store.save_login(&saved)?;
    println!(
        "{}",
        render::notice(
            style,
            &format!(
                "logged in as {}; the token is saved in {} for next time (/logout forgets it)",
                saved.username,
                store.dir().display()
            )
        )
    );
    Ok(saved)
}

struct Prompts {
    editor: DefaultEditor,
}

impl Prompts {
    fn new() -> Result<Self, LoginError> {
        let editor = DefaultEditor::new().map_err(|e| LoginError::Terminal(e.to_string()))?;
        Ok(Self { editor })
    }

    fn line(&mut self, prompt: &str) -> Result<String, LoginError> {
        match self.editor.readline(prompt) {
            Ok(line) => Ok(line.trim().to_owned()),
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => Err(LoginError::Cancelled),
            Err(err) => Err(LoginError::Terminal(err.to_string())),
        }
    }

    fn server(
        &mut self,
        style: Style,
        current: Option<&ServerUrl>,
    ) -> Result<ServerUrl, LoginError> {
        let default = current.map_or_else(|| DEFAULT_SERVER.to_owned(), ToString::to_string);
        loop {
            let answer = self.line(&format!("Server [{default}]: "))?;
            let answer = if answer.is_empty() {
                default.clone()
            } else {
                answer
            };
            match parse_server(&answer) {
                Ok(server) => return Ok(server),
                Err(err) => println!("{}", render::error(style, &err)),
            }
        }
    }

    fn username(&mut self, style: Style, hint: Option<&str>) -> Result<String, LoginError> {
        loop {
            let prompt = match hint {
                Some(hint) => format!("Username [{hint}]: "),
                None => "Username: ".to_owned(),
            };
            let answer = self.line(&prompt)?;
            let answer = match (answer.is_empty(), hint) {
                (true, Some(hint)) => hint.to_owned(),
                (true, None) => continue,
                (false, _) => answer,
            };
            match Username::parse(answer) {
                Ok(name) => return Ok(name.into_string()),
                Err(err) => println!("{}", render::error(style, &err.to_string())),
            }
        }
    }

    fn password(&mut self, prompt: &str) -> Result<String, LoginError> {
        rpassword::prompt_password(prompt).map_err(|err| match err.kind() {
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::UnexpectedEof => {
                LoginError::Cancelled
            }
            _ => LoginError::Terminal(format!(
                "{err}; the password is read from the terminal (for scripts, pass --token)"
            )),
        })
    }

    fn yes(&mut self, question: &str) -> Result<bool, LoginError> {
        let answer = self.line(question)?;
        Ok(matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_means_http() {
        assert_eq!(
            parse_server("127.0.0.1:7420").unwrap().to_string(),
            "http://127.0.0.1:7420"
        );
        assert!(parse_server("ftp://x").is_err());
    }
}
