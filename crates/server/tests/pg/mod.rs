//! PostgreSQL for tests: each test gets a schema of its own in the database
//! named by `CONFAB_TEST_DATABASE_URL`, so concurrent tests and runs never
//! see each other's rows, and the schema is dropped when the test ends
//! (also when it fails).
//!
//! Without `CONFAB_TEST_DATABASE_URL` a test prints one line saying what to
//! set and returns (skipped); with `CONFAB_REQUIRE_SERVICES=1` a missing
//! URL fails the test instead, so CI cannot skip silently.

#![allow(dead_code)] // Each test binary uses a different subset.

use confab_server::storage::postgres::PostgresStore;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The environment variable naming the test database.
pub const URL_VAR: &str = "CONFAB_TEST_DATABASE_URL";
/// Set to `1` to turn a missing [`URL_VAR`] into a failure.
pub const REQUIRE_VAR: &str = "CONFAB_REQUIRE_SERVICES";

/// The test database URL, or `None` (after printing why) to skip.
pub fn database_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var(REQUIRE_VAR).as_deref() == Ok("1") => panic!(
            "{test}: {REQUIRE_VAR}=1 but {URL_VAR} is not set; set it to a PostgreSQL URL, \
             e.g. postgres://postgres@127.0.0.1:5432/test"
        ),
        _ => {
            println!(
                "{test}: skipped: set {URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
            );
            None
        }
    }
}

/// A schema of its own in the test database, dropped on drop.
#[derive(Debug)]
pub struct TestSchema {
    base_url: String,
    /// The schema's name: `confab_test_<random hex>`.
    pub name: String,
}

impl TestSchema {
    /// Creates a fresh schema, or returns `None` to skip (see the module doc).
    pub async fn create(test: &str) -> Option<Self> {
        let base_url = database_url(test)?;
        let name = format!("confab_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&base_url)
            .await
            .unwrap_or_else(|e| panic!("{test}: connect to {URL_VAR}: {e}"));
        // The name is ours (hex), not input: safe to splice.
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test schema");
        conn.close().await.expect("close");
        Some(Self { base_url, name })
    }

    /// A database URL whose sessions use only this schema.
    pub fn url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}options[search_path]={}", self.base_url, self.name)
    }

    /// [`Self::url`] as connect options.
    pub fn options(&self) -> PgConnectOptions {
        self.url().parse().expect("the test URL parses")
    }

    /// A store on this schema (one "node"); several may share it.
    pub async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.url())
            .await
            .expect("open PostgresStore")
    }

    /// A plain connection on this schema, to look at or plant rows.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.options())
            .await
            .expect("connect to the test schema")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop runs outside async (maybe while unwinding), so the cleanup
        // gets a thread and a runtime of its own.
        let url = self.base_url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let done = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("dropping test schema {}: {e}", self.name),
            Err(_) => eprintln!("dropping test schema {}: the cleanup panicked", self.name),
        }
    }
}
