use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Tokio moves tasks between worker threads, so memory is often freed on another thread than
/// the one that allocated it; glibc's allocator then takes the owning arena's lock, and under
/// load the request threads queued on it. mimalloc frees across threads without a lock. Built
/// without transparent huge pages (`no_thp`): with them an idle replica held 33 MiB instead of 20.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = crosstrade::cli::Cli::parse();
    match crosstrade::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
