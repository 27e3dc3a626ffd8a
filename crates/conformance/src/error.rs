//! Typed errors of the library.
//!
//! A scenario that fails is not an error: it is a verdict in the
//! [`crate::report::Report`]. These errors mean the suite itself could not do
//! its job (bad scenario file, unreachable server, bad arguments).

use std::path::PathBuf;

/// Why a scenario file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file is not valid YAML of the scenario shape.
    #[error("{file}: {source}")]
    Yaml {
        /// The file name.
        file: String,
        /// What the YAML parser reported.
        source: serde_yaml_ng::Error,
    },
    /// The file parsed but breaks a rule of the scenario format.
    #[error("{file}: {message}")]
    Invalid {
        /// The file name.
        file: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Two scenario files use the same `name`.
    #[error("scenario name {name:?} is used by both {first} and {second}; names must be unique")]
    DuplicateName {
        /// The repeated name.
        name: String,
        /// The first file using it.
        first: String,
        /// The second file using it.
        second: String,
    },
}

/// Why a run could not start or complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The server URL is not an `http://host:port` base URL.
    #[error("server URL {url:?} is not usable: {reason}")]
    BadServerUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedded or given scenarios do not load.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The filter matched no scenario.
    #[error("filter {filter:?} matches no scenario; use --list to see names and sections")]
    EmptySelection {
        /// The filter given.
        filter: String,
    },
    /// The probe connection (register, login, Auth) failed, so nothing can run.
    #[error("cannot reach a working Confab server at {url}: {reason}")]
    Unreachable {
        /// The server URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A WebSocket URL override was given with several servers; it could
    /// only be right for one of them.
    #[error(
        "--ws-url overrides one server's WebSocket URL, but {servers} servers were given; drop it (each server's is derived from its URL)"
    )]
    WsUrlWithSeveralServers {
        /// How many servers were given.
        servers: usize,
    },
    /// No server URL was given.
    #[error("no server to check; give at least one --server http://host:port")]
    NoServer,
    /// Two servers of one run (nodes of a cluster) announced different
    /// limits or capabilities in Welcome; scenarios compute with one set,
    /// and a client cannot tell which node it reached, so they must agree.
    #[error(
        "servers {first} and {other} disagree: {difference}; the nodes of a cluster must announce the same Welcome limits and capabilities, so configure them alike"
    )]
    ServersDisagree {
        /// The first server's URL.
        first: String,
        /// The server that differs from it.
        other: String,
        /// Which limits or capabilities differ, with both values.
        difference: String,
    },
}

/// Why the coverage table could not be built or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoverageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `uncovered.yaml` is not a map of rule id to reason.
    #[error("uncovered.yaml: {0}")]
    Uncovered(serde_yaml_ng::Error),
    /// Scenarios do not load.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}
