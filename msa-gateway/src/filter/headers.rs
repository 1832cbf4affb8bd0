//! What header filters share: `{var}` templates, size checks and SecureHeaders' set.

use http::HeaderMap;
use http::header::HeaderValue;

/// SecureHeaders' defaults, as Spring Cloud Gateway sends them.
pub(crate) const SECURE_HEADERS: &[(&str, &str)] = &[
    ("x-xss-protection", "1 ; mode=block"),
    ("strict-transport-security", "max-age=631138519"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'self' https:; font-src 'self' https: data:; img-src 'self' https: data:; object-src 'none'; script-src https:; style-src 'self' https: 'unsafe-inline'",
    ),
    ("x-download-options", "noopen"),
    ("x-permitted-cross-domain-policies", "none"),
];

/// The first header (name or value) longer than `max` bytes, or the total when all
/// headers together are.
pub(crate) fn oversized_header(headers: &HeaderMap, max: usize) -> Option<(String, usize)> {
    oversized_field(
        headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
        max,
    )
}

/// The first header field (name and value) longer than `max` bytes, or all of them
/// together if they are, and its size.
pub(crate) fn oversized_field<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    max: usize,
) -> Option<(String, usize)> {
    let mut total = 0;
    for (name, value) in fields {
        let size = name.len() + value.len();
        if size > max {
            return Some((String::from_utf8_lossy(name).to_ascii_lowercase(), size));
        }
        total += size;
    }
    (total > max).then(|| ("(all headers)".to_owned(), total))
}

/// `{name}` in `template` replaced by captured variables.
pub(crate) fn substitute(template: &str, vars: &[(String, String)]) -> String {
    if !template.contains('{') {
        return template.to_owned();
    }
    let mut out = template.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// A header value from `template` with captured variables filled in; `None` if the
/// result is not a valid value.
pub(crate) fn expand(template: &str, vars: &[(String, String)]) -> Option<HeaderValue> {
    HeaderValue::from_str(&substitute(template, vars)).ok()
}
