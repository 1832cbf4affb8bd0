//! Routes built from their definitions, and the index that finds the route for a request
//! without trying every route.

pub(crate) mod cors;
mod locator;
mod pattern;
pub(crate) mod predicate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use self::predicate::{Predicate, RequestInfo};
use crate::config::{ConfigError, GatewayConfig, RouteDefinition};
use crate::filter::Filter;

/// Where a route sends requests.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A fixed upstream: scheme and authority; `h2c` upstreams are spoken to in HTTP/2
    /// without TLS (gRPC).
    Http { base: Uri, h2c: bool },
    /// A service, through the load balancer.
    Lb(String),
    /// Dispatched again inside the gateway, on this path.
    Forward(String),
}

/// One route, ready to serve.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) id: String,
    pub(crate) target: Target,
    pub(crate) order: i32,
    pub(crate) index: usize,
    /// Position in the table (for per-route caches).
    pub(crate) slot: usize,
    pub(crate) predicates: Vec<Predicate>,
    /// Default filters, then the route's.
    pub(crate) filters: Vec<Filter>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) definition: RouteDefinition,
    /// Its requests may be forwarded with their header lines as they arrived: a plain
    /// `http://` upstream, and no filter but ones that rewrite the path or query.
    pub(crate) raw: bool,
    /// Its own CORS configuration (`metadata.cors`).
    pub(crate) cors: Option<cors::CorsConfig>,
    /// A filter of its rewrites the upstream's answer bodies.
    pub(crate) shapes_body: bool,
}

impl Route {
    /// The `host:port` of a fixed `http(s)://` upstream; empty for other targets.
    pub(crate) fn authority(&self) -> &str {
        match &self.target {
            Target::Http { base, .. } => base.authority().map_or("", |a| a.as_str()),
            _ => "",
        }
    }
}

/// All routes, indexed by the literal start of their paths.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    pub(crate) routes: Vec<Arc<Route>>,
    /// Distinguishes tables across reloads.
    pub(crate) generation: u64,
    root: Node,
    /// No route's predicates read headers (other than Host): a request can be matched
    /// without its header map.
    pub(crate) raw: bool,
    /// `globalcors.cors-configurations`.
    pub(crate) cors: cors::GlobalCors,
    /// Some CORS configuration exists (global or a route's): a request with an `Origin`
    /// is served the general way, where it is judged.
    pub(crate) any_cors: bool,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    /// Routes (indexes into `routes`) with a path pattern whose literal prefix ends here;
    /// at the root, also every route without a Path predicate.
    routes: Vec<usize>,
}

