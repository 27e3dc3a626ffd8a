//! `confab-server-fault`: `confab-server` with the fault hooks of the
//! `fault-hooks` feature (`src/fault.rs`), for the multi-process tests only.
//! A separate binary, so a test build never replaces the real server's.

#[path = "../main.rs"]
mod server_main;

fn main() -> anyhow::Result<()> {
    server_main::main()
}
