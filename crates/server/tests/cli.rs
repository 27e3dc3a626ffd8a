//! The binary documents every option (`--help`), with its environment variable.

#[test]
fn help_documents_every_option() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_confab-server"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("run confab-server --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    let options = [
        ("--listen", "CONFAB_LISTEN"),
        ("--data-dir", "CONFAB_DATA_DIR"),
        ("--database-url", "CONFAB_DATABASE_URL"),
        ("--max-text-bytes", "CONFAB_MAX_TEXT_BYTES"),
        ("--max-frame-bytes", "CONFAB_MAX_FRAME_BYTES"),
        ("--max-history-page", "CONFAB_MAX_HISTORY_PAGE"),
        ("--max-resume-replay", "CONFAB_MAX_RESUME_REPLAY"),
        ("--send-rate", "CONFAB_SEND_RATE"),
        ("--send-burst", "CONFAB_SEND_BURST"),
        ("--outbound-queue", "CONFAB_OUTBOUND_QUEUE"),
        ("--max-connections", "CONFAB_MAX_CONNECTIONS"),
        ("--socket-send-buffer", "CONFAB_SOCKET_SEND_BUFFER"),
        ("--auth-timeout-ms", "CONFAB_AUTH_TIMEOUT_MS"),
        ("--header-timeout-ms", "CONFAB_HEADER_TIMEOUT_MS"),
        ("--first-byte-timeout-ms", "CONFAB_FIRST_BYTE_TIMEOUT_MS"),
        ("--body-timeout-ms", "CONFAB_BODY_TIMEOUT_MS"),
        ("--keepalive-timeout-ms", "CONFAB_KEEPALIVE_TIMEOUT_MS"),
        ("--max-connections-per-ip", "CONFAB_MAX_CONNECTIONS_PER_IP"),
        ("--metrics-listen", "CONFAB_METRICS_LISTEN"),
        ("--heartbeat-ms", "CONFAB_HEARTBEAT_MS"),
        ("--idle-timeout-ms", "CONFAB_IDLE_TIMEOUT_MS"),
        ("--typing-ttl-ms", "CONFAB_TYPING_TTL_MS"),
        ("--token-ttl-hours", "CONFAB_TOKEN_TTL_HOURS"),
        ("--allowed-origin", "CONFAB_ALLOWED_ORIGINS"),
        ("--tls-cert", "CONFAB_TLS_CERT"),
        ("--tls-key", "CONFAB_TLS_KEY"),
    ];
    for (flag, env) in options {
        let line = help
            .lines()
            .position(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("--help lacks {flag}:\n{help}"));
        // The flag's paragraph (up to the next flag) explains it and names its variable.
        let paragraph: Vec<&str> = help
            .lines()
            .skip(line + 1)
            .take_while(|l| !l.trim_start().starts_with("--"))
            .collect();
        let paragraph = paragraph.join(" ");
        assert!(
            paragraph.split_whitespace().count() >= 4,
            "{flag} is explained: {paragraph:?}"
        );
        assert!(paragraph.contains(env), "{flag} names {env}: {paragraph:?}");
    }
}

#[test]
fn bad_flags_are_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_confab-server"))
        .args(["--tls-cert", "cert.pem"])
        .env_clear()
        .output()
        .expect("run confab-server");
    assert!(!output.status.success(), "--tls-cert needs --tls-key");
}