impl RouteTable {
    /// Builds every route; the first mistake is reported with its file, line and key.
    pub(crate) fn build(
        config: &GatewayConfig,
        breakers: &msa_breaker::circuit_breaker::CircuitBreakerRegistry,
        custom: &crate::filter::Filters,
        services: &[String],
    ) -> Result<Self, ConfigError> {
        let resilience = crate::filter::resilience::Resilience {
            breakers,
            retry: &config.resilience.retry,
            time_limiter: &config.resilience.time_limiter,
        };
        let mut defaults = Vec::new();
        for (n, definition) in config.default_filters.iter().enumerate() {
            defaults.push((n, definition));
        }
        let locator = &config.discovery.locator;
        let discovered = match locator.enabled {
            false => Vec::new(),
            true => locator::definitions(locator, services, config.routes.len())
                .map_err(|(key, e)| config.source.error(&format!("discovery.locator.{key}"), e))?,
        };
        let mut routes = Vec::with_capacity(config.routes.len() + discovered.len());
        for definition in config.routes.iter().chain(&discovered) {
            let at = |key: &str| definition.key(key);
            let target = target(&definition.uri).map_err(|e| config.source.error(&at("uri"), e))?;
            let mut predicates = Vec::with_capacity(definition.predicates.len());
            for (n, p) in definition.predicates.iter().enumerate() {
                predicates.push(
                    Predicate::build(p)
                        .map_err(|e| config.source.error(&at(&format!("predicates.{n}")), e))?,
                );
            }
            let globals = custom.globals();
            let mut filters =
                Vec::with_capacity(globals.len() + defaults.len() + definition.filters.len());
            filters.extend(globals.iter().cloned().map(Filter::Custom));
            for (n, f) in &defaults {
                filters.push(
                    Filter::build(f, resilience, custom, &definition.id)
                        .map_err(|e| config.source.error(&format!("default-filters.{n}"), e))?,
                );
            }
            for (n, f) in definition.filters.iter().enumerate() {
                filters.push(
                    Filter::build(f, resilience, custom, &definition.id)
                        .map_err(|e| config.source.error(&at(&format!("filters.{n}")), e))?,
                );
            }
            let millis = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
                match definition.metadata.get(key) {
                    None => Ok(default),
                    Some(value) => value
                        .as_u64()
                        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                        .map(Duration::from_millis)
                        .ok_or_else(|| {
                            config.source.error(
                                &at(&format!("metadata.{key}")),
                                "must be a number of milliseconds",
                            )
                        }),
                }
            };
            let cors = match definition.metadata.get("cors") {
                None => None,
                Some(value) => Some(cors::CorsConfig::parse(value).map_err(|(key, e)| {
                    let key = match key.is_empty() {
                        true => "metadata.cors".to_owned(),
                        false => format!("metadata.cors.{key}"),
                    };
                    config.source.error(&at(&key), e)
                })?),
            };
            let raw = matches!(&target, Target::Http { base, h2c: false }
                    if base.scheme() == Some(&http::uri::Scheme::HTTP))
                && filters.iter().all(Filter::only_rewrites_target);
            let shapes_body = filters
                .iter()
                .any(|f| matches!(f, Filter::Custom(custom) if custom.shapes_body()));
            routes.push(Route {
                raw,
                cors,
                shapes_body,
                id: definition.id.clone(),
                target,
                order: definition.order,
                index: definition.index,
                slot: 0,
                predicates,
                filters,
                connect_timeout: millis("connect-timeout", config.server.connect_timeout)?,
                response_timeout: millis("response-timeout", config.server.response_timeout)?,
                definition: definition.clone(),
            });
        }
        assign_weights(&mut routes);
        routes.sort_by_key(|r| (r.order, r.index));
        for (slot, route) in routes.iter_mut().enumerate() {
            route.slot = slot;
        }

        let mut root = Node::default();
        for (slot, route) in routes.iter().enumerate() {
            let patterns: Vec<_> = route
                .predicates
                .iter()
                .filter_map(Predicate::path_patterns)
                .collect();
            // Indexed by the first Path predicate's patterns; without one, at the root.
            match patterns.first() {
                Some(patterns) => {
                    for pattern in patterns.iter() {
                        let mut node = &mut root;
                        // Indexed at most 31 segments deep, as deep as `find` looks.
                        for segment in pattern.literal_prefix().into_iter().take(31) {
                            node = node.children.entry(segment.to_owned()).or_default();
                        }
                        if !node.routes.contains(&slot) {
                            node.routes.push(slot);
                        }
                    }
                }
                None => root.routes.push(slot),
            }
        }
        let cors = match &config.globalcors {
            None => cors::GlobalCors::default(),
            Some(value) => cors::GlobalCors::parse(value).map_err(|(key, e)| {
                let key = match key.is_empty() {
                    true => "globalcors".to_owned(),
                    false => format!("globalcors.{key}"),
                };
                config.source.error(&key, e)
            })?,
        };
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(RouteTable {
            raw: !routes
                .iter()
                .any(|r| r.predicates.iter().any(Predicate::reads_headers)),
            any_cors: !cors.is_empty() || routes.iter().any(|r| r.cors.is_some()),
            cors,
            routes: routes.into_iter().map(Arc::new).collect(),
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            root,
        })
    }

    /// The first route (by order, then file order) whose predicates all match.
    ///
    /// The candidates are the routes listed at the root and at each trie node along the
    /// request's literal path segments; each list is in slot order, so they are merged
    /// smallest-first without collecting them (nothing is allocated here).
    pub(crate) fn find(
        &self,
        info: &mut RequestInfo<'_>,
        vars: &mut Vec<(String, String)>,
    ) -> Option<&Arc<Route>> {
        const DEPTH: usize = 32;
        let mut lists: [&[usize]; DEPTH] = [&[]; DEPTH];
        lists[0] = &self.root.routes;
        let mut count = 1;
        let mut node = &self.root;
        for segment in info.path.split('/').filter(|s| !s.is_empty()) {
            if count == DEPTH {
                break;
            }
            match node.children.get(segment) {
                Some(child) => {
                    lists[count] = &child.routes;
                    count += 1;
                    node = child;
                }
                None => break,
            }
        }
        let lists = &mut lists[..count];
        loop {
            // The smallest slot at the head of any list, removed from every list having it.
            let slot = lists
                .iter()
                .filter_map(|list| list.first())
                .min()
                .copied()?;
            for list in lists.iter_mut() {
                if list.first() == Some(&slot) {
                    *list = &list[1..];
                }
            }
            let route = &self.routes[slot];
            let start = vars.len();
            if route.predicates.iter().all(|p| p.test(info, vars)) {
                return Some(route);
            }
            vars.truncate(start);
        }
    }
}

