//! The `switchyard` command line: run, check, explain, schema, demo.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard::plan::{self, LoadError, Plan};
use switchyard::server::{self, Gateway};

// A request allocates a few hundred small, short-lived blocks (headers,
// futures, JSON pieces); mimalloc serves them in a fraction of glibc
// malloc's instructions (it was about a quarter of the summary route's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc.h's `mi_option_e` values (not among the binding's named constants).
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
#[cfg(target_os = "linux")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory goes back to the OS as soon as it is freed, and arena memory is
/// committed as it is used rather than up front: about 7 MB less resident at
/// idle, and a burst of large bodies (a decompression bomb cut off at
/// `max_body`) does not stay resident. This must run before the first
/// allocation, so it is a load-time constructor.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static MIMALLOC_OPTIONS: extern "C" fn() = {
    extern "C" fn set() {
        // SAFETY: sets plain integer options, before any thread exists.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
    set
};

/// `println!` that does not panic when stdout is closed (piped into `head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that does not panic when stderr is closed.
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// The bundled demo config, so `demo` works from any directory.
const SHOP_YAML: &str = include_str!("../examples/shop.yaml");

#[derive(Parser)]
#[command(name = "switchyard", version, about = "An API aggregation gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the routes of a config file.
    Run {
        /// The config file.
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Do not reload when the config file changes (SIGHUP and
        /// `POST /reload` on the admin listener still reload).
        #[arg(long)]
        no_watch: bool,
    },
    /// Check a config file: every error with file:line:column, then warnings.
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a route's call graph: what starts at once, what waits, the critical path.
    Explain {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The route: "GET /customers/{id}/summary" or just its path.
        route: String,
    },
    /// Print the JSON Schema of the config file.
    Schema,
    /// Run the demo services and the gateway with examples/shop.yaml.
    Demo {
        /// Added latency of every demo service.
        #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
        latency: Duration,
        /// Uniform jitter added to or taken from the latency.
        #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
        jitter: Duration,
        /// Gateway config (default: the bundled examples/shop.yaml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Run only the demo services (e.g. to run the gateway in another process).
        #[arg(long)]
        upstreams_only: bool,
        /// Port of the first service (customers; the others follow); 0 picks
        /// free ports, for `--upstreams-only` next to other instances.
        #[arg(long, default_value_t = 9101)]
        base_port: u16,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            err!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "switchyard=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // One crypto provider for the process, before any TLS config exists.
    plan::install_default_provider();
    match cli.command {
        Command::Run { config, no_watch } => {
            let plan = load(&config)?;
            runtime()?.block_on(run(plan, config, !no_watch))
        }
        Command::Check { config } => check(&config),
        Command::Explain { config, route } => {
            let plan = load(&config)?;
            let Some(r) = plan.route_named(&route) else {
                let known: Vec<&str> = plan.routes.iter().map(|r| r.label.as_str()).collect();
                bail!(
                    "no route `{route}` in {}; routes: {}",
                    config.display(),
                    known.join(", ")
                );
            };
            out!("{}", plan::explain(&plan, r).trim_end());
            Ok(())
        }
        Command::Schema => {
            let schema = schemars::schema_for!(switchyard::config::RawConfig);
            out!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
        Command::Demo {
            latency,
            jitter,
            config,
            upstreams_only,
            base_port,
        } => runtime()?.block_on(demo(latency, jitter, config, upstreams_only, base_port)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Loads a config; errors are printed as the compiler reported them.
fn load(path: &std::path::Path) -> anyhow::Result<Plan> {
    match plan::load(path) {
        Ok((plan, report)) => {
            if !report.warnings.is_empty() {
                err!("{}", report.to_string().trim_end());
            }
            Ok(plan)
        }
        Err(LoadError::Invalid(report)) => {
            err!("{}", report.to_string().trim_end());
            bail!(
                "{}: {} error(s), not loaded",
                report.file,
                report.errors.len()
            )
        }
        Err(LoadError::Config(e)) => {
            err!("{e}");
            bail!("{}: not loaded", path.display())
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let plan = load(path)?;
    out!(
        "{}: ok ({} upstream(s), {} route(s))",
        path.display(),
        plan.upstreams.len(),
        plan.routes.len()
    );
    Ok(())
}

async fn run(plan: Plan, config: PathBuf, watch: bool) -> anyhow::Result<()> {
    let (listen, admin_listen) = (plan.server.listen, plan.server.admin_listen);
    let gw = Gateway::try_new(plan)?;
    let shared: server::SharedGateway = Arc::new(arc_swap::ArcSwap::new(gw));
    let reloader = server::reload::Reloader::new(config, shared.clone());
    let admin = tokio::net::TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("cannot listen on {admin_listen} (admin)"))?;
    let admin = switchyard::admin::serve_with_reload(admin, reloader.clone())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let gateway = server::serve_shared(shared.clone(), listener)?;
    if watch {
        reloader.clone().watch();
    }
    reload_on_sighup(reloader);
    tracing::info!(addr = %gateway.addr(), admin = %admin.addr(), "switchyard listening");
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    stop(gateway, admin, shared.load_full()).await;
    Ok(())
}

/// Binds the admin and gateway listeners of a plan. The admin listener comes
/// first, so `/readyz` says "starting" until the gateway's port is bound.
async fn start(
    plan: Plan,
) -> anyhow::Result<(server::RunningServer, server::RunningServer, Arc<Gateway>)> {
    let (listen, admin_listen) = (plan.server.listen, plan.server.admin_listen);
    let gw = Gateway::try_new(plan)?;
    let admin = tokio::net::TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("cannot listen on {admin_listen} (admin)"))?;
    let admin = switchyard::admin::serve_gateway(admin, gw.clone())?;
    let gateway = server::bind(gw.clone(), listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    Ok((gateway, admin, gw))
}

/// Drains the gateway (readiness turns "draining" at once), stops the admin
/// listener, and flushes spans still waiting for export.
async fn stop(gateway: server::RunningServer, admin: server::RunningServer, gw: Arc<Gateway>) {
    gateway.shutdown().await;
    admin.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || gw.telemetry.shutdown()).await;
}

/// SIGHUP reloads the config (Unix only).
fn reload_on_sighup(reloader: std::sync::Arc<server::reload::Reloader>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload through the admin endpoint");
            return;
        };
        while hup.recv().await.is_some() {
            reloader.reload("SIGHUP").await;
        }
    });
    #[cfg(not(unix))]
    let _ = reloader;
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
    let _ = ctrl_c.await;
}

async fn demo(
    latency: Duration,
    jitter: Duration,
    config: Option<PathBuf>,
    upstreams_only: bool,
    base_port: u16,
) -> anyhow::Result<()> {
    let opts = switchyard::demo::DemoOptions {
        latency,
        jitter,
        base_port,
        ..Default::default()
    };
    let services = switchyard::demo::start(opts).await.with_context(|| {
        format!(
            "cannot start the demo services (are ports {base_port}-{} free?)",
            base_port.saturating_add(3)
        )
    })?;
    out!(
        "demo services: customers http://{}  orders http://{}  shipping http://{}  products http://{}  (latency {}, jitter {})",
        services.customers,
        services.orders,
        services.shipping,
        services.products,
        humantime::format_duration(latency),
        humantime::format_duration(jitter)
    );
    if upstreams_only {
        shutdown_signal().await;
        services.shutdown().await;
        return Ok(());
    }
    let plan = match &config {
        Some(path) => load(path)?,
        None => match plan::compile_str("examples/shop.yaml", SHOP_YAML) {
            Ok((plan, _)) => plan,
            Err(e) => bail!("the bundled config does not compile: {e}"),
        },
    };
    let (running, admin, gw) = start(plan).await?;
    let base = format!("http://{}", running.addr());
    out!("gateway: {base}  — try:");
    out!("  curl -i {base}/customers/42/summary");
    out!("  curl -i {base}/customers/42/products");
    out!("  curl -i {base}/orders/1");
    out!("  curl -i {base}/customers/42");
    out!("  curl -i {base}/catalog/7");
    out!(
        "metrics: http://{0}/metrics  dashboard: http://{0}/dashboard",
        admin.addr()
    );
    out!("press Ctrl-C to stop");
    shutdown_signal().await;
    stop(running, admin, gw).await;
    services.shutdown().await;
    Ok(())
}
