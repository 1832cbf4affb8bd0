//! `/actuator/metrics`: the metrics of `/actuator/prometheus` under Micrometer's dotted
//! names (`http_server_requests_seconds` is `http.server.requests`), with their
//! measurements and tags, in Spring Boot's JSON.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus::proto::{MetricFamily, MetricType};
use serde_json::json;

use crate::http::error_response;

/// The most `tag` filters one request may give.
pub const MAX_TAG_FILTERS: usize = 16;

/// A Prometheus family name as Micrometer names it: unit and `_total` suffixes dropped,
/// `_` read as `.`.
///
/// ```
/// use msa_core::actuator::metrics::dotted;
///
/// assert_eq!(dotted("http_server_requests_seconds"), "http.server.requests");
/// assert_eq!(dotted("resilience4j_retry_calls_total"), "resilience4j.retry.calls");
/// ```
pub fn dotted(family: &str) -> String {
    let base = family
        .strip_suffix("_total")
        .or_else(|| family.strip_suffix("_seconds"))
        .unwrap_or(family);
    base.replace('_', ".")
}

/// `GET /actuator/metrics`: every metric's name.
pub(super) async fn names() -> Json<serde_json::Value> {
    let names: BTreeSet<String> = crate::metrics::registry()
        .gather()
        .iter()
        .map(|f| dotted(f.name()))
        .collect();
    Json(json!({ "names": names }))
}

/// `GET /actuator/metrics/{name}?tag=key:value`: the sums over the series the tags
/// select, and the tags with the values they take there.
pub(super) async fn one(
    Path(name): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (key, value) in query {
        if key != "tag" {
            continue;
        }
        if wanted.len() == MAX_TAG_FILTERS {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("at most {MAX_TAG_FILTERS} tag filters"),
            );
        }
        match value.split_once(':') {
            Some((k, v)) => wanted.push((k.to_owned(), v.to_owned())),
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("tag {value:?} is not key:value"),
                );
            }
        }
    }
    let families = crate::metrics::registry().gather();
    let Some(family) = families.iter().find(|f| dotted(f.name()) == name) else {
        return error_response(StatusCode::NOT_FOUND, format!("no metric named {name:?}"));
    };
    Json(describe(family, &name, &wanted)).into_response()
}

fn describe(family: &MetricFamily, name: &str, wanted: &[(String, String)]) -> serde_json::Value {
    let selected = family.get_metric().iter().filter(|m| {
        wanted.iter().all(|(k, v)| {
            m.get_label()
                .iter()
                .any(|l| l.name() == k && l.value() == v)
        })
    });
    let mut tags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut count, mut total, mut value) = (0.0, 0.0, 0.0);
    let mut any = false;
    for metric in selected {
        any = true;
        for label in metric.get_label() {
            if !wanted.iter().any(|(k, _)| k == label.name()) {
                tags.entry(label.name().to_owned())
                    .or_default()
                    .insert(label.value().to_owned());
            }
        }
        match family.get_field_type() {
            MetricType::COUNTER => count += metric.get_counter().get_value(),
            MetricType::GAUGE => value += metric.get_gauge().get_value(),
            MetricType::HISTOGRAM => {
                let h = metric.get_histogram();
                count += h.get_sample_count() as f64;
                total += h.get_sample_sum();
            }
            MetricType::SUMMARY => {
                let s = metric.get_summary();
                count += s.sample_count() as f64;
                total += s.sample_sum();
            }
            // msa registers no untyped metrics; one from elsewhere shows no value.
            MetricType::UNTYPED => {}
        }
    }
    let measurements = match family.get_field_type() {
        MetricType::COUNTER => json!([{ "statistic": "COUNT", "value": count }]),
        MetricType::HISTOGRAM | MetricType::SUMMARY => json!([
            { "statistic": "COUNT", "value": count },
            { "statistic": "TOTAL_TIME", "value": total },
        ]),
        _ => json!([{ "statistic": "VALUE", "value": if any { value } else { f64::NAN } }]),
    };
    let base_unit = family
        .name()
        .ends_with("_seconds")
        .then_some("seconds")
        .or_else(|| family.name().ends_with("_bytes").then_some("bytes"));
    let available: Vec<serde_json::Value> = tags
        .into_iter()
        .map(|(tag, values)| json!({ "tag": tag, "values": values }))
        .collect();
    json!({
        "name": name,
        "description": family.help(),
        "baseUnit": base_unit,
        "measurements": measurements,
        "availableTags": available,
    })
}
