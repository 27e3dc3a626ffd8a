//! The input line: rustyline on a thread of its own, and the printer that
//! puts incoming lines above it without garbling what the user is typing.
//!
//! - The editor thread reads one line at a time and sends it to the chat
//!   loop, then waits for the loop's go-ahead before showing the next
//!   prompt, so a `/join` shows the room before the user types on.
//! - The prompt starts with the connection state. Rustyline lays the line
//!   out from the prompt it was given, so the state has a fixed width
//!   ([`render::STATE_WIDTH`]) and is redrawn from [`PromptInfo`] on every
//!   refresh (each keystroke and each printed line) by `highlight_prompt`.
//! - Every edit tells the chat loop whether the line holds message text,
//!   which drives the typing indicator (§11.2).
//! - Tab completes commands and room names.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard, mpsc as std_mpsc};
use std::thread;
use std::time::Instant;

use confab_protocol::session::ConnectionState;
use rustyline::completion::{Completer, Pair};
use rustyline::config::{ColorMode, CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc;

use crate::commands::{ArgKind, COMMANDS};
use crate::render;
use crate::style::Style;

/// What the prompt and the completer show; the chat loop keeps it current.
#[derive(Debug, Clone)]
pub struct PromptInfo {
    /// Connection state.
    pub state: ConnectionState,
    /// Current room.
    pub room: Option<String>,
    /// Every known room.
    pub rooms: Vec<String>,
    /// Joined rooms.
    pub joined: Vec<String>,
}

/// [`PromptInfo`] shared between the chat loop and the editor thread.
#[derive(Debug, Clone)]
pub struct SharedPrompt(Arc<Mutex<PromptInfo>>);

impl SharedPrompt {
    /// Starts with `info`.
    pub fn new(info: PromptInfo) -> Self {
        Self(Arc::new(Mutex::new(info)))
    }

    /// Locks it; a poisoned lock (a panicked holder) still holds usable data.
    pub fn lock(&self) -> MutexGuard<'_, PromptInfo> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the editor thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditorInput {
    /// A line was entered.
    Line(String),
    /// The line being edited holds message text (true) or not (false).
    Editing(bool),
    /// Ctrl-C: the line was discarded.
    Interrupted,
    /// Ctrl-D on an empty line, or the input ended.
    Eof,
}

struct ChatHelper {
    style: Style,
    prompt: SharedPrompt,
    inputs: mpsc::UnboundedSender<EditorInput>,
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let info = self.prompt.lock();
        Ok(complete(&line[..pos], &info.rooms, &info.joined))
    }
}

/// Completion candidates for the text before the cursor: command names
/// after a leading `/`, then room names where a command takes one.
pub fn complete(before: &str, rooms: &[String], joined: &[String]) -> (usize, Vec<Pair>) {
    let pair = |s: String| Pair {
        display: s.clone(),
        replacement: s,
    };
    let Some(rest) = before.strip_prefix('/') else {
        return (0, Vec::new());
    };
    match rest.split_once(' ') {
        None => {
            let found = COMMANDS
                .iter()
                .filter(|c| c.name.starts_with(rest))
                .map(|c| pair(format!("/{} ", c.name)))
                .collect();
            (0, found)
        }
        Some((name, args)) => {
            let Some(spec) = COMMANDS.iter().find(|c| c.name == name) else {
                return (0, Vec::new());
            };
            // Only the first argument names a room.
            if args.contains(' ') {
                return (0, Vec::new());
            }
            let names = match spec.arg {
                ArgKind::AnyRoom => rooms,
                ArgKind::JoinedRoom => joined,
                ArgKind::None | ArgKind::Text => return (0, Vec::new()),
            };
            let prefix = args.trim_start_matches('#');
            let found = names
                .iter()
                .filter(|room| room.starts_with(prefix))
                .map(|room| pair(room.clone()))
                .collect();
            (before.len() - args.len(), found)
        }
    }
}

impl Hinter for ChatHelper {
    type Hint = String;

