//! The `castgate` command: parse the command line, load the config, serve.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use castgate::config::{Config, Role, ServeArgs};
use castgate::server::Server;

/// castgate — publish over WHIP, watch over WHEP, every session on one UDP port.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options for `serve` (the default command).
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default when no command is given).
    Serve(ServeArgs),
    /// Load and validate the configuration, print it as TOML, and exit.
    CheckConfig(ServeArgs),
    /// Repair recordings left unfinished by a crash (adds Cues and Duration).
    ///
    /// A `NAME.webm.part` becomes `NAME.webm`; a `.webm`/`.mkv` is rewritten in
    /// place. castgate does this by itself at start-up for its own folder.
    Repair {
        /// Files to repair.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
    },
    /// Print a signed token (HS256 JWT, with auth.jwt_secret) for one stream
    /// or pattern, to hand to a publisher, a viewer or an admin tool.
    ///
    /// Example: `castgate token --role view --stream demo --ttl 1h`. Pass it
    /// as `Authorization: Bearer TOKEN`, or `?token=TOKEN` in a URL.
    Token(TokenArgs),
}

/// Options of `castgate token`.
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Role(s) granted (repeat or comma-separate for several).
    #[arg(long, required = true, value_enum, value_delimiter = ',')]
    role: Vec<Role>,
    /// Stream name or pattern (`*` and `?` wildcards; `*` = every stream).
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// How long the token is valid, e.g. `90s`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// TOML configuration file [default: ./castgate.toml if it exists].
    #[arg(long, short = 'c', env = "CASTGATE_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// The HS256 secret, instead of the config's auth.jwt_secret.
    #[arg(
        long,
        env = "CASTGATE_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::command()
        .after_long_help(config_reference())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("castgate=info,warn")),
        )
        .init();
    let (args, check_only) = match cli.command {
        Some(Command::Serve(a)) => (a, false),
        Some(Command::CheckConfig(a)) => (a, true),
        Some(Command::Repair { files }) => return repair(&files),
        Some(Command::Token(t)) => return token(t),
        None => (cli.serve, false),
    };
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("castgate: config error: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        let mut shown = config.clone();
        redact(&mut shown);
        match toml::to_string_pretty(&shown) {
            Ok(t) => print!("{t}"),
            Err(e) => eprintln!("castgate: cannot print config: {e}"),
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("castgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("castgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let scheme = if config.http.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let server = Server::start(config).await?;
    println!(
        "castgate: serving on {scheme}://{} (media on UDP {})",
        server.http_addr(),
        server.engine().local_addr()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `castgate repair FILE…`: one line per file, exit 1 if any failed.
fn repair(files: &[std::path::PathBuf]) -> ExitCode {
    let defaults = castgate::config::RecordConfig::default();
    let opts = castgate::record::muxer::MuxOptions {
        cluster_ms: defaults.cluster_ms,
        reserve_index_bytes: defaults.reserve_index_kib * 1024,
    };
    let mut failed = false;
    for f in files {
        let started = std::time::Instant::now();
        match castgate::record::repair_file(f, opts) {
            Ok(out) => println!(
                "repaired {} -> {} in {:.2} s",
                f.display(),
                out.display(),
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("castgate: cannot repair {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `castgate token …`: the token on stdout, alone on its line; exit 2 when
/// no secret is configured.
fn token(t: TokenArgs) -> ExitCode {
    let args = ServeArgs {
        config: t.config,
        jwt_secret: t.jwt_secret,
        ..Default::default()
    };
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("castgate: config error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = castgate::stream::StreamName::parse(&t.stream.replace(['*', '?'], "x")) {
        eprintln!("castgate: --stream {:?}: {e}", t.stream);
        return ExitCode::from(2);
    }
    let Some(secret) = &config.auth.jwt_secret else {
        eprintln!(
            "castgate: {}",
            castgate::http::auth::jwt::KeyError::NoSecret
        );
        return ExitCode::from(2);
    };
    match castgate::http::auth::jwt::mint(secret, &t.role, &t.stream, t.ttl) {
        Ok(jwt) => {
            println!("{jwt}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("castgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every key of the configuration file with its default, for `--help`: the
/// file can set everything, flags and environment variables the common subset.
fn config_reference() -> String {
    let defaults = toml::to_string_pretty(&Config::default()).unwrap_or_default();
    format!(
        "Configuration file ({}, or --config FILE): every key with its default.\n\
         Precedence: defaults < file < CASTGATE_* environment < flags.\n\n{defaults}",
        castgate::config::DEFAULT_CONFIG_FILE
    )
}

/// Hides secrets before the config is printed.
fn redact(c: &mut Config) {
    let hide = |s: &mut String| *s = "<redacted>".into();
    c.auth.redact();
    for t in &mut c.restream.targets {
        // Keep scheme, host and app; hide the stream key.
        t.url = castgate::restream::TargetUrl::parse(&t.url, &[])
            .map(|u| u.masked().to_string())
            .unwrap_or_else(|_| "<redacted>".into());
    }
    for s in &mut c.rtc.ice_servers {
        if let Some(cred) = s.credential.as_mut() {
            hide(cred);
        }
    }
}
