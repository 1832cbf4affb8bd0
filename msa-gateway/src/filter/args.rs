//! Reading filter arguments as Spring writes them: whole numbers, statuses by number or
//! name, sizes like `5MB`, and Java's regex replacement syntax.

use http::StatusCode;

/// Java's `$\{name}` (escaped for YAML) and `${name}` replacement syntax, as the regex
/// crate writes it.
pub(crate) fn java_replacement(replacement: &str) -> String {
    replacement.replace("$\\{", "${")
}

pub(crate) fn number(text: &str, name: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|_| format!("`{name}` {text:?} is not a whole number"))
}

pub(crate) fn status(text: &str) -> Result<StatusCode, String> {
    let code = match text {
        "NOT_FOUND" => 404,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "MOVED_PERMANENTLY" => 301,
        "FOUND" => 302,
        "SEE_OTHER" => 303,
        "TEMPORARY_REDIRECT" => 307,
        "PERMANENT_REDIRECT" => 308,
        "BAD_REQUEST" => 400,
        "SERVICE_UNAVAILABLE" => 503,
        "INTERNAL_SERVER_ERROR" => 500,
        "OK" => 200,
        other => other
            .parse()
            .map_err(|_| format!("status {other:?} is not a number or a known name"))?,
    };
    StatusCode::from_u16(code).map_err(|_| format!("{code} is not an HTTP status"))
}

/// `5MB`, `512KB`, `100` (bytes), as Spring's DataSize reads them.
pub(crate) fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("size {text:?} is not like 5MB or 1024"))?;
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        other => return Err(format!("size unit {other:?} is not B, KB, MB or GB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}
