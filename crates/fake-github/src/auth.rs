//! GitHub App JWT verification and installation access tokens.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::distributions::Alphanumeric;
use rand::Rng;

/// How long an installation token lives (GitHub: one hour).
pub(crate) const TOKEN_TTL_SECS: i64 = 3600;

/// GitHub's answer to an undecodable or wrongly signed JWT.
pub(crate) const JWT_UNDECODABLE: &str = "A JSON web token could not be decoded";
const JWT_EXP_TOO_FAR: &str = "'Expiration time' claim ('exp') is too far in the future";
const JWT_EXPIRED: &str = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires";
const JWT_IAT_FUTURE: &str = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued";
const JWT_BAD_ISS: &str = "'Issuer' claim ('iss') must be an Integer";

/// The token part of `Authorization: Bearer X` or `Authorization: token X`.
pub(crate) fn credential(header: Option<&str>) -> Option<&str> {
    let header = header?.trim();
    let (scheme, value) = header.split_once(' ')?;
    let value = value.trim();
    let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    (known && !value.is_empty()).then_some(value)
}

/// Checks an App JWT the way GitHub does; the error is GitHub's message.
///
/// RS256 signature with the app's public key; `iss` equal to the app id (a
/// number or a numeric string); `exp` in the future, at most 10 minutes after
/// `iat` and at most 10 minutes from now; `iat` at most 60 s in the future.
pub(crate) fn verify_app_jwt(
    key: &DecodingKey,
    app_id: i64,
    jwt: Option<&str>,
    now: i64,
) -> Result<(), &'static str> {
    let jwt = jwt.ok_or(JWT_UNDECODABLE)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt, key, &validation)
        .map_err(|_| JWT_UNDECODABLE)?;
    let claims = data.claims;
    let iat = claims.get("iat").and_then(as_int).ok_or(JWT_IAT_FUTURE)?;
    let exp = claims.get("exp").and_then(as_int).ok_or(JWT_EXPIRED)?;
    let iss = claims.get("iss").and_then(as_int).ok_or(JWT_BAD_ISS)?;
    if iat > now + 60 {
        return Err(JWT_IAT_FUTURE);
    }
    if exp <= now {
        return Err(JWT_EXPIRED);
    }
    if exp - iat > 600 || exp > now + 600 {
        return Err(JWT_EXP_TOO_FAR);
    }
    if iss != app_id {
        return Err(JWT_UNDECODABLE);
    }
    Ok(())
}

fn as_int(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[derive(Debug)]
struct TokenInfo {
    installation_id: i64,
    expires_at: i64,
    revoked: bool,
}

/// Installation tokens issued so far.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    by_token: HashMap<String, TokenInfo>,
    issued: usize,
}

impl Tokens {
    /// Mints a token for `installation_id`; returns it and its expiry (epoch secs).
    ///
    /// The token is `ghs_` plus 72 random alphanumerics: longer than the
    /// classic 40 characters, like GitHub's newer token format.
    pub fn issue(&mut self, installation_id: i64, now: i64) -> (String, i64) {
        let random: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(72)
            .map(char::from)
            .collect();
        let token = format!("ghs_{random}");
        let expires_at = now + TOKEN_TTL_SECS;
        self.by_token.insert(
            token.clone(),
            TokenInfo {
                installation_id,
                expires_at,
                revoked: false,
            },
        );
        self.issued += 1;
        (token, expires_at)
    }

    /// The installation a live token belongs to; None if unknown or expired.
    pub fn installation_of(&self, token: &str, now: i64) -> Option<i64> {
        let info = self.by_token.get(token)?;
        (!info.revoked && now < info.expires_at).then_some(info.installation_id)
    }

    /// Makes every token issued so far answer 401 from now on.
    pub fn expire_all(&mut self) {
        for info in self.by_token.values_mut() {
            info.revoked = true;
        }
    }

    pub fn issued(&self) -> usize {
        self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_schemes() {
        assert_eq!(credential(Some("Bearer abc")), Some("abc"));
        assert_eq!(credential(Some("token abc")), Some("abc"));
        assert_eq!(credential(Some("bearer  abc ")), Some("abc"));
        assert_eq!(credential(Some("Basic abc")), None);
        assert_eq!(credential(Some("Bearer ")), None);
        assert_eq!(credential(None), None);
    }

    #[test]
    fn tokens_expire_and_revoke() {
        let mut t = Tokens::default();
        let (tok, exp) = t.issue(9, 100);
        assert!(tok.len() > 40 && tok.starts_with("ghs_"));
        assert_eq!(exp, 3700);
        assert_eq!(t.installation_of(&tok, 3699), Some(9));
        assert_eq!(t.installation_of(&tok, 3700), None);
        t.expire_all();
        assert_eq!(t.installation_of(&tok, 200), None);
        let (fresh, _) = t.issue(9, 200);
        assert_eq!(t.installation_of(&fresh, 201), Some(9));
        assert_eq!(t.issued(), 2);
    }
}
