//! Command bot: `!roll 2d6`, `!time`, and the generated `!help`.
//!
//! ```text
//! cargo run -p confab-bot-sdk --example commands -- [SERVER_URL] [ROOM]
//! ```
//!
//! Defaults: `http://127.0.0.1:7420`, room `lobby`. The account is
//! `CONFAB_BOT_USER` / `CONFAB_BOT_PASSWORD` (default `dice-bot` /
//! `dice-bot-password`), registered on first start. Bad arguments get a
//! usage reply (`usage: !roll <dice>, e.g. !roll 2d6`). Stop with ctrl-c.

use std::time::{SystemTime, UNIX_EPOCH};

use confab_bot_sdk::{Client, Commands, Dice, ServerUrl};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server: ServerUrl = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7420".to_owned())
        .parse()?;
    let room = args.next().unwrap_or_else(|| "lobby".to_owned());
    let user = std::env::var("CONFAB_BOT_USER").unwrap_or_else(|_| "dice-bot".to_owned());
    let password =
        std::env::var("CONFAB_BOT_PASSWORD").unwrap_or_else(|_| "dice-bot-password".to_owned());

    let client = Client::builder(server)
        .credentials(user, password)
        .register_if_missing(true)
        .join([room])
        .create_missing_rooms(true)
        .connect()
        .await?;

    let commands = Commands::new("!")
        .command("roll", "roll dice", |cmd, (dice,): (Dice,)| async move {
            let (rolls, total) = dice.roll();
            let rolls: Vec<String> = rolls.iter().map(u32::to_string).collect();
            cmd.reply(&format!(
                "{} rolled {dice}: {} = {total}",
                cmd.sender(),
                rolls.join(" + ")
            ))
            .await?;
            Ok(())
        })
        .command(
            "time",
            "the bot's clock, in UTC",
            |cmd, (): ()| async move {
                cmd.reply(&format!("it is {} UTC", utc_now())).await?;
                Ok(())
            },
        );
    println!("{} is online; ctrl-c to stop", client.username());
    client.run_until_ctrl_c(commands).await?;
    Ok(())
}

/// `HH:MM:SS` of the current UTC time, without a date-time dependency.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}