    fn hint(&self, line: &str, _pos: usize, _ctx: &Context<'_>) -> Option<String> {
        let has_text = !line.trim().is_empty() && !line.starts_with('/');
        // The chat loop throttles; a closed channel means it is shutting down.
        self.inputs.send(EditorInput::Editing(has_text)).ok();
        None
    }
}

impl Highlighter for ChatHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        default: bool,
    ) -> Cow<'b, str> {
        if !default {
            return Cow::Borrowed(prompt);
        }
        // Same width as the plain state the prompt was built with; the rest
        // (room and "> ") is kept as given so the layout stays valid.
        let split = prompt
            .char_indices()
            .nth(render::STATE_WIDTH)
            .map_or(prompt.len(), |(i, _)| i);
        let state = self.prompt.lock().state.clone();
        let fresh = render::prompt_state(self.style, &state, Instant::now());
        Cow::Owned(format!("{fresh}{}", &prompt[split..]))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        false
    }
}

impl Validator for ChatHelper {}
impl Helper for ChatHelper {}

/// Prints lines above the prompt. Clones share one printer thread.
#[derive(Debug, Clone)]
pub struct Screen {
    lines: std_mpsc::Sender<String>,
}

impl Screen {
    /// Prints `text` (one or more lines) above the prompt.
    pub fn print(&self, text: impl Into<String>) {
        // Fails only once the printer thread is gone, at exit.
        self.lines.send(text.into()).ok();
    }
}

/// The running editor: its thread, and the go-ahead for the next prompt.
#[derive(Debug)]
pub struct EditorThread {
    ready: Option<std_mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    printer: Option<thread::JoinHandle<()>>,
}

impl EditorThread {
    /// Lets the editor show the next prompt.
    pub fn ready(&self) {
        if let Some(ready) = &self.ready {
            ready.send(()).ok();
        }
    }

    /// Ends the editor once it has sent its current line (it waits for a
    /// go-ahead that now never comes) or has already stopped, which
    /// restores the terminal; then prints what `screen` still holds. Must
    /// not be called while the editor is still reading.
    pub fn stop(mut self, screen: Screen) {
        self.ready = None;
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
        // The printer thread ends once its last Screen is gone.
        drop(screen);
        if let Some(printer) = self.printer.take() {
            printer.join().ok();
        }
    }
}

/// Starts the editor and printer threads. Lines and edits arrive on the
/// returned channel.
/// With `wait_first`, the first line is read only after a go-ahead too
/// (for input that is not a terminal, e.g. a pipe: its lines are meant for
/// a connected chat).
pub fn start(
    style: Style,
    prompt: SharedPrompt,
    wait_first: bool,
) -> (EditorThread, Screen, mpsc::UnboundedReceiver<EditorInput>) {
    let (inputs, inputs_rx) = mpsc::unbounded_channel();
    let (ready, ready_rx) = std_mpsc::channel::<()>();
    let (lines, lines_rx) = std_mpsc::channel::<String>();
    let config = Config::builder()
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        // The highlighter redraws the connection state; colour itself is
        // decided by `style` (NO_COLOR, terminal).
        .color_mode(ColorMode::Forced)
        .build();
    let helper = ChatHelper {
        style,
        prompt: prompt.clone(),
        inputs: inputs.clone(),
    };
    let editor = Editor::<ChatHelper, DefaultHistory>::with_config(config).map(|mut editor| {
        editor.set_helper(Some(helper));
        editor
    });
    let (editor, external) = match editor {
        Ok(mut editor) => {
            let external = editor.create_external_printer().ok();
            (Some(editor), external)
        }
        Err(_) => (None, None),
    };
    let printer = thread::Builder::new()
        .name("confab-printer".into())
        .spawn(move || print_lines(lines_rx, external))
        .ok();
    let thread = thread::Builder::new()
        .name("confab-editor".into())
        .spawn(move || match editor {
            Some(editor) => {
                if !wait_first || ready_rx.recv().is_ok() {
                    read_lines(editor, prompt, inputs, ready_rx);
                }
            }
            None => {
                inputs.send(EditorInput::Eof).ok();
            }
        })
        .ok();
    (
        EditorThread {
            ready: Some(ready),
            thread,
            printer,
        },
        Screen { lines },
        inputs_rx,
    )
}

