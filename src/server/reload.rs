//! Hot reload: a new config is read and compiled **fully** (plan and
//! connection pools) before it replaces the gateway being served, in one
//! atomic swap. A config that does not compile changes nothing: the old one
//! keeps serving, and the error is logged, counted
//! (`switchyard_config_reloads_total{result="error"}`) and shown by the
//! admin endpoint `GET /reload`.
//!
//! Triggers: SIGHUP and the file watch (both set up by `main`), and
//! `POST /reload` on the admin listener (`admin_endpoint`).
//!
//! The file watch polls the config file's content once a second. Polling a
//! small file costs nothing, follows symlinks and renames (editors write a
//! new file and rename it; Kubernetes ConfigMaps swap a symlink in the
//! parent directory) and needs no platform-specific notification API.
//!
//! Listener settings (`listen`, `admin_listen`, the client limits, turning
//! `tls` on or off, `h2c`) belong to
//! sockets that are already open: a reload that changes them applies the
//! rest and logs that those take a restart.

use super::{Gateway, SharedGateway};
use crate::plan::{self, LoadError};
use crate::telemetry;
use crate::upstream::{self, Body};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often the file watch looks at the config file.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How a reload ended.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// Whether the last reload put a new config in service.
    pub ok: bool,
    /// What happened, in words (the compiler's report for a failure).
    pub message: String,
    /// When it happened.
    pub at: SystemTime,
    /// Configs put in service so far, counting the first.
    pub generation: u64,
}

/// Reloads one config file into one served gateway.
pub struct Reloader {
    path: PathBuf,
    gateway: SharedGateway,
    status: Mutex<ReloadStatus>,
    /// Serialises reloads from the different triggers.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// The gateway it swaps.
    pub fn gateway(&self) -> &SharedGateway {
        &self.gateway
    }

    /// A reloader for the gateway serving `path`.
    pub fn new(path: PathBuf, gateway: SharedGateway) -> Arc<Self> {
        Arc::new(Reloader {
            path,
            gateway,
            status: Mutex::new(ReloadStatus {
                ok: true,
                message: "serving the config loaded at start".into(),
                at: SystemTime::now(),
                generation: 1,
            }),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The last reload's status.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reads, compiles and swaps in the config file; on any error the
    /// served gateway stays as it was.
    pub async fn reload(&self, trigger: &str) -> ReloadStatus {
        let _one_at_a_time = self.running.lock().await;
        let path = self.path.clone();
        let compiled = tokio::task::spawn_blocking(move || plan::load(&path)).await;
        let result = match compiled {
            Ok(Ok((plan, report))) => {
                if !report.warnings.is_empty() {
                    tracing::warn!("{}", report.to_string().trim_end());
                }
                let old = self.gateway.load();
                let restart = restart_needed(&old.plan.server, &plan.server);
                // Pools and policies are built before the swap: the first
                // request on the new config finds everything ready.
                let new = Gateway::reloaded(plan, &old);
                self.gateway.store(new);
                let mut message = format!("reloaded {} ({trigger})", self.path.display());
                if let Some(what) = restart {
                    message.push_str(&format!("; {what} take effect at the next restart"));
                }
                Ok(message)
            }
            Ok(Err(LoadError::Invalid(report))) => Err(report.to_string().trim_end().to_string()),
            Ok(Err(LoadError::Config(e))) => Err(e.to_string()),
            Err(e) => Err(format!("the reload task failed: {e}")),
        };
        let mut status = self.status();
        status.at = SystemTime::now();
        match result {
            Ok(message) => {
                tracing::info!("{message}");
                status.ok = true;
                status.generation += 1;
                status.message = message;
            }
            Err(message) => {
                tracing::error!(
                    "config reload ({trigger}) failed; the previous config keeps serving:\n{message}"
                );
                status.ok = false;
                status.message = message;
            }
        }
        telemetry::config_reloaded(status.ok);
        if let Ok(mut s) = self.status.lock() {
            *s = status.clone();
        }
        status
    }

    /// Watches the config file and reloads when its content changes.
    pub fn watch(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last = fingerprint(&self.path).await;
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = fingerprint(&self.path).await;
                if now == last || now.is_none() {
                    // Unchanged, or briefly missing while it is replaced.
                    continue;
                }
                // Let a writer that is not atomic finish before reading.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let settled = fingerprint(&self.path).await;
                if settled != now {
                    continue;
                }
                last = settled;
                self.reload("file changed").await;
            }
        })
    }
}

/// A hash of the file's content, `None` when it cannot be read.
async fn fingerprint(path: &std::path::Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = tokio::fs::read(path).await.ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// Which listener settings changed (they need a restart), if any.
fn restart_needed(old: &plan::ServerPlan, new: &plan::ServerPlan) -> Option<String> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("`listen`");
    }
    if old.admin_listen != new.admin_listen {
        changed.push("`admin_listen`");
    }
    if old.limits != new.limits {
        changed.push("the listener limits");
    }
    // A renewed certificate applies to new connections; turning TLS on or
    // off changes what the socket speaks.
    if old.h2c != new.h2c || old.tls.is_some() != new.tls.is_some() {
        changed.push("`tls` on or off, `h2c`");
    }
    (!changed.is_empty()).then(|| changed.join(", "))
}

/// `POST /reload` (reload now) and `GET /reload` (the last reload's status)
/// for the admin listener; `None` for any other path.
pub async fn admin_endpoint<B>(reloader: &Reloader, req: &Request<B>) -> Option<Response<Body>> {
    if req.uri().path() != "/reload" {
        return None;
    }
    let status = match *req.method() {
        Method::POST => reloader.reload("admin request").await,
        Method::GET | Method::HEAD => reloader.status(),
        _ => {
            let mut resp =
                Response::new(upstream::full("use POST to reload, GET for the status\n"));
            *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            return Some(resp);
        }
    };
    let at = status
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let body = json!({
        "result": if status.ok { "ok" } else { "error" },
        "message": status.message,
        "generation": status.generation,
        "at_unix": at,
    });
    let mut resp = Response::new(upstream::full(body.to_string()));
    *resp.status_mut() = if status.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Some(resp)
}
