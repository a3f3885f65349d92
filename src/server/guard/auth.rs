//! Access tokens: JSON Web Tokens (RFC 7519) signed with HMAC-SHA256
//! (`HS256`, RFC 7518 §3.2), the one algorithm tickwire accepts.
//!
//! A token is `base64url(header) "." base64url(claims) "." base64url(mac)`.
//! [`Verifier::verify`] checks, in this order: three parts, a header that
//! says `"alg":"HS256"` (so `none` and every other algorithm are refused
//! before any MAC is computed), the MAC in constant time
//! (`hmac::Mac::verify_slice`), then the claims: `exp` is required and
//! must be in the future, `nbf` (optional) must be in the past, and
//! `symbols` (optional) lists the symbols the holder may subscribe to.
//! Times are whole seconds since the Unix epoch, with no leeway.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde::Deserialize;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Shortest secret accepted: RFC 7518 §3.2 wants a key at least as long as
/// the hash output.
pub const MIN_SECRET_BYTES: usize = 32;

/// The HMAC key tokens are signed with. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Why a secret cannot be used. Each message is whole (it goes into the
/// configuration's list of problems as it is), so none has a source.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the auth secret is {0} bytes; HS256 needs at least {MIN_SECRET_BYTES}")]
    TooShort(usize),
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: the auth secret is {len} bytes; HS256 needs at least {MIN_SECRET_BYTES}", path.display())]
    TooShortInFile { path: PathBuf, len: usize },
}

impl Secret {
    /// A secret from its text, without surrounding whitespace (a trailing
    /// newline in a file or an environment variable is not part of it).
    pub fn new(text: &[u8]) -> Result<Secret, SecretError> {
        let trimmed = text.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort(trimmed.len()));
        }
        Ok(Secret(trimmed.to_vec()))
    }

    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let text = std::fs::read(path).map_err(|error| SecretError::Read {
            path: path.to_owned(),
            error,
        })?;
        Secret::new(&text).map_err(|e| match e {
            SecretError::TooShort(len) => SecretError::TooShortInFile {
                path: path.to_owned(),
                len,
            },
            other => other,
        })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

/// Why a token was refused. Each has a metric label
/// (`tickwire_auth_rejections_total{reason=...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[repr(usize)]
pub enum AuthError {
    #[error("no access token: send Authorization: Bearer <token> or ?access_token=<token>")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not HS256")]
    Algorithm,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has no valid exp claim, or a mistyped nbf or symbols claim")]
    Claims,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
}

impl AuthError {
    pub const ALL: [AuthError; 7] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::Algorithm,
        AuthError::Signature,
        AuthError::Claims,
        AuthError::Expired,
        AuthError::NotYetValid,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        crate::metrics::AUTH_REJECTION_REASONS[crate::metrics::Labelled::index(self)]
    }
}

impl crate::metrics::Labelled for AuthError {
    fn index(self) -> usize {
        self as usize
    }
}

/// What a valid token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The symbols the holder may subscribe to; None for every symbol.
    pub symbols: Option<HashSet<String>>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    /// RFC 7515 §4.1.11: extensions the recipient must understand. We
    /// understand none.
    crit: Option<serde::de::IgnoredAny>,
}

/// The registered claims we read, as numbers of any JSON type so that a
/// mistyped one is reported as such.
#[derive(Deserialize)]
struct RawClaims {
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    symbols: Option<serde_json::Value>,
}

/// A NumericDate: seconds, possibly fractional, not negative.
fn numeric_date(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks tokens against one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    secret: Secret,
}

impl Verifier {
    pub fn new(secret: Secret) -> Verifier {
        Verifier { secret }
    }

    /// Verifies `token` at time `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| AuthError::Malformed);
        let h: Header =
            serde_json::from_slice(&decode(header)?).map_err(|_| AuthError::Malformed)?;
        if h.alg != "HS256" || h.crit.is_some() {
            return Err(AuthError::Algorithm);
        }
        let signed_len = header.len() + 1 + claims.len();
        let mut m = self.secret.mac();
        m.update(&token.as_bytes()[..signed_len]);
        m.verify_slice(&decode(mac)?)
            .map_err(|_| AuthError::Signature)?;
        let c: RawClaims =
            serde_json::from_slice(&decode(claims)?).map_err(|_| AuthError::Malformed)?;
        let exp = c
            .exp
            .as_ref()
            .and_then(numeric_date)
            .ok_or(AuthError::Claims)?;
        let nbf = match &c.nbf {
            None => None,
            Some(v) => Some(numeric_date(v).ok_or(AuthError::Claims)?),
        };
        let symbols = match &c.symbols {
            None => None,
            Some(v) => {
                let list = v.as_array().ok_or(AuthError::Claims)?;
                let mut names = HashSet::with_capacity(list.len());
                for s in list {
                    names.insert(s.as_str().ok_or(AuthError::Claims)?.to_owned());
                }
                (!names.contains("*")).then_some(names)
            }
        };
        // RFC 7519 §4.1.4: not accepted "on or after" the expiry.
        if now >= exp {
            return Err(AuthError::Expired);
        }
        if nbf.is_some_and(|nbf| now < nbf) {
            return Err(AuthError::NotYetValid);
        }
        Ok(Claims { exp, symbols })
    }
}

