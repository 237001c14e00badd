//! API keys of the gRPC API: the token format, how tokens are hashed for
//! storage, and the scopes a key grants.
//!
//! A token is `hrk_` followed by 32 random bytes in unpadded base64url (47
//! characters). Herald stores only its SHA-256 and a short display prefix. A
//! fast hash is right here, unlike for passwords: the token carries 256 bits
//! of entropy, so nobody can guess it from its hash however fast the hash
//! is, while a slow hash (argon2, bcrypt) would add milliseconds to every
//! call.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use sha2::{Digest, Sha256};

use crate::name::Tenant;
use crate::webhook::ValidationError;

/// Prefix of every generated token ("Herald key"), so that leaked tokens are
/// recognisable (secret scanners, logs) and not confused with other secrets.
pub const TOKEN_PREFIX: &str = "hrk_";
/// Random bytes in a generated token.
const TOKEN_BYTES: usize = 32;
/// Length of a generated token: the prefix and unpadded base64 of 32 bytes.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;
/// Characters of the token kept for display (prefix included): enough to
/// tell keys apart in a listing, far too few to matter for guessing the rest.
const DISPLAY_PREFIX_LEN: usize = TOKEN_PREFIX.len() + 8;
/// Longest key name accepted.
pub const MAX_KEY_NAME_LEN: usize = 200;

/// What a key may do. `Admin` implies `Read` and `Fire`; `Read` and `Fire`
/// are independent of each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `Ingest.Fire`.
    Fire,
    /// `Ingest.ListEvents` and the Admin API's read calls.
    Read,
    /// Everything, including webhook changes and API keys.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Fire, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Fire => "fire",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Fire => 1,
            Scope::Read => 2,
            Scope::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The set of scopes a key was given.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope (what the bootstrap admin key and disabled auth get).
    pub fn all() -> Scopes {
        Scope::ALL.into_iter().collect()
    }

    /// Parses scope names (`fire`, `read`, `admin`); at least one is
    /// required, repeats are harmless.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, ValidationError> {
        if names.is_empty() {
            return Err(ValidationError::new(
                "scopes",
                "at least one is required: fire, read or admin",
            ));
        }
        names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                Scope::parse(name).ok_or_else(|| {
                    ValidationError::new(
                        "scopes",
                        format!("{name:?} is not a scope; use fire, read or admin"),
                    )
                })
            })
            .collect()
    }

    /// The scopes as given (not expanded), in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .map(Scope::as_str)
            .collect()
    }

    /// Whether a key with these scopes may do what `needed` protects.
    pub fn grants(self, needed: Scope) -> bool {
        self.0 & (needed.bit() | Scope::Admin.bit()) != 0
    }

    /// Whether everything `self` grants is granted by `other` as well.
    pub fn within(self, other: Scopes) -> bool {
        Scope::ALL
            .into_iter()
            .filter(|s| self.grants(*s))
            .all(|s| other.grants(s))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the operating system's random number generator failed")]
    Random,
}

/// A freshly generated token. Exists only until it was handed to the caller
/// once; Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}…)", display_prefix(&self.0))
    }
}

impl ApiToken {
    pub fn generate() -> Result<ApiToken, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| TokenError::Random)?;
        Ok(ApiToken(format!(
            "{TOKEN_PREFIX}{}",
            BASE64URL.encode(bytes)
        )))
    }

    /// The token itself, for the one answer that returns it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    pub fn display_prefix(&self) -> String {
        display_prefix(&self.0)
    }
}

/// What may be shown of a presented token: the display prefix of a token in
/// Herald's format (as `ListApiKeys` shows it), and nothing of anything else,
/// which might be some other secret sent by mistake.
pub fn display_prefix(token: &str) -> String {
    if looks_like_token(token) {
        token[..DISPLAY_PREFIX_LEN].to_owned()
    } else {
        String::new()
    }
}

/// Whether `token` has the shape of a generated token.
pub fn looks_like_token(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of a token: what is stored and looked up instead of the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Compares without an early exit, for the one comparison that is not a
    /// hash-table look-up (the bootstrap admin key).
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<TokenHash> {
        bytes.try_into().ok().map(TokenHash)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(…)")
    }
}

/// Shortest bootstrap admin key accepted from configuration. It is compared
/// against its hash in memory only, so only online guessing could find it;
/// sixteen characters still rule out the short words people type by hand.
pub const MIN_BOOTSTRAP_KEY_LEN: usize = 16;

/// Checks an operator-chosen bootstrap admin key.
pub fn validate_bootstrap_key(key: &str) -> Result<(), ValidationError> {
    if key.len() < MIN_BOOTSTRAP_KEY_LEN {
        return Err(ValidationError::new(
            "admin_key",
            format!(
                "is {} characters long; use at least {MIN_BOOTSTRAP_KEY_LEN} random characters \
                 (e.g. `openssl rand -hex 32`)",
                key.len()
            ),
        ));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(
            "admin_key",
            "contains whitespace or control characters, which an HTTP header cannot carry",
        ));
    }
    Ok(())
}

/// A key as requested by `CreateApiKey`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Scopes,
    /// `None`: every tenant; `Some("")`: the default tenant only.
    pub tenant: Option<String>,
}

