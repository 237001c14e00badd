//! Sealing secret values at rest.
//!
//! With an encryption key (32 bytes, base64, `HERALD_ENCRYPTION_KEY`) values
//! are encrypted with AES-256-GCM under a random nonce; without one they are
//! stored marked as plain, so a key can be introduced later (values are
//! re-sealed on their next write) and an encrypted value is never mistaken
//! for plain text.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

const ENCRYPTED: &str = "enc:v1:";
const PLAIN: &str = "plain:";
const NONCE_BYTES: usize = 12;

/// Seals and opens secret values. Debug never shows the key.
#[derive(Clone, Default)]
pub struct SecretBox {
    cipher: Option<Aes256Gcm>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("encrypting", &self.cipher.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretBoxError {
    #[error("the encryption key must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)")]
    BadKey,
    #[error("a secret is encrypted but no encryption key is configured")]
    NoKey,
    #[error("a secret cannot be decrypted: wrong encryption key or damaged value")]
    Undecryptable,
    #[error("a stored secret has an unknown format")]
    UnknownFormat,
    #[error("no randomness available for a nonce")]
    Random,
}

impl SecretBox {
    /// Stores values unencrypted (marked `plain:`).
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// Encrypts with the base64 key.
    pub fn with_key(key_base64: &str) -> Result<Self, SecretBoxError> {
        let key = BASE64
            .decode(key_base64.trim())
            .map_err(|_| SecretBoxError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| SecretBoxError::BadKey)?;
        Ok(Self {
            cipher: Some(cipher),
        })
    }

    pub fn seal(&self, value: &str) -> Result<String, SecretBoxError> {
        let Some(cipher) = &self.cipher else {
            return Ok(format!("{PLAIN}{value}"));
        };
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|_| SecretBoxError::Random)?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), value.as_bytes())
            .map_err(|_| SecretBoxError::Undecryptable)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{ENCRYPTED}{}", BASE64.encode(bytes)))
    }

    pub fn open(&self, stored: &str) -> Result<String, SecretBoxError> {
        if let Some(plain) = stored.strip_prefix(PLAIN) {
            return Ok(plain.to_owned());
        }
        let encoded = stored
            .strip_prefix(ENCRYPTED)
            .ok_or(SecretBoxError::UnknownFormat)?;
        let cipher = self.cipher.as_ref().ok_or(SecretBoxError::NoKey)?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| SecretBoxError::Undecryptable)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SecretBoxError::Undecryptable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| SecretBoxError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| SecretBoxError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn encrypted_values_round_trip_and_hide_the_value() {
        let sealer = SecretBox::with_key(KEY).unwrap();
        let sealed = sealer.seal("Bearer s3cret").unwrap();
        assert!(sealed.starts_with("enc:v1:"));
        assert!(!sealed.contains("s3cret"));
        assert_ne!(
            sealed,
            sealer.seal("Bearer s3cret").unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(sealer.open(&sealed).unwrap(), "Bearer s3cret");
    }

    #[test]
    fn plain_values_open_with_or_without_a_key() {
        let plain = SecretBox::plaintext().seal("x").unwrap();
        assert_eq!(plain, "plain:x");
        assert_eq!(SecretBox::with_key(KEY).unwrap().open(&plain).unwrap(), "x");
    }

    #[test]
    fn wrong_or_missing_keys_are_errors() {
        let sealed = SecretBox::with_key(KEY).unwrap().seal("x").unwrap();
        assert_eq!(
            SecretBox::plaintext().open(&sealed),
            Err(SecretBoxError::NoKey)
        );
        let other = SecretBox::with_key("BwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert_eq!(other.open(&sealed), Err(SecretBoxError::Undecryptable));
        assert_eq!(
            SecretBox::with_key("short").unwrap_err(),
            SecretBoxError::BadKey
        );
        assert_eq!(
            SecretBox::plaintext().open("x"),
            Err(SecretBoxError::UnknownFormat)
        );
    }
}
