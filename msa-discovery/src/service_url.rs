//! Registry URLs in every form Spring users write them, and failover between several.
//!
//! Spring's `eureka.client.service-url.defaultZone` is a comma-separated list of Eureka
//! base URLs (`http://peer1:8761/eureka/,http://peer2:8761/eureka/`). msa's clients take
//! the same text: with or without `/eureka`, with or without a trailing slash. The Eureka
//! API is at `…/eureka` and msa-registry's native watch at the root beside it, so one
//! setting serves [`Registration`](crate::registration::Registration),
//! [`EurekaDiscovery`](crate::discovery::EurekaDiscovery) and
//! [`RegistryDiscovery`](crate::discovery::RegistryDiscovery) alike.
//!
//! Calls go to the current URL; when it cannot be reached (or answers 5xx) the client moves
//! on to the next one, as Eureka's client does, and comes back round after the last.
//!
//! # Examples
//!
//! ```
//! use msa_discovery::service_url::ServiceUrls;
//!
//! let urls = ServiceUrls::parse("http://peer1:8761/eureka/, http://peer2:8761").unwrap();
//! assert_eq!(urls.eureka(), "http://peer1:8761/eureka");
//! assert_eq!(urls.root(), "http://peer1:8761");
//! urls.failed(urls.current());
//! assert_eq!(urls.eureka(), "http://peer2:8761/eureka");
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One registry: its root and its Eureka API base.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Url {
    root: String,
    eureka: String,
}

/// A list of registry URLs with a current one; cheap to clone (clones share the current
/// choice). See the [module docs](self).
#[derive(Clone)]
pub struct ServiceUrls {
    urls: Arc<[Url]>,
    current: Arc<AtomicUsize>,
}

impl fmt::Debug for ServiceUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self
            .urls
            .iter()
            .map(|u| msa_core::secrets::mask_url(&u.root))
            .collect();
        f.debug_struct("ServiceUrls")
            .field("urls", &list)
            .field("current", &self.current.load(Ordering::Relaxed))
            .finish()
    }
}

/// A registry URL that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("registry URL {url:?}: {reason}")]
pub struct BadServiceUrl {
    /// The URL as written (credentials masked).
    pub url: String,
    /// Why.
    pub reason: String,
}

impl ServiceUrls {
    /// Parses a comma-separated list of `http://` or `https://` URLs.
    pub fn parse(list: &str) -> Result<ServiceUrls, BadServiceUrl> {
        let urls: Vec<Url> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_one)
            .collect::<Result<_, _>>()?;
        if urls.is_empty() {
            return Err(BadServiceUrl {
                url: list.to_owned(),
                reason: "no URL given".into(),
            });
        }
        Ok(ServiceUrls {
            urls: urls.into(),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Like [`parse`](Self::parse) for constructors that cannot fail: a URL that does not
    /// parse is kept as written (its calls then fail, and say why).
    pub fn lenient(list: &str) -> ServiceUrls {
        ServiceUrls::parse(list).unwrap_or_else(|_| {
            let url = list.trim().trim_end_matches('/').to_owned();
            ServiceUrls {
                urls: Arc::from(vec![Url {
                    root: url.clone(),
                    eureka: url,
                }]),
                current: Arc::new(AtomicUsize::new(0)),
            }
        })
    }

    /// How many URLs there are.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Whether the list is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The index of the URL in use, to pass to [`failed`](Self::failed).
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.urls.len()
    }

    /// The registry's root (`http://host:8761`), where msa-registry's watch is.
    pub fn root(&self) -> &str {
        &self.urls[self.current()].root
    }

    /// The Eureka API base (`http://host:8761/eureka`).
    pub fn eureka(&self) -> &str {
        &self.urls[self.current()].eureka
    }

    /// Reports that URL `which` failed: the next one becomes current (unless another
    /// caller moved on already).
    pub fn failed(&self, which: usize) {
        let next = (which + 1) % self.urls.len();
        let _ = self
            .current
            .compare_exchange(which, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

fn parse_one(url: &str) -> Result<Url, BadServiceUrl> {
    let bad = |reason: &str| BadServiceUrl {
        url: msa_core::secrets::mask_url(url),
        reason: reason.to_owned(),
    };
    let parsed: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with http:// or https://")),
    }
    if parsed.authority().is_none() {
        return Err(bad("has no host"));
    }
    if parsed.query().is_some() {
        return Err(bad("must not have a query"));
    }
    let base = url.trim_end_matches('/');
    let path = parsed.path().trim_end_matches('/');
    let prefix = &base[..base.len() - path.len()];
    // `/eureka` (or `/eureka/v2`, Netflix's) ends the Eureka base; the root is before it.
    let (root_path, eureka_path) = match path.rfind("/eureka") {
        Some(at) if matches!(&path[at..], "/eureka" | "/eureka/v2") => {
            (&path[..at], path.to_owned())
        }
        _ => (path, format!("{path}/eureka")),
    };
    Ok(Url {
        root: format!("{prefix}{root_path}"),
        eureka: format!("{prefix}{eureka_path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_spring_users_write() {
        for (written, root, eureka) in [
            ("http://h:8761", "http://h:8761", "http://h:8761/eureka"),
            ("http://h:8761/", "http://h:8761", "http://h:8761/eureka"),
            (
                "http://h:8761/eureka",
                "http://h:8761",
                "http://h:8761/eureka",
            ),
            (
                "http://h:8761/eureka/",
                "http://h:8761",
                "http://h:8761/eureka",
            ),
            (
                "https://u:p@h/reg/eureka/v2/",
                "https://u:p@h/reg",
                "https://u:p@h/reg/eureka/v2",
            ),
            (
                "http://h/registry",
                "http://h/registry",
                "http://h/registry/eureka",
            ),
        ] {
            let urls = ServiceUrls::parse(written).unwrap();
            assert_eq!((urls.root(), urls.eureka()), (root, eureka), "{written}");
        }
        for bad in ["", "h:8761", "ftp://h/eureka", "http://h/eureka?x=1", " , "] {
            assert!(ServiceUrls::parse(bad).is_err(), "{bad}");
        }
        let e = ServiceUrls::parse("ftp://u:secret@h").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn failover_goes_round_and_ignores_stale_reports() {
        let urls = ServiceUrls::parse("http://a,http://b,http://c").unwrap();
        let clone = urls.clone();
        assert_eq!(urls.root(), "http://a");
        urls.failed(0);
        assert_eq!(clone.root(), "http://b");
        // A second caller that also saw `a` fail does not skip `b`.
        urls.failed(0);
        assert_eq!(urls.root(), "http://b");
        urls.failed(1);
        urls.failed(2);
        assert_eq!(urls.root(), "http://a");
    }
}
