//! WebSocket through the gateway: the handshake is proxied, then the two upgraded
//! connections are joined byte for byte.

use axum::body::Body;
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};

use crate::error::error_response;

pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// Passes the upstream's answer to a WebSocket handshake on; when it is 101, joins the
/// client's and the upstream's upgraded connections until either closes (close frames and
/// their codes pass through untouched).
pub(crate) fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    mut response: Response<Body>,
) -> Response<Body> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let Some(upstream) = response
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "the upstream switched protocols without an upgrade",
        );
    };
    tokio::spawn(async move {
        match tokio::try_join!(downstream, upstream) {
            Ok((client, server)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut server = hyper_util::rt::TokioIo::new(server);
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                    tracing::debug!(%error, "WebSocket tunnel closed with an error");
                }
            }
            Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
        }
    });
    response
}
