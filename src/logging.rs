//! Logs: to the journal with structured fields when systemd started us
//! (journalctl -u adaptive-workers ACTION=kill works), to stderr without
//! timestamps otherwise. ADAPTIVE_WORKERS_LOG sets the level (e.g. debug).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub fn init() {
    let filter = || {
        EnvFilter::try_from_env("ADAPTIVE_WORKERS_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
    };
    if (std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some())
        && let Ok(journal) = tracing_journald::layer()
    {
        // No prefix: the fields are APP, WORKER_PID, ACTION, … as documented.
        let journal = journal
            .with_field_prefix(None)
            .with_syslog_identifier("adaptive-workers".into());
        tracing_subscriber::registry()
            .with(filter())
            .with(journal)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .without_time()
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}
