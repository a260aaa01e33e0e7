//! `castgate-load`: a load generator for WHIP/WHEP servers that speaks only the standard
//! protocols (WHIP/WHEP over HTTP, WebRTC over UDP through str0m as a client), so it can
//! be pointed at castgate or any other server. See BENCHMARKS.md and `--help`.
//!
//! Modules, one job each: [`cli`] options; [`fixture`] the pre-encoded clip (ffmpeg CLI,
//! once); [`peer`] offer/answer/HTTP and the str0m socket loop; [`publisher`] the paced
//! WHIP sender; [`viewer`] the WHEP receiver and its measurements; [`rtpcheck`] loss and
//! frame completeness without decoding; [`procstat`] the server's CPU and memory;
//! [`stats`] percentiles; [`report`] JSON and text; [`run`] the sequence of a run.

mod cli;
mod fixture;
mod peer;
mod procstat;
mod publisher;
mod report;
mod rtpcheck;
mod run;
mod stats;
mod viewer;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

/// Exit status when the target is unreachable or refused every publisher.
const EXIT_UNREACHABLE: u8 = 1;
/// Exit status for bad options.
const EXIT_USAGE: u8 = 2;
/// Exit status when the report was printed but some sessions failed.
const EXIT_SOME_FAILED: u8 = 3;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("castgate-load: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let size = match args.picture_size() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("castgate-load: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The clip is made (or read from the cache) before any network work starts.
    let dir = args
        .fixture_dir
        .clone()
        .unwrap_or_else(fixture::default_dir);
    let fixture = match fixture::Fixture::load(&dir, args.codec, size, args.bitrate_kbps) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!("castgate-load: cannot make the media clip: {e:#}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("castgate-load: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let report = match runtime.block_on(run::run(&args, fixture)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("castgate-load: {e:#}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("castgate-load: cannot write the report: {e}");
                return ExitCode::from(EXIT_UNREACHABLE);
            }
        }
    } else {
        print!("{}", report.text());
    }
    if report.sessions_failed > 0 {
        eprintln!(
            "castgate-load: {} session(s) failed; first reason: {}",
            report.sessions_failed,
            report.errors.first().map_or("unknown", |(e, _)| e.as_str())
        );
        return ExitCode::from(EXIT_SOME_FAILED);
    }
    ExitCode::SUCCESS
}