fn target(uri: &str) -> Result<Target, String> {
    if let Some(path) = uri.strip_prefix("forward:") {
        if !path.starts_with('/') {
            return Err(format!("forward:{path} must name a path starting with /"));
        }
        return Ok(Target::Forward(path.to_owned()));
    }
    if let Some(service) = uri.strip_prefix("lb://") {
        let service = service.trim_end_matches('/');
        if service.is_empty() || service.contains(['/', ':', '?']) {
            return Err(format!(
                "{uri:?}: lb:// takes a service name only (lb://orders)"
            ));
        }
        return Ok(Target::Lb(service.to_ascii_lowercase()));
    }
    let (h2c, plain) = match uri.strip_prefix("h2c://") {
        Some(rest) => (true, format!("http://{rest}")),
        None => (false, uri.to_owned()),
    };
    let parsed: Uri = plain
        .parse()
        .map_err(|e| format!("{uri:?} is not a URI: {e}"))?;
    match parsed.scheme_str() {
        Some("http" | "https") if parsed.authority().is_some() => {}
        _ => {
            return Err(format!(
                "{uri:?}: a route's uri is http(s)://host:port, h2c://host:port, lb://service or forward:/path"
            ));
        }
    }
    let mut parts = parsed.into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    Ok(Target::Http {
        base: Uri::from_parts(parts).map_err(|e| e.to_string())?,
        h2c,
    })
}

