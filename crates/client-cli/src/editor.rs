//! The input line: rustyline on a thread of its own, and the printer that
//! puts incoming lines above it without garbling what the user is typing.
//!
//! - The editor thread reads one line at a time and sends it to the chat
//!   loop, then waits for the loop's go-ahead before showing the next
//!   prompt, so a `/join` shows the room before the user types on.
//! - On a terminal the prompt is two rows, as in irssi: the status line
//!   (connection state, current room, activity list, who is typing) above
//!   the input row (`#room> `). Rustyline lays the line out from the prompt
//!   it was given; the status row is cut to the terminal's width, so it is
//!   always one row whatever it says, and `highlight_prompt` redraws it
//!   from [`PromptInfo`] on every refresh: each keystroke, each printed
//!   line, and [`Screen::refresh`] when only the status changed.
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
use crate::render::{self, Activity, Status};
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
    /// Other rooms with unread messages.
    pub activity: Vec<Activity>,
    /// Who is typing in the current room.
    pub typing: Vec<String>,
}

impl PromptInfo {
    /// The status line, at most `width` columns.
    pub fn status_line(&self, style: Style, now: Instant, width: usize) -> String {
        let status = Status {
            state: &self.state,
            room: self.room.as_deref(),
            activity: &self.activity,
            typing: &self.typing,
        };
        render::status_line(style, &status, now, width)
    }
}

/// Columns the status line may take: one less than the terminal's, so it
/// never reaches the last column (where terminals differ on wrapping).
fn status_width() -> usize {
    terminal_size::terminal_size()
        .map_or(80, |(terminal_size::Width(w), _)| usize::from(w))
        .saturating_sub(1)
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
        // The status row is redrawn as it is now; it is one row, as the
        // one the prompt was laid out with, so the layout stays valid. The
        // input row is kept as given.
        let Some(split) = prompt.find('\n') else {
            return Cow::Borrowed(prompt);
        };
        let fresh = self
            .prompt
            .lock()
            .status_line(self.style, Instant::now(), status_width());
        Cow::Owned(format!("{fresh}{}", &prompt[split..]))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        false
    }
}

impl Validator for ChatHelper {}
impl Helper for ChatHelper {}

/// What the printer thread is asked to do.
#[derive(Debug)]
enum Paint {
    /// Print lines above the prompt.
    Lines(String),
    /// Redraw the prompt (the status line changed), ringing the bell first
    /// if asked.
    Refresh {
        /// Ring the terminal's bell.
        bell: bool,
    },
}

/// Prints lines above the prompt. Clones share one printer thread.
#[derive(Debug, Clone)]
pub struct Screen {
    lines: std_mpsc::Sender<Paint>,
}

impl Screen {
    /// Prints `text` (one or more lines) above the prompt.
    pub fn print(&self, text: impl Into<String>) {
        // Fails only once the printer thread is gone, at exit.
        self.lines.send(Paint::Lines(text.into())).ok();
    }

    /// Redraws the prompt, whose status line changed.
    pub fn refresh(&self) {
        self.lines.send(Paint::Refresh { bell: false }).ok();
    }

    /// Rings the bell and redraws the prompt.
    pub fn bell(&self) {
        self.lines.send(Paint::Refresh { bell: true }).ok();
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
    let (lines, lines_rx) = std_mpsc::channel::<Paint>();
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
                    read_lines(editor, style, prompt, inputs, ready_rx);
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

/// What makes rustyline redraw its prompt without printing a line: its
/// external printer clears the prompt rows, writes the message and redraws
/// the prompt; moving up one row before the newline that ends the message
/// puts the prompt back where it was.
const REDRAW: &str = "\x1b[A\n";

fn print_lines<P: ExternalPrinter>(lines: std_mpsc::Receiver<Paint>, mut external: Option<P>) {
    use std::io::Write;
    for paint in lines {
        let mut text = match paint {
            Paint::Lines(text) => text,
            Paint::Refresh { bell } => {
                // Without rustyline's printer no prompt is drawn to refresh.
                if let Some(printer) = external.as_mut() {
                    let bell = if bell { "\x07" } else { "" };
                    printer.print(format!("{bell}{REDRAW}")).ok();
                }
                continue;
            }
        };
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
    style: Style,
    prompt: SharedPrompt,
    inputs: mpsc::UnboundedSender<EditorInput>,
    ready: std_mpsc::Receiver<()>,
) {
    use std::io::IsTerminal;
    // A status row needs a terminal that can move the cursor.
    let status_row = std::io::stdout().is_terminal()
        && std::env::var("TERM").map_or(true, |term| term != "dumb");
    loop {
        let (input_row, text) = {
            let info = prompt.lock();
            let input_row = render::prompt(Style::plain(), info.room.as_deref());
            let text = if status_row {
                let status = info.status_line(Style::plain(), Instant::now(), status_width());
                format!("{status}\n{input_row}")
            } else {
                input_row.clone()
            };
            (input_row, text)
        };
        match editor.readline(&text) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    editor.add_history_entry(line.as_str()).ok();
                }
                if status_row {
                    erase_prompt(&mut editor, &input_row, &line);
                    if !line.trim().is_empty() && !shown_again(&line) {
                        // A record of the command above what it prints.
                        println!("{}", style.dim(&format!("{input_row}{line}")));
                    }
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

/// Removes the rows the line was typed on, status line included: a status
/// line left in the scrollback would be stale, and a chat message comes
/// back formatted (or marked pending) right away, so the raw echo would
/// show it twice. Counts characters, which never overestimates the rows a
/// line takes, so no earlier output is erased.
fn erase_prompt(editor: &mut Editor<ChatHelper, DefaultHistory>, input_row: &str, line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let Some((columns, _)) = editor.dimensions() else {
        return;
    };
    let columns = usize::from(columns.max(1));
    // The status row, then each row of the input (a pasted line break
    // starts a row of its own; the first row follows the input prompt).
    let rows = 1 + format!("{input_row}{line}")
        .split('\n')
        .map(|part| part.chars().count().max(1).div_ceil(columns))
        .sum::<usize>();
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
