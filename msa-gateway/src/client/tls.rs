//! TLS to upstreams: which roots verify them, and the handshake.

use std::sync::Arc;
use std::time::Duration;

use msa_core::BoxError;
use rustls::pki_types::ServerName;

/// The TLS settings for `https://` upstreams: the public web's and the system's roots, and
/// the certificates in `server.upstream-ca-file` (PEM) too, if given; with
/// `server.upstream-certificate`, the client certificate upstreams that ask get (msa_core's
/// one TLS configuration). No ALPN: the pool chooses HTTP/2 itself. `Err` is the key and
/// what is wrong.
pub(crate) fn tls_config(
    server: &crate::config::ServerConfig,
) -> Result<rustls::ClientConfig, (&'static str, String)> {
    let mut tls = msa_core::tls::ClientTls::default();
    if let Some(file) = &server.upstream_ca_file {
        tls = tls.trust_certificate(file);
    }
    match (
        &server.upstream_certificate,
        &server.upstream_certificate_private_key,
    ) {
        (Some(certificate), Some(key)) => tls = tls.identity(certificate, key),
        (None, None) => {}
        (Some(_), None) => {
            return Err((
                "server.upstream-certificate-private-key",
                "the upstream certificate needs its key".into(),
            ));
        }
        (None, Some(_)) => {
            return Err((
                "server.upstream-certificate",
                "the key needs its certificate".into(),
            ));
        }
    }
    let key = match server.upstream_certificate.is_some() {
        true => "server.upstream-certificate",
        false => "server.upstream-ca-file",
    };
    let mut config = tls.config().map_err(|e| (key, e.to_string()))?;
    config.alpn_protocols.clear();
    Ok(config)
}

/// The name an upstream's certificate is checked against, and the address to connect to
/// (port 443 when `authority` has none).
pub(crate) fn server_name(authority: &str) -> Result<(ServerName<'static>, String), BoxError> {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))?;
    let address = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    Ok((name, address))
}

/// The TLS handshake on `stream`, within `timeout`.
pub(crate) async fn handshake(
    stream: tokio::net::TcpStream,
    name: ServerName<'static>,
    authority: &str,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, BoxError> {
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let stream = tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| {
            format!("the TLS handshake with {authority} took longer than {timeout:?}")
        })??;
    Ok(stream)
}
