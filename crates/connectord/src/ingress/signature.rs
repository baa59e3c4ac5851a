//! `X-Hub-Signature-256` verification over the raw body.
//!
//! Only `sha256=` followed by exactly 64 hex digits is accepted; the legacy
//! SHA-1 `X-Hub-Signature` header is never consulted. Every configured secret
//! is tried (rotation), and each comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Invalid,
}

impl SignatureError {
    pub fn message(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing signature",
            SignatureError::Invalid => "invalid signature",
        }
    }
}

/// Which configured secret verified a delivery: the evidence a rotation
/// needs (once nothing arrives signed with `previous`, it can be dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSlot {
    Current,
    Previous,
}

impl SecretSlot {
    /// From the index [`WebhookSecrets::verify`] answers.
    pub fn from_index(i: usize) -> Self {
        if i == 0 {
            SecretSlot::Current
        } else {
            SecretSlot::Previous
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SecretSlot::Current => "current",
            SecretSlot::Previous => "previous",
        }
    }
}

/// The webhook secrets in force: the current one and, during a rotation, the previous one.
#[derive(Clone)]
pub struct WebhookSecrets {
    secrets: Vec<Vec<u8>>,
    /// An HMAC already keyed with each secret, cloned per body.
    keyed: Vec<HmacSha256>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebhookSecrets({} configured, values redacted)",
            self.secrets.len()
        )
    }
}

impl WebhookSecrets {
    pub fn new(current: impl Into<Vec<u8>>, previous: Option<Vec<u8>>) -> Self {
        let mut secrets = vec![current.into()];
        secrets.extend(previous.filter(|p| !p.is_empty()));
        let keyed = secrets.iter().map(|s| keyed(s)).collect();
        Self { secrets, keyed }
    }

    /// Verifies `header` (the value of `X-Hub-Signature-256`, if any) against `body`.
    /// Returns the index of the secret that matched (0 = current, 1 = previous).
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<usize, SignatureError> {
        let mut verifier = self.verifier();
        verifier.update(body);
        verifier.finish(header)
    }

    /// A [`Verifier`] to feed a body to as it arrives.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            macs: self.keyed.clone(),
        }
    }

    /// Signs `body` with the current secret, exactly as GitHub does.
    pub fn sign(&self, body: &[u8]) -> String {
        sign(&self.secrets[0], body)
    }
}

/// `sha256=` + lowercase hex HMAC-SHA256(secret, body).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
}

/// The HMAC of a body with every configured secret, computed as the body
/// arrives; [`Verifier::finish`] then checks the header as
/// [`WebhookSecrets::verify`] does.
pub struct Verifier {
    macs: Vec<HmacSha256>,
}

impl Verifier {
    pub fn update(&mut self, chunk: &[u8]) {
        for mac in &mut self.macs {
            mac.update(chunk);
        }
    }

    /// Checks `header` against the body fed so far. Returns the index of the
    /// secret that matched (0 = current, 1 = previous).
    pub fn finish(self, header: Option<&[u8]>) -> Result<usize, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let digest = parse_header(header).ok_or(SignatureError::Invalid)?;
        // Evaluate every secret so the time taken does not reveal which slot matched.
        let mut matched = None;
        for (i, mac) in self.macs.into_iter().enumerate() {
            let expected: [u8; 32] = mac.finalize().into_bytes().into();
            if bool::from(expected.ct_eq(&digest)) && matched.is_none() {
                matched = Some(i);
            }
        }
        matched.ok_or(SignatureError::Invalid)
    }
}

fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length")
}

fn hmac_sha256(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = keyed(secret);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn parse_header(header: &[u8]) -> Option<[u8; 32]> {
    let hex_digest = header.strip_prefix(b"sha256=")?;
    if hex_digest.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test vector.
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &str = "Hello, World!";
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::new(SECRET, None)
    }

    #[test]
    fn github_documented_vector_signs_and_verifies() {
        assert_eq!(sign(SECRET.as_bytes(), BODY.as_bytes()), SIG);
        assert_eq!(
            secrets().verify(Some(SIG.as_bytes()), BODY.as_bytes()),
            Ok(0)
        );
    }

    #[test]
    fn empty_body_vector() {
        assert_eq!(
            sign(b"secret", b""),
            "sha256=f9e66e179b6747ae54108f82f8ade8b3c25d76fd30afde6c395822c530196169"
        );
    }

    #[test]
    fn malformed_headers_are_invalid() {
        let s = secrets();
        let body = BODY.as_bytes();
        for bad in [
            "",
            "sha256=",
            "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17aa",
            "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ] {
            assert_eq!(
                s.verify(Some(bad.as_bytes()), body),
                Err(SignatureError::Invalid),
                "{bad}"
            );
        }
        assert_eq!(s.verify(None, body), Err(SignatureError::Missing));
    }

    #[test]
    fn signature_of_another_body_is_invalid() {
        assert_eq!(
            secrets().verify(Some(SIG.as_bytes()), b"Hello, World?"),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn previous_secret_is_accepted_during_rotation() {
        let s = WebhookSecrets::new("new-secret", Some(SECRET.as_bytes().to_vec()));
        assert_eq!(s.verify(Some(SIG.as_bytes()), BODY.as_bytes()), Ok(1));
        let fresh = sign(b"new-secret", BODY.as_bytes());
        assert_eq!(s.verify(Some(fresh.as_bytes()), BODY.as_bytes()), Ok(0));
    }

    #[test]
    fn a_body_fed_in_chunks_verifies_as_the_whole_body() {
        let s = WebhookSecrets::new("new-secret", Some(SECRET.as_bytes().to_vec()));
        for split in [0, 1, 5, BODY.len()] {
            let (a, b) = BODY.as_bytes().split_at(split);
            let mut v = s.verifier();
            v.update(a);
            v.update(b);
            assert_eq!(v.finish(Some(SIG.as_bytes())), Ok(1), "split at {split}");
        }
        let mut v = s.verifier();
        v.update(b"Hello, ");
        assert_eq!(v.finish(Some(SIG.as_bytes())), Err(SignatureError::Invalid));
        assert_eq!(s.verifier().finish(None), Err(SignatureError::Missing));
    }

    #[test]
    fn debug_output_hides_secret_values() {
        let s = WebhookSecrets::new("topsecretvalue", None);
        assert!(!format!("{s:?}").contains("topsecretvalue"));
    }
}