/// Signs a token with `claims` (a JSON object) for `tickwire token` and
/// for operators' scripts.
pub fn sign(secret: &Secret, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut m = secret.mac();
    m.update(header.as_bytes());
    m.update(b".");
    m.update(payload.as_bytes());
    let mac = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{header}.{payload}.{mac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier::new(Secret::new(&[b'k'; 32]).unwrap())
    }

    fn token(header: &str, claims: &str, secret: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let c = URL_SAFE_NO_PAD.encode(claims);
        let mut m = HmacSha256::new_from_slice(secret).unwrap();
        m.update(format!("{h}.{c}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        format!("{h}.{c}.{s}")
    }

    #[test]
    fn rfc_7515_appendix_a1_example() {
        // The HS256 example of RFC 7515 A.1, with its JWK key.
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let v = Verifier::new(Secret::new(&key).unwrap());
        let t = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(v.verify(t, 1_300_819_379).unwrap().exp, 1_300_819_380);
        assert_eq!(v.verify(t, 1_300_819_380), Err(AuthError::Expired));
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let v = verifier();
        let k = [b'k'; 32];
        let hs = r#"{"alg":"HS256"}"#;
        // TC0: good, with and without a symbol restriction.
        let ok = v.verify(&token(hs, r#"{"exp":100}"#, &k), 99).unwrap();
        assert_eq!(ok.symbols, None);
        let ok = v
            .verify(&token(hs, r#"{"exp":100,"symbols":["A","B"]}"#, &k), 99)
            .unwrap();
        assert_eq!(ok.symbols.unwrap().len(), 2);
        let star = v
            .verify(&token(hs, r#"{"exp":100,"symbols":["*"]}"#, &k), 99)
            .unwrap();
        assert_eq!(star.symbols, None);
        // TC1: signed with another key.
        let other = token(hs, r#"{"exp":100}"#, &[b'x'; 32]);
        assert_eq!(v.verify(&other, 99), Err(AuthError::Signature));
        // TC2: alg none (empty signature) and other algorithms.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"exp":100}"#)
        );
        assert_eq!(v.verify(&none, 99), Err(AuthError::Algorithm));
        let rs = token(r#"{"alg":"RS256"}"#, r#"{"exp":100}"#, &k);
        assert_eq!(v.verify(&rs, 99), Err(AuthError::Algorithm));
        let crit = token(r#"{"alg":"HS256","crit":["x"]}"#, r#"{"exp":100}"#, &k);
        assert_eq!(v.verify(&crit, 99), Err(AuthError::Algorithm));
        // TC3: expiry and not-before, on the boundaries.
        let t = token(hs, r#"{"exp":100,"nbf":50}"#, &k);
        assert_eq!(v.verify(&t, 100), Err(AuthError::Expired));
        assert_eq!(v.verify(&t, 49), Err(AuthError::NotYetValid));
        assert!(v.verify(&t, 50).is_ok());
        // TC4: missing or mistyped claims.
        for claims in [
            r#"{}"#,
            r#"{"exp":"100"}"#,
            r#"{"exp":-1}"#,
            r#"{"exp":100,"nbf":"x"}"#,
            r#"{"exp":100,"symbols":"A"}"#,
            r#"{"exp":100,"symbols":[1]}"#,
        ] {
            assert_eq!(
                v.verify(&token(hs, claims, &k), 99),
                Err(AuthError::Claims),
                "{claims}"
            );
        }
        // TC5: not a JWT.
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30.",
            "bm90IGpzb24.e30.AA",
        ] {
            assert!(
                matches!(
                    v.verify(bad, 99),
                    Err(AuthError::Malformed | AuthError::Algorithm)
                ),
                "{bad}"
            );
        }
        let not_json = token(hs, "not json", &k);
        assert_eq!(v.verify(&not_json, 99), Err(AuthError::Malformed));
    }

    #[test]
    fn sign_round_trips_and_secrets_are_redacted() {
        let s = Secret::new(b"  0123456789abcdef0123456789abcdef\n").unwrap();
        let t = sign(&s, &serde_json::json!({"exp": 10, "symbols": ["X"]}));
        let c = Verifier::new(s.clone()).verify(&t, 9).unwrap();
        assert_eq!(c.exp, 10);
        assert!(!format!("{s:?}").contains("0123"));
        assert!(Secret::new(b"short").is_err());
    }
}
