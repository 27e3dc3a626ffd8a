//! Echo bot: repeats every message in the rooms it is in.
//!
//! ```text
//! cargo run -p confab-bot-sdk --example echo -- [SERVER_URL] [ROOM]
//! ```
//!
//! Defaults: `http://127.0.0.1:7420`, room `lobby`. The account is
//! `CONFAB_BOT_USER` / `CONFAB_BOT_PASSWORD` (default `echo-bot` /
//! `echo-bot-password`), registered on first start. Stop with ctrl-c.

use confab_bot_sdk::{Client, Context, Event, HandlerError, ServerUrl};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server: ServerUrl = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7420".to_owned())
        .parse()?;
    let room = args.next().unwrap_or_else(|| "lobby".to_owned());
    let user = std::env::var("CONFAB_BOT_USER").unwrap_or_else(|_| "echo-bot".to_owned());
    let password =
        std::env::var("CONFAB_BOT_PASSWORD").unwrap_or_else(|_| "echo-bot-password".to_owned());

    let client = Client::builder(server)
        .credentials(user, password)
        .register_if_missing(true)
        .join([room])
        .create_missing_rooms(true)
        .connect()
        .await?;
    println!("{} is online; ctrl-c to stop", client.username());
    client.run_until_ctrl_c(echo).await?;
    Ok(())
}

async fn echo(ctx: Context, event: Event) -> Result<(), HandlerError> {
    match event {
        // Never answer our own messages, or the bot would echo its echoes.
        Event::Message(message) if !message.from_self() => {
            let reply = format!("{} said: {}", message.sender(), message.text());
            ctx.room(message.room()).send(&reply).await?;
        }
        Event::Connection(state) => println!("connection: {state:?}"),
        Event::Error(error) => eprintln!("error: {error:?}"),
        _ => {}
    }
    Ok(())
}
