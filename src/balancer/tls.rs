//! HTTPS on the balancer's public port: rustls with the aws-lc-rs provider (the post-quantum
//! hybrid X25519MLKEM768 key exchange first, then X25519 and the NIST curves), the certificate
//! chain and key read from PEM files, ALPN for HTTP/2 and HTTP/1.1. `herder reload-certs` (or
//! SIGHUP to the daemon) reads them again: new handshakes use the new ones, open connections go
//! on with theirs; a file that does not load leaves the old ones in place and says why.

use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::protocol::spec::TlsSpec;

/// The certificate of a balancer, re-readable.
pub struct Certs {
    pub spec: TlsSpec,
    config: RwLock<Arc<ServerConfig>>,
}

impl Certs {
    pub fn load(app: &str, spec: &TlsSpec) -> Result<Certs, String> {
        Ok(Certs { spec: spec.clone(), config: RwLock::new(config(app, spec)?) })
    }

    /// Read the files again; what was loaded, in words.
    pub fn reload(&self, app: &str) -> Result<String, String> {
        let next = config(app, &self.spec)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(format!("app `{app}`: {} loaded", self.spec.cert.display()))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn config(app: &str, spec: &TlsSpec) -> Result<Arc<ServerConfig>, String> {
    let cert_path = spec.cert.display();
    let key_path = spec.key.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&spec.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("app `{app}`: cannot read the certificate {cert_path}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("app `{app}`: {cert_path} holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&spec.key)
        .map_err(|e| format!("app `{app}`: cannot read the key {key_path}: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("app `{app}`: TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("app `{app}`: {cert_path} and {key_path} do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