impl NewApiKey {
    pub fn validate<S: AsRef<str>>(
        name: &str,
        scopes: &[S],
        tenant: Option<&str>,
    ) -> Result<NewApiKey, ValidationError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ValidationError::new(
                "name",
                "is required: say who or what uses the key, e.g. \"shop-1 back-end\"",
            ));
        }
        if name.len() > MAX_KEY_NAME_LEN {
            return Err(ValidationError::new(
                "name",
                format!(
                    "is {} bytes long; at most {MAX_KEY_NAME_LEN} are allowed",
                    name.len()
                ),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ValidationError::new("name", "contains control characters"));
        }
        let tenant = tenant.map(Tenant::parse).transpose()?;
        Ok(NewApiKey {
            name: name.to_owned(),
            scopes: Scopes::parse(scopes)?,
            tenant: tenant.map(Tenant::into_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let a = ApiToken::generate().unwrap();
        let b = ApiToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_LEN);
        assert!(looks_like_token(a.expose()));
        assert_eq!(a.display_prefix(), &a.expose()[..12]);
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash(), TokenHash::of(a.expose()));
        let debug = format!("{a:?} {:?}", a.hash());
        assert!(!debug.contains(&a.expose()[12..]), "{debug}");
    }

    #[test]
    fn display_prefix_shows_nothing_of_foreign_secrets() {
        assert_eq!(display_prefix("Bearer something-else"), "");
        assert_eq!(display_prefix("hrk_short"), "");
        let token = format!("hrk_{}", "A".repeat(43));
        assert_eq!(display_prefix(&token), "hrk_AAAAAAAA");
        let wrong = format!("hrk_{}", "!".repeat(43));
        assert_eq!(display_prefix(&wrong), "");
    }

    #[test]
    fn hashes_compare_in_constant_time_correctly() {
        let a = TokenHash::of("a");
        assert!(a.ct_eq(&TokenHash::of("a")));
        assert!(!a.ct_eq(&TokenHash::of("b")));
        assert_eq!(TokenHash::from_slice(&a.0), Some(a));
        assert_eq!(TokenHash::from_slice(&[1, 2]), None);
        // SHA-256 of "abc", to pin the algorithm.
        assert_eq!(
            TokenHash::of("abc").0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256"
        );
    }

    #[test]
    fn admin_implies_everything_and_read_is_not_fire() {
        let admin = Scopes::parse(&["admin"]).unwrap();
        assert!(Scope::ALL.iter().all(|s| admin.grants(*s)));
        let read = Scopes::parse(&["read"]).unwrap();
        assert!(read.grants(Scope::Read));
        assert!(!read.grants(Scope::Fire));
        assert!(!read.grants(Scope::Admin));
        let fire = Scopes::parse(&["fire", "fire"]).unwrap();
        assert!(fire.grants(Scope::Fire) && !fire.grants(Scope::Read));
        assert_eq!(fire.names(), ["fire"]);
        assert_eq!(
            Scopes::parse(&["read", "fire"]).unwrap().to_string(),
            "fire,read"
        );
        assert_eq!(
            Scopes::all(),
            Scopes::parse(&["admin", "read", "fire"]).unwrap()
        );
    }

    #[test]
    fn scope_subsets() {
        let admin = Scopes::parse(&["admin"]).unwrap();
        let fire_read = Scopes::parse(&["fire", "read"]).unwrap();
        let read = Scopes::parse(&["read"]).unwrap();
        assert!(fire_read.within(admin));
        assert!(read.within(fire_read));
        assert!(!admin.within(fire_read));
        assert!(!fire_read.within(read));
        assert!(admin.within(Scopes::all()));
    }

    #[test]
    fn scope_names_are_checked() {
        let empty: [&str; 0] = [];
        assert_eq!(Scopes::parse(&empty).unwrap_err().field, "scopes");
        let err = Scopes::parse(&["fire", "write"]).unwrap_err();
        assert!(err.message.contains("\"write\""), "{err}");
    }

    #[test]
    fn new_keys_are_validated() {
        let key = NewApiKey::validate(" shop-1 ", &["fire"], Some("shop-1")).unwrap();
        assert_eq!(key.name, "shop-1");
        assert_eq!(key.tenant.as_deref(), Some("shop-1"));
        assert_eq!(
            NewApiKey::validate("", &["fire"], None).unwrap_err().field,
            "name"
        );
        assert_eq!(
            NewApiKey::validate("x", &["fire"], Some("bad tenant"))
                .unwrap_err()
                .field,
            "tenant"
        );
        assert!(
            NewApiKey::validate("x", &["read"], Some(""))
                .unwrap()
                .tenant
                .is_some_and(|t| t.is_empty()),
            "the default tenant is a tenant of its own"
        );
    }

    #[test]
    fn bootstrap_keys_must_be_long_enough() {
        assert!(validate_bootstrap_key("short").is_err());
        assert!(validate_bootstrap_key("0123456789abcdef").is_ok());
        assert!(validate_bootstrap_key("0123456789abcdef \n").is_err());
    }
}
