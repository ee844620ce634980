//! TLS settings, compiled into ready rustls configs: the listener's
//! certificate and key, and each https upstream's trusted roots (a CA file
//! or the system's). This is the one place `plan` reads files besides the
//! config itself, so that `check` reports a missing or malformed
//! certificate at the line that names it, and a plan that exists can serve.
//!
//! The crypto provider is aws-lc-rs, passed explicitly to every config so
//! that no process-wide default (or a stray *ring* feature) decides.

use super::Compiler;
use crate::config::{RawServerTls, Sp};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN protocol ids.
const H2: &[u8] = b"h2";
const HTTP11: &[u8] = b"http/1.1";

/// The crypto provider every TLS config uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs aws-lc-rs as the process default (for libraries that ask for
/// it); harmless when one is installed already.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn resolve(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file.trim());
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .collect();
    let certs =
        certs.map_err(|e| format!("`{}` is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

impl Compiler {
    /// The listener's TLS config (ALPN: h2, then http/1.1).
    pub(super) fn server_tls(
        &mut self,
        raw: &Option<Sp<RawServerTls>>,
        base: &Path,
    ) -> Option<Arc<ServerConfig>> {
        let t = &raw.as_ref()?.value;
        let certs = read_certs(&resolve(base, &t.cert.value))
            .map_err(|e| self.error(t.cert.pos, format!("`tls.cert`: {e}")))
            .ok();
        let key_path = resolve(base, &t.key.value);
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| {
                self.error(
                    t.key.pos,
                    format!(
                        "`tls.key`: `{}` is not a readable PEM private key: {e}",
                        key_path.display()
                    ),
                )
            })
            .ok();
        let (certs, key) = (certs?, key?);
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.error(t.cert.pos, format!("TLS: {e}")))
            .ok()?
            .with_no_client_auth()
            .with_single_cert(certs, key);
        match config {
            Ok(mut c) => {
                c.alpn_protocols = vec![H2.to_vec(), HTTP11.to_vec()];
                Some(Arc::new(c))
            }
            Err(e) => {
                self.error(
                    t.key.pos,
                    format!("`tls`: the key does not fit the certificate: {e}"),
                );
                None
            }
        }
    }

    /// An https upstream's client config: its CA file's roots, or the
    /// system's. (ALPN is set by the connector: h2 only with `http2`.)
    pub(super) fn upstream_tls(
        &mut self,
        name: &str,
        ca: &Option<Sp<String>>,
        url_pos: crate::config::Pos,
        base: &Path,
    ) -> Option<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(ca) => {
                let certs = read_certs(&resolve(base, &ca.value))
                    .map_err(|e| self.error(ca.pos, format!("`ca`: {e}")))
                    .ok()?;
                let (_, ignored) = roots.add_parsable_certificates(certs);
                if ignored > 0 || roots.is_empty() {
                    self.error(
                        ca.pos,
                        format!("`ca`: {ignored} certificate(s) could not be used as roots"),
                    );
                    return None;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    self.error(
                        url_pos,
                        format!(
                            "upstream `{name}`: no system root certificates were found; set `ca`"
                        ),
                    );
                    return None;
                }
            }
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.error(url_pos, format!("TLS: {e}")))
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(Arc::new(config))
    }
}
