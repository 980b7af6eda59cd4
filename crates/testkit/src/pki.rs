//! Certificates for TLS tests: a CA and leaf certificates signed by it, written as PEM files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A certificate authority whose key stays in memory.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as a PEM file.
    pub pem: PathBuf,
}

/// A leaf certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Ca> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).with_context(|| format!("writing {}", pem.display()))?;
        Ok(Ca { cert, key, pem })
    }

    /// A leaf certificate for `name` (also valid for localhost and 127.0.0.0/8 names),
    /// written to `dir/<name>-cert.pem` and `dir/<name>-key.pem`.
    pub fn leaf(&self, dir: &Path, name: &str) -> anyhow::Result<Leaf> {
        let mut params = CertificateParams::new(vec![name.to_owned(), "localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let leaf = Leaf {
            cert: dir.join(format!("{name}-cert.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&leaf.cert, cert.pem())?;
        std::fs::write(&leaf.key, key.serialize_pem())?;
        Ok(leaf)
    }
}
