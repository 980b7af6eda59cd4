//! TLS material and configurations (rustls with the ring provider; no OpenSSL).
//!
//! - [`ClusterTls`]: mutual TLS between nodes. Each node presents `--cluster-tls-cert`/`-key`;
//!   a peer is accepted, in either direction, when its certificate chains to `--cluster-tls-ca`.
//!   Peers are authenticated by the CA, not by host name: nodes dial each other by whatever
//!   address `--peers` or the store lists (pod IPs, service names), and the cluster token then
//!   says which node the peer is. So one certificate per node, or one for all, both work.
//! - [`ServerTls`]: server-only TLS for the public listener (`--tls-cert`, `--tls-key`).
//!
//! Certificates, keys and CAs are read from PEM files and read again when the files change
//! ([`TlsMaterial::reload_if_changed`], polled by [`watch`]): a Kubernetes Secret updated by
//! cert-manager takes effect without a restart. A file that fails to load keeps the previous
//! material in use and is reported (log and `switchboard_cluster_tls_reloads_total`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_util::sync::CancellationToken;

/// Why TLS material could not be loaded.
#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where a node's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that peers' certificates must chain to (mutual TLS only).
    pub ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The contents of the certificate, key and CA files.
type FileBytes = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// What was loaded from the files, with the bytes it came from (to notice changes).
struct Loaded {
    bytes: FileBytes,
    certified: Arc<CertifiedKey>,
    roots: Option<Arc<RootCertStore>>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// A certificate, its key and optionally a CA, kept current with their files. It is the
/// certificate resolver and the peer verifier of the configurations built from it.
pub struct TlsMaterial {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Loads the files (an error names the file and what is wrong with it).
    pub fn load(files: TlsFiles) -> Result<Arc<TlsMaterial>, TlsError> {
        let provider = provider();
        let bytes = TlsMaterial::read_all(&files)?;
        let loaded = TlsMaterial::parse(&files, &provider, bytes)?;
        Ok(Arc::new(TlsMaterial {
            files,
            provider,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    fn read_all(files: &TlsFiles) -> Result<FileBytes, TlsError> {
        Ok((
            read(&files.cert)?,
            read(&files.key)?,
            files.ca.as_deref().map(read).transpose()?,
        ))
    }

    fn parse(
        files: &TlsFiles,
        provider: &Arc<CryptoProvider>,
        bytes: FileBytes,
    ) -> Result<Loaded, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes.0)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: files.cert.clone(),
            });
        }
        let bad_key = |reason: String| TlsError::BadKey {
            path: files.key.clone(),
            reason,
        };
        let key = PrivateKeyDer::from_pem_slice(&bytes.1).map_err(|e| bad_key(e.to_string()))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad_key(e.to_string()))?;
        let certified = CertifiedKey::new(certs, signing);
        certified
            .keys_match()
            .map_err(|e| bad_key(format!("does not match the certificate: {e}")))?;
        let (roots, client_verifier) = match (&files.ca, &bytes.2) {
            (Some(path), Some(ca)) => {
                let bad_ca = |reason: String| TlsError::BadCa {
                    path: path.clone(),
                    reason,
                };
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert = cert.map_err(|e| bad_ca(e.to_string()))?;
                    roots.add(cert).map_err(|e| bad_ca(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(bad_ca("holds no PEM certificate".into()));
                }
                let roots = Arc::new(roots);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| bad_ca(e.to_string()))?;
                (Some(roots), Some(verifier))
            }
            _ => (None, None),
        };
        Ok(Loaded {
            bytes,
            certified: Arc::new(certified),
            roots,
            client_verifier,
        })
    }

    /// Reads the files again; swaps in the new material if they changed. `Ok(false)`: nothing
    /// changed. On an error the previous material stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let bytes = TlsMaterial::read_all(&self.files)?;
        if self.current.read().bytes == bytes {
            return Ok(false);
        }
        let loaded = TlsMaterial::parse(&self.files, &self.provider, bytes)?;
        *self.current.write() = Arc::new(loaded);
        Ok(true)
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current.read().clone()
    }

    fn no_ca() -> rustls::Error {
        rustls::Error::General("no CA is configured".into())
    }
}

