//! The `castgate` command: parse the command line, load the config, serve.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use std::time::Duration;

use castgate::config::{Config, LogFormat, Role, ServeArgs};
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
    let (args, check_only) = match cli.command {
        Some(Command::Serve(a)) => (a, false),
        Some(Command::CheckConfig(a)) => (a, true),
        Some(Command::Repair { files }) => {
            init_logs(LogFormat::Text);
            return repair(&files);
        }
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
    // Certificates, keys, callback and target URLs: checked where they are
    // used, before anything starts, with the same one-line errors.
    let outbound = castgate::server::outbound_policy(&config);
    let checked = match castgate::server::check(&config, &outbound) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("castgate: config error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(config.log.format);
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
    let code = match runtime.block_on(serve(config, checked, outbound, args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("castgate: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Whatever is still running (a stop that ran out of time) is abandoned.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Raises the soft limit on open files to the hard one: every HTTP
/// connection, ICE-TCP connection and recording is a descriptor, and the
/// usual soft default (1024) is below `http.max_connections`. Says so when
/// even the hard limit is lower.
fn raise_open_file_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    let limit = lim.rlim_cur;
    if !raised || limit < max_connections as u64 + 256 {
        tracing::warn!(
            open_files = limit,
            max_connections,
            "the open-file limit is low for http.max_connections: raise it (ulimit -n, \
             LimitNOFILE=) or lower http.max_connections"
        );
    }
}

/// Logs to stderr, as text or one JSON object per line; levels from `RUST_LOG`.
fn init_logs(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("castgate=info,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// Serves until SIGTERM/SIGINT, then stops cleanly within
/// `shutdown.timeout_secs`: exit 0 when everything was closed and finalized,
/// 1 when time ran out, 130 when a second signal cut the stop short. SIGHUP
/// reloads the configuration from the same sources (`args`: file, the
/// environment read at start, the same flags).
async fn serve(
    config: Config,
    checked: castgate::server::Checked,
    outbound: std::sync::Arc<castgate::outbound::OutboundPolicy>,
    args: ServeArgs,
) -> anyhow::Result<ExitCode> {
    let limit = Duration::from_secs_f64(config.shutdown.timeout_secs);
    let mut signals = Signals::new()?;
    let scheme = if config.http.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    raise_open_file_limit(config.http.max_connections);
    let server = Server::start_checked(config, checked, outbound).await?;
    println!(
        "castgate: serving on {scheme}://{} (media on UDP {})",
        server.http_addr(),
        server.engine().local_addr()
    );
    let which = loop {
        match signals.next().await {
            Signal::Stop(which) => break which,
            Signal::Reload => reload(&server, &args).await,
        }
    };
    tracing::info!(
        signal = which,
        timeout_secs = limit.as_secs_f64(),
        "shutting down"
    );
    tokio::select! {
        done = tokio::time::timeout(limit, server.shutdown()) => match done {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(_) => {
                tracing::error!(timeout_secs = limit.as_secs_f64(),
                    "shutdown did not finish in time; exiting anyway");
                Ok(ExitCode::FAILURE)
            }
        },
        which = signals.next_stop() => {
            tracing::warn!(signal = which, "second signal: exiting without finishing the stop");
            Ok(ExitCode::from(130))
        }
    }
}

/// SIGHUP: loads the config again and hands it to the server, which keeps
/// the old one whole if the new one is invalid (logged either way).
async fn reload(server: &Server, args: &ServeArgs) {
    tracing::info!("SIGHUP: reloading the configuration");
    let args = args.clone();
    let loaded = tokio::task::spawn_blocking(move || Config::load(&args)).await;
    match loaded {
        // Validation errors are reported by `reload` itself, with the key.
        Ok(Ok(config)) => {
            let _ = server.reload(config).await;
        }
        Ok(Err(e)) => server.reload_rejected(&e),
        Err(_) => server.reload_rejected(&"the configuration could not be loaded"),
    }
}

/// What a signal asks for.
enum Signal {
    /// SIGTERM or SIGINT (named): stop.
    Stop(&'static str),
    /// SIGHUP: reload the configuration.
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP, listened to from start-up on (so a signal
/// that comes while the server starts is not lost).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Waits for the next signal.
    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Signal::Stop("SIGTERM"),
                _ = self.int.recv() => Signal::Stop("SIGINT"),
                _ = self.hup.recv() => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop("ctrl-c")
        }
    }

    /// Waits for the next SIGTERM or SIGINT (a SIGHUP while stopping is ignored).
    async fn next_stop(&mut self) -> &'static str {
        loop {
            if let Signal::Stop(which) = self.next().await {
                return which;
            }
            tracing::info!("SIGHUP while stopping: ignored");
        }
    }
}

/// `castgate repair FILE…`: one line per file, exit 1 if any failed.
fn repair(files: &[std::path::PathBuf]) -> ExitCode {
    castgate::ffmpeg_log::install();
    let defaults = castgate::config::RecordConfig::default();
    let opts = castgate::record::muxer::MuxOptions {
        cluster_ms: defaults.cluster_ms,
        reserve_index_bytes: defaults.reserve_index_kib * 1024,
        h264_mp4: false,
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
    if let Err(e) = castgate::names::StreamName::parse(&t.stream.replace(['*', '?'], "x")) {
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
    if let Some(t) = c.metrics.token.as_mut() {
        hide(t);
    }
    for t in &mut c.restream.targets {
        // Keep scheme, host and app; hide the stream key.
        t.url = castgate::restream::TargetUrl::parse(&t.url, &[])
            .map(|u| u.masked().to_string())
            .unwrap_or_else(|_| "<redacted>".into());
    }
    for w in &mut c.events.webhooks {
        if let Some(s) = w.secret.as_mut() {
            hide(s);
        }
        // The URL may carry credentials in its user info or query.
        w.url = reqwest::Url::parse(&w.url)
            .map(|u| u.origin().ascii_serialization() + "/…")
            .unwrap_or_else(|_| "<redacted>".into());
    }
    if let Some(s) = c.cluster.secret.as_mut() {
        hide(s);
    }
    if let Some(u) = c.cluster.redis_url.as_mut() {
        *u = castgate::config::redact_url(u);
    }
    if let Some(s) = c.storage.secret_access_key.as_mut() {
        hide(s);
    }
    for s in &mut c.rtc.ice_servers {
        if let Some(cred) = s.credential.as_mut() {
            hide(cred);
        }
        if let Some(secret) = s.secret.as_mut() {
            hide(secret);
        }
    }
}
