//! What counts as a secret wherever configuration is listed, logged or stored: values
//! under names like `password`, `secret`, `token`, `credentials` or `key`, and the
//! password in a URL. Spring Boot's sanitizer is the model.
//!
//! ```
//! use msa_core::secrets::{is_secret_name, mask_url};
//!
//! assert!(is_secret_name("spring.datasource.password"));
//! assert!(is_secret_name("orders.api-key"));
//! assert!(!is_secret_name("orders.max-quantity"));
//! assert_eq!(mask_url("redis://app:s3cret@cache:6379"), "redis://app:******@cache:6379");
//! ```

/// What stands for a secret wherever configuration is listed.
pub const MASK: &str = "******";

/// Whether a value called `name` (a property key such as `db.password`, or an argument
/// name) is a secret: its last `.`-separated part is `key`, `keys`, `api-key` or
/// `apikey`, or the name contains `secret`, `password`, `token` or `credential`.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let last = name.rsplit('.').next().unwrap_or(&name);
    matches!(last, "keys" | "key" | "api-key" | "apikey" | "api_key")
        || ["secret", "password", "token", "credential"]
            .iter()
            .any(|word| name.contains(word))
}

/// `text` with the password of a URL in it masked (`redis://user:******@host`); anything
/// else as it is.
pub fn mask_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_owned();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => MASK.to_owned(),
    };
    format!("{scheme}://{user}{}", &rest[at..])
}

/// Whether `text` holds a URL with credentials in it.
pub fn has_url_credentials(text: &str) -> bool {
    mask_url(text) != text
}

/// Whether a secret a client sent (a token, a password, an API key) equals the expected
/// one, in time that does not depend on where they first differ, only on their lengths.
///
/// ```
/// use msa_core::secrets::same_secret;
///
/// assert!(same_secret(b"s3cret", b"s3cret"));
/// assert!(!same_secret(b"s3cret", b"s3creT"));
/// assert!(!same_secret(b"s3cret", b"s3cret!"));
/// ```
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    given.ct_eq(expected).into()
}