fn print_lines<P: ExternalPrinter>(lines: std_mpsc::Receiver<String>, mut external: Option<P>) {
    use std::io::Write;
    for mut text in lines {
        text.push('\n');
        let printed = external
            .as_mut()
            .is_some_and(|printer| printer.print(text.clone()).is_ok());
        if !printed {
            let mut out = std::io::stdout().lock();
            // Nowhere left to report a failed write to the terminal.
            out.write_all(text.as_bytes()).ok();
            out.flush().ok();
        }
    }
}

fn read_lines(
    mut editor: Editor<ChatHelper, DefaultHistory>,
    prompt: SharedPrompt,
    inputs: mpsc::UnboundedSender<EditorInput>,
    ready: std_mpsc::Receiver<()>,
) {
    loop {
        let text = {
            let info = prompt.lock();
            render::prompt(
                Style::plain(),
                &info.state,
                Instant::now(),
                info.room.as_deref(),
            )
        };
        match editor.readline(&text) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    editor.add_history_entry(line.as_str()).ok();
                }
                if shown_again(&line) {
                    erase_echo(&mut editor, &text, &line);
                }
                inputs.send(EditorInput::Editing(false)).ok();
                if inputs.send(EditorInput::Line(line)).is_err() || ready.recv().is_err() {
                    return;
                }
            }
            Err(ReadlineError::Interrupted) => {
                inputs.send(EditorInput::Editing(false)).ok();
                if inputs.send(EditorInput::Interrupted).is_err() {
                    return;
                }
            }
            Err(_) => {
                inputs.send(EditorInput::Eof).ok();
                return;
            }
        }
    }
}

/// Whether the chat prints `line` back as a chat line (a message or an action).
fn shown_again(line: &str) -> bool {
    (!line.trim().is_empty() && !line.starts_with('/'))
        || line.starts_with("//")
        || line.starts_with("/me ")
}

/// Removes the prompt line a chat message was typed on: the message comes
/// back formatted (or marked pending) right away, so the raw echo would
/// show it twice. Counts characters, which never overestimates the rows a
/// line takes, so no earlier output is erased.
fn erase_echo(editor: &mut Editor<ChatHelper, DefaultHistory>, prompt: &str, line: &str) {
    use std::io::{IsTerminal, Write};
    let mut out = std::io::stdout();
    if !out.is_terminal() {
        return;
    }
    let Some((columns, _)) = editor.dimensions() else {
        return;
    };
    let width = prompt.chars().count() + line.chars().count();
    let rows = width.max(1).div_ceil(usize::from(columns.max(1)));
    // Cursor to the start of the row `rows` up, then clear to the end of the screen.
    write!(out, "\x1b[{rows}F\x1b[J").ok();
    out.flush().ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(found: (usize, Vec<Pair>)) -> (usize, Vec<String>) {
        (
            found.0,
            found.1.into_iter().map(|p| p.replacement).collect(),
        )
    }

    #[test]
    fn completes_commands_then_rooms() {
        let rooms = vec!["general".to_owned(), "games".to_owned(), "ops".to_owned()];
        let joined = vec!["ops".to_owned()];
        assert_eq!(
            names(complete("/jo", &rooms, &joined)),
            (0, vec!["/join ".to_owned()])
        );
        assert_eq!(
            names(complete("/join g", &rooms, &joined)),
            (6, vec!["general".to_owned(), "games".to_owned()])
        );
        assert_eq!(
            names(complete("/switch ", &rooms, &joined)),
            (8, vec!["ops".to_owned()])
        );
        assert_eq!(names(complete("/me g", &rooms, &joined)).1.len(), 0);
        assert_eq!(names(complete("hello", &rooms, &joined)).1.len(), 0);
        assert_eq!(
            names(complete("/", &rooms, &joined)).1.len(),
            COMMANDS.len()
        );
    }
}
