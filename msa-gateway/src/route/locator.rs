//! Routes from discovery (Spring Cloud Gateway's `discovery.locator`): for every service
//! discovery knows, a route `/<service>/**` → `lb://<service>` with the locator's
//! predicates and filters, built anew whenever the set of services changes.

use serde_json::{Map, Value};

use crate::config::{Args, Definition, LocatorConfig, RouteDefinition, RouteSource};

/// The routes for `services` (after the file's `routes`, which are `file_routes` many).
/// `Err` is the key below `discovery.locator` and what is wrong.
pub(crate) fn definitions(
    config: &LocatorConfig,
    services: &[String],
    file_routes: usize,
) -> Result<Vec<RouteDefinition>, (String, String)> {
    let predicates = templates(&config.predicates, "predicates")?;
    let filters = templates(&config.filters, "filters")?;
    let mut routes = Vec::with_capacity(services.len());
    // A name from discovery that could not be a path segment gets no route (rather than
    // stopping every route from being built): letters, digits, `.`, `-` and `_`.
    let usable = |service: &&String| {
        let fits = !service.is_empty()
            && service.len() <= 256
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !fits && msa_core::sync::first_time(&format!("msa-gateway:locator:{service}")) {
            tracing::warn!(%service, "a service name that cannot be a path segment gets no route");
        }
        fits
    };
    for (n, service) in services.iter().filter(usable).enumerate() {
        let id = match config.lower_case_service_id {
            true => service.to_ascii_lowercase(),
            false => service.clone(),
        };
        let fill = |list: &[Definition]| -> Vec<Definition> {
            list.iter()
                .map(|d| Definition {
                    name: d.name.clone(),
                    args: d.args.map_text(|text| expression(text, &id)),
                })
                .collect()
        };
        let predicates = match predicates.is_empty() {
            true => vec![named("Path", [("patterns", format!("/{id}/**"))])],
            false => fill(&predicates),
        };
        let filters = match config.filters.is_empty() {
            true => vec![named(
                "RewritePath",
                [
                    (
                        "regexp",
                        format!("/{}/?(?<remaining>.*)", regex::escape(&id)),
                    ),
                    ("replacement", "/${remaining}".to_owned()),
                ],
            )],
            false => fill(&filters),
        };
        routes.push(RouteDefinition {
            id: format!("{}{id}", config.route_id_prefix),
            // The service as discovery names it: what the balancer looks up.
            uri: format!("lb://{service}"),
            order: 0,
            predicates,
            filters,
            metadata: Map::new(),
            index: file_routes + n,
            source: RouteSource::Locator,
        });
    }
    Ok(routes)
}

/// A definition with named arguments.
fn named<const N: usize>(name: &str, args: [(&str, String); N]) -> Definition {
    Definition {
        name: name.to_owned(),
        args: Args::named(
            args.into_iter()
                .map(|(k, v)| (k.to_owned(), Value::String(v)))
                .collect(),
        ),
    }
}

fn templates(list: &[Value], kind: &str) -> Result<Vec<Definition>, (String, String)> {
    list.iter()
        .enumerate()
        .map(|(n, value)| Definition::from_value(value).map_err(|e| (format!("{kind}.{n}"), e)))
        .collect()
}

/// An argument as Spring writes the locator's: a SpEL concatenation of quoted literals and
/// `serviceId` (`'/'+serviceId+'/**'`), evaluated for `service`; any other text is kept
/// as it is.
pub(crate) fn expression(text: &str, service: &str) -> String {
    let mut out = String::new();
    let mut rest = text.trim();
    if !(rest.starts_with('\'') || rest.starts_with("serviceId")) {
        return text.to_owned();
    }
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("serviceId") {
            out.push_str(service);
            rest = after;
        } else if let Some(after) = rest.strip_prefix('\'') {
            // A literal to its closing quote; `''` is a quote.
            let mut chars = after.char_indices().peekable();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                if c != '\'' {
                    out.push(c);
                } else if chars.peek().is_some_and(|(_, next)| *next == '\'') {
                    out.push('\'');
                    chars.next();
                } else {
                    end = Some(at + 1);
                    break;
                }
            }
            let Some(end) = end else {
                return text.to_owned();
            };
            rest = &after[end..];
        } else {
            return text.to_owned();
        }
        rest = rest.trim_start();
        if rest.is_empty() {
            return out;
        }
        match rest.strip_prefix('+') {
            Some(after) => rest = after,
            None => return text.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spring_s_expressions_of_the_service_id() {
        assert_eq!(expression("'/'+serviceId+'/**'", "orders"), "/orders/**");
        assert_eq!(
            expression("'/' + serviceId + '/?(?<remaining>.*)'", "orders"),
            "/orders/?(?<remaining>.*)"
        );
        assert_eq!(expression("'it''s ' + serviceId", "x"), "it's x");
        assert_eq!(expression("/${remaining}", "x"), "/${remaining}");
        assert_eq!(
            expression("'unclosed + serviceId", "x"),
            "'unclosed + serviceId"
        );
        assert_eq!(
            expression("serviceId.toUpperCase()", "x"),
            "serviceId.toUpperCase()"
        );
    }

    #[test]
    fn names_that_cannot_be_a_path_segment_get_no_route() {
        let services = ["orders".to_owned(), "a{b}/**".to_owned(), String::new()];
        let routes = definitions(&LocatorConfig::default(), &services, 0).unwrap();
        let ids: Vec<&str> = routes.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ReactiveCompositeDiscoveryClient_orders"]);
    }

    #[test]
    fn a_route_per_service_with_spring_s_defaults() {
        let config = LocatorConfig {
            lower_case_service_id: true,
            ..LocatorConfig::default()
        };
        let routes = definitions(&config, &["ORDERS".to_owned()], 2).unwrap();
        let route = &routes[0];
        assert_eq!(route.id, "ReactiveCompositeDiscoveryClient_orders");
        assert_eq!(route.uri, "lb://ORDERS");
        assert_eq!(route.index, 2);
        assert_eq!(
            route.predicates[0].args.list("patterns", 0).unwrap(),
            ["/orders/**"]
        );
        assert_eq!(route.filters[0].name, "RewritePath");
    }
}
