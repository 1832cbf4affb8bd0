//! `{cipher}` values: encrypted in the repository, decrypted by the server.
//!
//! # Scheme
//!
//! The key file's contents (any bytes: 32 random bytes, or a long passphrase) are the input
//! keying material of HKDF-SHA256 (salt `msa-config-server`, info `cipher v1`), which gives
//! a 256-bit AES key. A value is encrypted with AES-256-GCM under a fresh random 96-bit
//! nonce, and written as lowercase hex of `01 ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16
//! bytes)`, the leading `01` naming this scheme. In a file it reads `{cipher}<hex>` (quote
//! it in YAML). GCM authenticates the text: a value altered by one bit, or encrypted under
//! another key, does not decrypt.
//!
//! A value that cannot be decrypted is served as `invalid.<key>: <n/a>`, never as its
//! cipher text, as Spring does.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use serde_json::Value;
use sha2::Sha256;

/// The prefix of encrypted values.
pub const PREFIX: &str = super::CIPHER_PREFIX;
const VERSION: u8 = 1;
const NONCE: usize = 12;

/// A value that could not be encrypted or decrypted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CipherError(String);

/// The server's key.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher")
    }
}

impl Cipher {
    /// A cipher keyed from `material` (the key file's contents).
    pub fn new(material: &[u8]) -> Result<Self, CipherError> {
        if material.iter().all(u8::is_ascii_whitespace) {
            return Err(CipherError("the key file is empty".into()));
        }
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"msa-config-server"), material)
            .expand(b"cipher v1", &mut key)
            .map_err(|e| CipherError(e.to_string()))?;
        Ok(Cipher {
            aead: Aes256Gcm::new(&key.into()),
        })
    }

    /// Encrypts `plain`, returning the hex to put after `{cipher}`.
    pub fn encrypt(&self, plain: &str) -> Result<String, CipherError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .aead
            .encrypt(&nonce, plain.as_bytes())
            .map_err(|_| CipherError("encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(hex::encode(out))
    }

    /// Decrypts the hex after `{cipher}` (the prefix itself is accepted too).
    pub fn decrypt(&self, text: &str) -> Result<String, CipherError> {
        let text = text.trim();
        let text = text.strip_prefix(PREFIX).unwrap_or(text);
        let bytes = hex::decode(text).map_err(|_| CipherError("not hex".into()))?;
        let (&version, rest) = bytes.split_first().ok_or(CipherError("empty".into()))?;
        if version != VERSION || rest.len() < NONCE + 16 {
            return Err(CipherError(
                "not a value encrypted by msa-config-server".into(),
            ));
        }
        let (nonce, sealed) = rest.split_at(NONCE);
        let plain = self
            .aead
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| {
                CipherError("does not decrypt with this key (altered, or another key)".into())
            })?;
        String::from_utf8(plain)
            .map_err(|_| CipherError("decrypts to something other than UTF-8".into()))
    }
}

/// Decrypts every `{cipher}` value of a property source in place; a value that does not
/// decrypt (or any, without a key) is replaced by `invalid.<key>: <n/a>`.
pub fn decrypt_source(cipher: Option<&Cipher>, source: &mut serde_json::Map<String, Value>) {
    if !source
        .values()
        .any(|v| v.as_str().is_some_and(|s| s.starts_with(PREFIX)))
    {
        return;
    }
    let entries = std::mem::take(source);
    for (key, value) in entries {
        match value.as_str().and_then(|s| s.strip_prefix(PREFIX)) {
            None => {
                source.insert(key, value);
            }
            Some(hex) => match cipher.map(|c| c.decrypt(hex)) {
                Some(Ok(plain)) => {
                    source.insert(key, Value::String(plain));
                }
                failed => {
                    let reason = match failed {
                        Some(Err(e)) => e.to_string(),
                        _ => "no key installed (--encrypt-key-file)".into(),
                    };
                    tracing::warn!(%key, %reason, "cannot decrypt a {{cipher}} value");
                    source.insert(format!("invalid.{key}"), Value::String("<n/a>".into()));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let cipher = Cipher::new(b"a long enough passphrase for tests").unwrap();
        let sealed = cipher.encrypt("s3cret").unwrap();
        assert_eq!(cipher.decrypt(&sealed).unwrap(), "s3cret");
        assert_eq!(
            cipher.decrypt(&format!("{PREFIX}{sealed}")).unwrap(),
            "s3cret"
        );
        assert_ne!(
            cipher.encrypt("s3cret").unwrap(),
            sealed,
            "a fresh nonce each time"
        );

        let mut tampered = hex::decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(cipher.decrypt(&hex::encode(tampered)).is_err());
        let other = Cipher::new(b"another key").unwrap();
        assert!(other.decrypt(&sealed).is_err());
        assert!(cipher.decrypt("zz").is_err());
        assert!(Cipher::new(b"  \n").is_err());
    }

    #[test]
    fn undecryptable_values_become_invalid_keys() {
        let cipher = Cipher::new(b"key").unwrap();
        let good = format!("{PREFIX}{}", cipher.encrypt("pw").unwrap());
        let mut source: serde_json::Map<String, Value> =
            serde_json::from_value(serde_json::json!({
                "db.password": good, "api.key": "{cipher}deadbeef", "plain": "x"
            }))
            .unwrap();
        decrypt_source(Some(&cipher), &mut source);
        assert_eq!(source["db.password"], "pw");
        assert_eq!(source["invalid.api.key"], "<n/a>");
        assert!(!source.contains_key("api.key"));
        assert_eq!(source["plain"], "x");
    }
}
