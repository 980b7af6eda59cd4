//! Turning the key and TLS flags into what the libraries use, checked before anything is bound.
//!
//! Every problem here is a configuration error (exit 64) with a message that names the flag or
//! file at fault and never a key.

use std::path::PathBuf;

use anyhow::{bail, Context};
use switchboard_net::{
    ClusterIdentity, ClusterKeys, ClusterSecurity, ClusterTls, ServerTls, TlsFiles,
    MIN_MAX_MESSAGE_BYTES,
};

use crate::cli::{ClusterFlags, HttpFlags, KeyFlags};
use crate::keys;

/// Keys and TLS material read from the flags.
pub struct Secrets {
    /// Access keys given (for `serve`, empty means: use the data dir's generated key).
    pub access_keys: Vec<String>,
    /// Cluster keys given with --cluster-key(-file); empty means: the access keys.
    pub cluster_keys: Vec<String>,
    pub cluster_tls: Option<ClusterTls>,
    pub public_tls: Option<ServerTls>,
    pub max_message_bytes: usize,
    /// The upstream templates (their URLs may hold keys, e.g. `?code=`), if any are configured.
    pub upstream: Option<switchboard_upstream::Settings>,
}

fn pair(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
        (None, None) => Ok(None),
        _ => bail!("{what} needs both the certificate and the key"),
    }
}

/// Reads every key file and loads every certificate, so that a bad one stops the start.
pub fn read(
    keys_flags: &KeyFlags,
    cluster: Option<&ClusterFlags>,
    http: Option<&HttpFlags>,
) -> anyhow::Result<Secrets> {
    let access_keys = keys::configured(
        &keys_flags.access_keys,
        &keys_flags.access_key_files,
        "--access-key",
        "--access-key-file",
    )?;
    let mut secrets = Secrets {
        access_keys,
        cluster_keys: Vec::new(),
        cluster_tls: None,
        public_tls: None,
        max_message_bytes: switchboard_net::DEFAULT_MAX_MESSAGE_BYTES,
        upstream: None,
    };
    if let Some(cluster) = cluster {
        secrets.cluster_keys = keys::configured(
            &cluster.cluster_keys,
            &cluster.cluster_key_files,
            "--cluster-key",
            "--cluster-key-file",
        )?;
        if cluster.cluster_max_message_size < MIN_MAX_MESSAGE_BYTES {
            bail!("--cluster-max-message-size must be at least {MIN_MAX_MESSAGE_BYTES} bytes");
        }
        secrets.max_message_bytes = cluster.cluster_max_message_size;
        let given = [
            &cluster.cluster_tls_cert,
            &cluster.cluster_tls_key,
            &cluster.cluster_tls_ca,
        ];
        match given.iter().filter(|f| f.is_some()).count() {
            0 => {}
            3 => {
                let files = TlsFiles {
                    cert: cluster.cluster_tls_cert.clone().unwrap_or_default(),
                    key: cluster.cluster_tls_key.clone().unwrap_or_default(),
                    ca: cluster.cluster_tls_ca.clone(),
                };
                secrets.cluster_tls =
                    Some(ClusterTls::load(files).context("cluster TLS (--cluster-tls-*)")?);
            }
            _ => bail!(
                "mutual TLS on the cluster plane needs all three of --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca"
            ),
        }
    }
    if let Some(http) = http {
        if http.http_header_timeout == 0 || http.http_idle_timeout == 0 {
            bail!("--http-header-timeout and --http-idle-timeout must be at least 1 second");
        }
        if let Some((cert, key)) = pair(&http.tls_cert, &http.tls_key, "--tls-cert/--tls-key")? {
            let files = TlsFiles {
                cert,
                key,
                ca: None,
            };
            secrets.public_tls =
                Some(ServerTls::load(files).context("TLS (--tls-cert, --tls-key)")?);
        }
    }
    Ok(secrets)
}

impl Secrets {
    /// The keys the cluster plane uses: --cluster-key if given, else `access_keys`.
    pub fn cluster_keys<'a>(&'a self, access_keys: &'a [String]) -> &'a [String] {
        if self.cluster_keys.is_empty() {
            access_keys
        } else {
            &self.cluster_keys
        }
    }

    /// Whether the cluster plane has a key without generating one.
    pub fn has_cluster_key(&self) -> bool {
        !self.cluster_keys.is_empty() || !self.access_keys.is_empty()
    }

    /// This process's credentials on the cluster plane.
    pub fn cluster_security(
        &self,
        access_keys: &[String],
        identity: ClusterIdentity,
    ) -> anyhow::Result<ClusterSecurity> {
        let keys = ClusterKeys::new(self.cluster_keys(access_keys)).context("cluster keys")?;
        if self.cluster_keys.is_empty() && self.cluster_tls.is_none() {
            tracing::warn!(
                "the cluster plane is authenticated with the access keys, which every app server \
                 holds in its connection string: keep --cluster-listen on a private network, or \
                 set --cluster-key (or mutual TLS) to keep app servers out of it"
            );
        }
        Ok(ClusterSecurity::with(
            keys,
            identity,
            self.cluster_tls.clone(),
            self.max_message_bytes,
        ))
    }

    /// Every certificate file to watch for changes.
    pub fn tls_materials(&self) -> Vec<std::sync::Arc<switchboard_net::TlsMaterial>> {
        self.cluster_tls
            .iter()
            .map(ClusterTls::material)
            .chain(self.public_tls.iter().map(ServerTls::material))
            .collect()
    }
}

/// Reads the upstream templates: the config file's, then the flags'. `None` if there are none.
pub fn upstream(
    file: Option<&std::path::Path>,
    flags: &[String],
) -> anyhow::Result<Option<switchboard_upstream::Settings>> {
    let contents = match file {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("--upstream-config {}", path.display()))?,
        )),
        None => None,
    };
    let settings = switchboard_upstream::Settings::load(
        contents
            .as_ref()
            .map(|(name, text)| (name.as_str(), text.as_str())),
        flags,
    )?;
    if settings.is_empty() {
        if file.is_some() {
            bail!("--upstream-config: the file lists no templates");
        }
        return Ok(None);
    }
    Ok(Some(settings))
}