/// Gives each Weight predicate its share of its group.
fn assign_weights(routes: &mut [Route]) {
    let mut groups: Vec<(String, u32)> = Vec::new();
    for route in routes.iter() {
        for predicate in &route.predicates {
            if let Predicate::Weight { group, weight, .. } = predicate {
                match groups.iter_mut().find(|(g, _)| g == group) {
                    Some((_, total)) => *total += weight,
                    None => groups.push((group.clone(), *weight)),
                }
            }
        }
    }
    let mut used: Vec<u32> = vec![0; groups.len()];
    for route in routes.iter_mut() {
        for predicate in &mut route.predicates {
            if let Predicate::Weight {
                group,
                weight,
                group_id,
                low,
                high,
                total,
            } = predicate
            {
                let id = groups.iter().position(|(g, _)| g == group).unwrap_or(0);
                *group_id = id as u32;
                *total = groups[id].1;
                *low = used[id];
                *high = used[id] + *weight;
                used[id] = *high;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    fn breakers() -> msa_breaker::circuit_breaker::CircuitBreakerRegistry {
        msa_breaker::circuit_breaker::CircuitBreakerRegistry::new(Default::default()).unwrap()
    }

    fn table(yaml: &str) -> RouteTable {
        RouteTable::build(
            &GatewayConfig::parse("t.yaml", yaml).unwrap(),
            &breakers(),
            &Default::default(),
            &[],
        )
        .unwrap()
    }

    fn find(table: &RouteTable, path: &str) -> Option<String> {
        let headers = HeaderMap::new();
        let mut info = RequestInfo {
            method: &Method::GET,
            path,
            query: None,
            headers: &headers,
            host: Some("example.org"),
            remote: "127.0.0.1:1".parse().unwrap(),
            draws: Vec::new(),
        };
        let mut vars = Vec::new();
        table.find(&mut info, &mut vars).map(|r| r.id.clone())
    }

    #[test]
    fn order_then_file_order_and_the_index_agree_with_a_scan() {
        let t = table(
            "routes:
  - {id: catch-all, uri: 'http://127.0.0.1:1', order: 10, predicates: ['Path=/**']}
  - {id: orders, uri: 'http://127.0.0.1:1', predicates: ['Path=/api/orders/**']}
  - {id: order-by-id, uri: 'http://127.0.0.1:1', order: -1, predicates: ['Path=/api/orders/{id}']}
  - {id: host-only, uri: 'http://127.0.0.1:1', order: 5, predicates: ['Host=other.org']}
",
        );
        assert_eq!(find(&t, "/api/orders/7").as_deref(), Some("order-by-id"));
        assert_eq!(find(&t, "/api/orders/7/items").as_deref(), Some("orders"));
        assert_eq!(find(&t, "/api/orders").as_deref(), Some("orders"));
        assert_eq!(find(&t, "/elsewhere").as_deref(), Some("catch-all"));
    }

    proptest::proptest! {
        /// The index finds what trying every route in order finds.
        #[test]
        fn the_index_agrees_with_a_scan(
            routes in proptest::collection::vec(
                (proptest::collection::vec(0usize..4, 0..4), 0usize..3, -2i32..3),
                1..12,
            ),
            path in proptest::collection::vec(0usize..4, 0..5),
        ) {
            let segments = ["a", "b", "{x}", "c"];
            let tails = ["", "/**", "/{*rest}"];
            let mut yaml = String::from("routes:\n");
            for (n, (parts, tail, order)) in routes.iter().enumerate() {
                let mut pattern: String = parts.iter().map(|p| format!("/{}", segments[*p])).collect();
                pattern.push_str(tails[*tail]);
                if pattern.is_empty() {
                    pattern.push('/');
                }
                yaml.push_str(&format!(
                    "  - {{id: r{n}, uri: 'http://127.0.0.1:1', order: {order}, predicates: ['Path={pattern}']}}\n"
                ));
            }
            let table = table(&yaml);
            let request: String = if path.is_empty() {
                "/".into()
            } else {
                path.iter().map(|p| format!("/{}", ["a", "b", "z", "c"][*p])).collect()
            };
            let headers = HeaderMap::new();
            let info = || RequestInfo {
                method: &Method::GET,
                path: &request,
                query: None,
                headers: &headers,
                host: None,
                remote: "127.0.0.1:1".parse().unwrap(),
                draws: Vec::new(),
            };
            let mut vars = Vec::new();
            let indexed = table.find(&mut info(), &mut vars).map(|r| r.id.clone());
            let scanned = table
                .routes
                .iter()
                .find(|r| r.predicates.iter().all(|p| p.test(&mut info(), &mut Vec::new())))
                .map(|r| r.id.clone());
            proptest::prop_assert_eq!(indexed, scanned);
        }
    }

    #[test]
    fn weights_split_traffic() {
        fastrand::seed(3);
        let t = table(
            "routes:
  - {id: blue, uri: 'http://127.0.0.1:1', predicates: ['Path=/x', 'Weight=g, 8']}
  - {id: green, uri: 'http://127.0.0.1:1', predicates: ['Path=/x', 'Weight=g, 2']}
",
        );
        let blue = (0..1000)
            .filter(|_| find(&t, "/x").as_deref() == Some("blue"))
            .count();
        assert!((750..850).contains(&blue), "{blue}");
    }

    #[test]
    fn bad_routes_name_their_key() {
        let config = GatewayConfig::parse(
            "t.yaml",
            "routes:\n  - id: a\n    uri: http://127.0.0.1:1\n    filters:\n      - StripPrefix=x\n",
        )
        .unwrap();
        let error = RouteTable::build(&config, &breakers(), &Default::default(), &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "t.yaml:5: routes.0.filters.0: `parts` \"x\" is not a whole number"
        );
        let config =
            GatewayConfig::parse("t.yaml", "routes:\n  - id: a\n    uri: ftp://x\n").unwrap();
        assert_eq!(
            RouteTable::build(&config, &breakers(), &Default::default(), &[])
                .unwrap_err()
                .line,
            Some(3)
        );
    }
}
