//! The `crmdump` binary: parse arguments, run, print the error chain, map to an exit code.

use clap::Parser;

/// jemalloc: an export allocates and frees millions of small strings (JSON values, rows);
/// glibc's malloc spent about 15% of an export's CPU on them (perf, BENCHMARKS.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc keeps freed pages for 10 s by default before returning them; an export frees
/// 5 MiB upload chunks and page buffers all the time, so the pages it holds on to made up a
/// third of the peak RSS (BENCHMARKS.md: 320 MB against 267 MB to S3 for 1,064 tables at
/// 2,000 records per type). 300 ms keeps the reuse and costs about 0.2 s of system time.
/// `_RJEM_MALLOC_CONF` in the environment still overrides it.
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"dirty_decay_ms:300,muzzy_decay_ms:0\0";

fn main() {
    let args = match crmdump::cli::config::expand_args(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            crmdump::cli::stderr_line(format_args!("error: {e}"));
            std::process::exit(e.class().exit_code());
        }
    };
    let cli = crmdump::cli::Cli::parse_from(args);
    crmdump::cli::init_logging(&cli.global, &cli.command);
    // Blocking threads encode parts (a few at a time, see the pipeline's writers) and run
    // the local file system's writes; 64 is far more than they need and keeps an account
    // with thousands of tables from ever approaching tokio's default of 512.
    let runtime = match tokio::runtime::Builder::new_multi_thread().max_blocking_threads(64).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            crmdump::cli::stderr_line(format_args!("error: cannot start the async runtime: {e}"));
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(crmdump::cli::run(cli));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = result {
        let code = e.class().exit_code();
        let mut message = format!("error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(&format!("\n  caused by: {text}"));
            }
            source = s.source();
        }
        crmdump::cli::stderr_line(format_args!("{message}"));
        std::process::exit(code);
    }
}
