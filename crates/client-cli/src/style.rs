//! Colour, only where it helps: on a terminal, and never when `NO_COLOR` is set.

use std::io::IsTerminal;

/// Whether output is coloured. Copy it around; it is one bool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty
    /// (<https://no-color.org>).
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// The same decision for stderr, where errors go.
    pub fn detect_stderr() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: !no_color && std::io::stderr().is_terminal(),
        }
    }

    /// Plain text, whatever the terminal.
    pub const fn plain() -> Self {
        Self { color: false }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Secondary information: times, notices, marks.
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Emphasis.
    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Problems.
    pub fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Good news.
    pub fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Waiting.
    pub fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Rooms and commands.
    pub fn cyan(self, text: &str) -> String {
        self.paint("36", text)
    }

    /// A username in a colour of its own, stable across runs, so a busy
    /// room is easy to follow.
    pub fn nick(self, name: &str) -> String {
        const PALETTE: [&str; 6] = ["31", "32", "33", "34", "35", "36"];
        // FNV-1a: tiny, stable, good enough to spread names over six colours.
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        self.paint(PALETTE[hash as usize % PALETTE.len()], name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_adds_no_escapes() {
        let s = Style::plain();
        assert_eq!(s.red("x"), "x");
        assert_eq!(s.nick("alice"), "alice");
    }

    #[test]
    fn colour_wraps_and_nicks_are_stable() {
        let s = Style { color: true };
        assert_eq!(s.bold("x"), "\x1b[1mx\x1b[0m");
        assert_eq!(s.nick("alice"), s.nick("alice"));
    }
}