impl ResolvesServerCert for TlsMaterial {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded().certified.clone())
    }
}

impl ResolvesClientCert for TlsMaterial {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for TlsMaterial {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; the CA may change under us.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verifier = self
            .loaded()
            .client_verifier
            .clone()
            .ok_or_else(Self::no_ca)?;
        verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for TlsMaterial {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain to the cluster CA, not the name: see the module docs.
        let roots = self.loaded().roots.clone().ok_or_else(Self::no_ca)?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        <Self as ClientCertVerifier>::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        <Self as ClientCertVerifier>::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        <Self as ClientCertVerifier>::supported_verify_schemes(self)
    }
}

/// Mutual TLS for the cluster plane: a server configuration that demands a client certificate
/// from the cluster CA, and a client configuration that presents this node's and checks the
/// peer's against the same CA. Both speak HTTP/2 only.
#[derive(Clone, Debug)]
pub struct ClusterTls {
    material: Arc<TlsMaterial>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl ClusterTls {
    /// Loads the node's certificate, key and the cluster CA (`files.ca` is required).
    pub fn load(files: TlsFiles) -> Result<ClusterTls, TlsError> {
        if files.ca.is_none() {
            return Err(TlsError::Config(
                "mutual TLS needs a CA (--cluster-tls-ca)".into(),
            ));
        }
        let material = TlsMaterial::load(files)?;
        let versions = |e: rustls::Error| TlsError::Config(e.to_string());
        let mut server = rustls::ServerConfig::builder_with_provider(material.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_client_cert_verifier(material.clone())
            .with_cert_resolver(material.clone());
        server.alpn_protocols = vec![b"h2".to_vec()];
        // No resumption: a resumed session would skip the (possibly reloaded) CA check, and
        // cluster connections are long-lived anyway.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let mut client = rustls::ClientConfig::builder_with_provider(material.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .dangerous()
            .with_custom_certificate_verifier(material.clone())
            .with_client_cert_resolver(material.clone());
        client.alpn_protocols = vec![b"h2".to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(ClusterTls {
            material,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The files behind it, for [`watch`].
    pub fn material(&self) -> Arc<TlsMaterial> {
        self.material.clone()
    }
}

/// Server-only TLS for the public HTTP listener (HTTP/1.1).
#[derive(Clone, Debug)]
pub struct ServerTls {
    material: Arc<TlsMaterial>,
    server: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Loads the certificate chain and key (`files.ca` is ignored).
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let material = TlsMaterial::load(TlsFiles { ca: None, ..files })?;
        let mut server = rustls::ServerConfig::builder_with_provider(material.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(material.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            material,
            server: Arc::new(server),
        })
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The files behind it, for [`watch`].
    pub fn material(&self) -> Arc<TlsMaterial> {
        self.material.clone()
    }
}

/// Re-reads `materials` every `every` until `cancel`, logging what changed or failed.
pub async fn watch(materials: Vec<Arc<TlsMaterial>>, every: Duration, cancel: CancellationToken) {
    crate::metrics::describe();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for material in &materials {
            let files = &material.files;
            let material = material.clone();
            let result = tokio::task::spawn_blocking(move || material.reload_if_changed()).await;
            match result {
                Ok(Ok(false)) => {}
                Ok(Ok(true)) => {
                    crate::metrics::tls_reload("ok");
                    tracing::info!(cert = %files.cert.display(), "TLS certificate files changed: reloaded");
                }
                Ok(Err(error)) => {
                    crate::metrics::tls_reload("error");
                    tracing::warn!(%error, "TLS files changed but cannot be loaded; keeping the previous ones");
                }
                Err(error) => tracing::warn!(%error, "TLS reload task failed"),
            }
        }
    }
}
