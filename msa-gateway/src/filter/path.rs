//! What path filters share: captured variables written into a path, encoded again.

/// What a path keeps as it is: RFC 3986's unreserved characters and sub-delimiters, `:`,
/// `@` and `/`. Everything else in a capture is percent-encoded again.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/');

/// `{name}` in a path template replaced by captured variables, encoded again: a capture
/// decoded from `%3F` or `%25` stays inside its segment rather than starting a query or
/// being decoded twice upstream. A capture with a dot segment (`%2e%2e` in `{name}.txt`)
/// is refused, as it would climb out of the template; encoded slashes and backslashes
/// never reach a capture (the gateway refuses them, see `proxy::firewall`).
pub(crate) fn substitute_path(template: &str, vars: &[(String, String)]) -> Result<String, String> {
    if !template.contains('{') {
        return Ok(template.to_owned());
    }
    let mut out = template.to_owned();
    for (name, value) in vars {
        if value
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(format!("the path variable {name} is a dot segment"));
        }
        let value = percent_encoding::utf8_percent_encode(value, PATH).to_string();
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    Ok(out)
}
