//! Mutual TLS on the cluster plane: who is let in, and certificate reload.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use switchboard_net::{ClusterTls, ServerTls, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// Writes a leaf certificate signed by `ca` (and the CA itself) into `dir` with `prefix`.
fn leaf(dir: &Path, prefix: &str, ca: &Ca) -> TlsFiles {
    let params = CertificateParams::new(vec!["node.switchboard.test".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let path = |s: &str| -> PathBuf { dir.join(format!("{prefix}-{s}.pem")) };
    std::fs::write(path("cert"), cert.pem()).unwrap();
    std::fs::write(path("key"), key.serialize_pem()).unwrap();
    std::fs::write(path("ca"), ca.cert.pem()).unwrap();
    TlsFiles {
        cert: path("cert"),
        key: path("key"),
        ca: Some(path("ca")),
    }
}

/// A server that greets every client that completes the handshake with one byte.
async fn server(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut stream) = acceptor.accept(tcp).await {
                    let _ = stream.write_all(b"!").await;
                    let _ = stream.flush().await;
                }
            });
        }
    });
    addr
}

/// Whether a client with `config` gets the server's greeting.
async fn greeted(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let Ok(mut stream) = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await.is_ok() && &byte == b"!"
}

fn client_without_certificate(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn peers_need_a_certificate_from_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ca("cluster");
    let other = ca("other");
    let server_tls = ClusterTls::load(leaf(dir.path(), "server", &cluster)).unwrap();
    let addr = server(server_tls.server_config()).await;

    // A node of the cluster (a different certificate from the same CA; the host name it dials,
    // 127.0.0.1, is in no certificate: peers are checked by CA).
    let node = ClusterTls::load(leaf(dir.path(), "node", &cluster)).unwrap();
    assert!(
        greeted(addr, node.client_config()).await,
        "a cluster node is let in"
    );

    // No client certificate at all.
    assert!(!greeted(addr, client_without_certificate(&cluster)).await);

    // A certificate from another CA, presented by a client that trusts the cluster CA.
    let mut stranger = leaf(dir.path(), "stranger", &other);
    stranger.ca = leaf(dir.path(), "unused", &cluster).ca;
    let stranger = ClusterTls::load(stranger).unwrap();
    assert!(!greeted(addr, stranger.client_config()).await);

    // A server with a certificate from another CA is refused by a cluster node.
    let impostor = ClusterTls::load(leaf(dir.path(), "impostor", &other)).unwrap();
    let impostor_addr = server(impostor.server_config()).await;
    assert!(!greeted(impostor_addr, node.client_config()).await);
    // ... while the same setup with the right CA works (the check above is not vacuous).
    assert!(greeted(addr, node.client_config()).await);
}

#[tokio::test]
async fn certificates_and_cas_are_reloaded_when_their_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let old = ca("old");
    let new = ca("new");
    let files = leaf(dir.path(), "server", &old);
    let server_tls = ClusterTls::load(files.clone()).unwrap();
    let addr = server(server_tls.server_config()).await;
    let old_client = ClusterTls::load(leaf(dir.path(), "old-client", &old)).unwrap();
    let new_client = ClusterTls::load(leaf(dir.path(), "new-client", &new)).unwrap();
    assert!(greeted(addr, old_client.client_config()).await);
    assert!(!greeted(addr, new_client.client_config()).await);

    assert!(
        !server_tls.material().reload_if_changed().unwrap(),
        "nothing changed yet"
    );
    // Rotate the server to the new CA: certificate, key and CA files replaced.
    let rotated = leaf(dir.path(), "rotated", &new);
    for (from, to) in [
        (&rotated.cert, &files.cert),
        (&rotated.key, &files.key),
        (rotated.ca.as_ref().unwrap(), files.ca.as_ref().unwrap()),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    assert!(server_tls.material().reload_if_changed().unwrap());
    assert!(greeted(addr, new_client.client_config()).await);
    assert!(!greeted(addr, old_client.client_config()).await);

    // A broken file keeps the current material.
    std::fs::write(&files.key, "not a key").unwrap();
    assert!(server_tls.material().reload_if_changed().is_err());
    assert!(greeted(addr, new_client.client_config()).await);
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ca("cluster");
    let files = leaf(dir.path(), "n", &cluster);
    let missing = TlsFiles {
        cert: dir.path().join("absent.pem"),
        ..files.clone()
    };
    let error = ClusterTls::load(missing).unwrap_err().to_string();
    assert!(error.contains("absent.pem"), "{error}");
    let no_ca = TlsFiles {
        ca: None,
        ..files.clone()
    };
    assert!(ClusterTls::load(no_ca).is_err());
    std::fs::write(&files.key, "garbage").unwrap();
    let error = ClusterTls::load(files.clone()).unwrap_err().to_string();
    assert!(error.contains("n-key.pem"), "{error}");
    // A key that belongs to another certificate.
    let other = leaf(dir.path(), "m", &cluster);
    let mismatched = TlsFiles {
        key: other.key,
        ..files
    };
    assert!(ServerTls::load(mismatched).is_err());
}
