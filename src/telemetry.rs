//! Logging, set up once: text or JSON lines on stderr, filtered by `LOG_LEVEL`.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Longest client-supplied text put in a log line, in characters.
pub const MAX_UNTRUSTED_CHARS: usize = 64;

/// Client-supplied text made fit for a log line: at most `MAX_UNTRUSTED_CHARS` characters, with
/// control characters, quotes and backslashes escaped, so it can neither forge a line nor
/// flood the log.
pub fn untrusted(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .by_ref()
        .take(MAX_UNTRUSTED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    let rest = chars.count();
    if rest > 0 {
        out.push_str(&format!("…(+{rest} chars)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::untrusted;

    #[test]
    fn untrusted_text_is_truncated_and_escaped() {
        assert_eq!(untrusted("send_mesage"), "send_mesage");
        assert_eq!(
            untrusted("x\n2026-01-01 ERROR forged\u{1b}[31m\"q\""),
            "x\\n2026-01-01 ERROR forged\\u{1b}[31m\\\"q\\\""
        );
        let long = "é".repeat(5000);
        let logged = untrusted(&long);
        assert!(logged.starts_with(&"é".repeat(64)));
        assert!(logged.ends_with("…(+4936 chars)"));
        assert!(!untrusted("a\nb").contains('\n'));
    }
}
