//! DSSE envelopes signed with Ed25519: the signature covers the payload
//! type and the payload together (the "pre-authentication encoding"), so
//! neither can be swapped without breaking it.
//!
//! Keys are PEM files: the private key PKCS#8 (`helix-build keygen` writes
//! it readable by its owner only), the public key SubjectPublicKeyInfo,
//! as `openssl pkey` reads and writes them. A key's id is the SHA-256 of
//! its public key, so a verifier can tell "signed by another key" from
//! "altered after signing".

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";

/// A signed payload (DSSE v1 JSON envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    /// The payload, base64.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvelopeSignature {
    pub keyid: String,
    /// The Ed25519 signature of the pre-authentication encoding, base64.
    pub sig: String,
}

/// Why an envelope did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("it is signed by another key ({found}), not by the key given ({expected})")]
    OtherKey { found: String, expected: String },
    #[error(
        "its signature does not match its content: the attestation was altered after it was signed"
    )]
    Altered,
    #[error("it is not a well-formed DSSE envelope: {0}")]
    Malformed(String),
}

/// DSSE's pre-authentication encoding of `payload` of type `kind`.
fn pae(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut encoded = format!("DSSEv1 {} {kind} {} ", kind.len(), payload.len()).into_bytes();
    encoded.extend_from_slice(payload);
    encoded
}

/// The id of a public key: `sha256:` and the hex SHA-256 of its 32 bytes.
fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A private key that signs provenance.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, String> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| format!("no randomness for a key: {e}"))?;
        Ok(SigningKey {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            format!(
                "{} is not an Ed25519 private key in PKCS#8 PEM ({e}); make one with `helix-build keygen`",
                path.display()
            )
        })?;
        Ok(SigningKey { key })
    }

    /// Writes the private key to `key` (mode 0600, created new) and the
    /// public key to `public`.
    pub fn write(&self, key: &Path, public: &Path) -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let pem = self
            .key
            .to_pkcs8_pem(Default::default())
            .map_err(|e| e.to_string())?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key)
            .map_err(|e| format!("cannot create {}: {e}", key.display()))?;
        file.write_all(pem.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
        std::fs::write(public, self.public_pem())
            .map_err(|e| format!("cannot write {}: {e}", public.display()))
    }

    /// The public key, SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .expect("an Ed25519 public key encodes")
    }

    pub fn id(&self) -> String {
        key_id(&self.key.verifying_key())
    }

    /// `payload` of type `kind`, signed.
    pub fn sign(&self, kind: &str, payload: &[u8]) -> Envelope {
        let signature = self.key.sign(&pae(kind, payload));
        Envelope {
            payload: BASE64.encode(payload),
            payload_type: kind.to_string(),
            signatures: vec![EnvelopeSignature {
                keyid: self.id(),
                sig: BASE64.encode(signature.to_bytes()),
            }],
        }
    }
}

/// A public key that checks provenance.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// Reads a SubjectPublicKeyInfo PEM public key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the public key {}: {e}", path.display()))?;
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
            format!(
                "{} is not an Ed25519 public key in PEM ({e})",
                path.display()
            )
        })?;
        Ok(PublicKey { key })
    }

    pub fn id(&self) -> String {
        key_id(&self.key)
    }

    /// The payload of `envelope` if one of its signatures is this key's
    /// and holds.
    pub fn open(&self, envelope: &Envelope) -> Result<Vec<u8>, EnvelopeError> {
        let payload = BASE64
            .decode(&envelope.payload)
            .map_err(|e| EnvelopeError::Malformed(format!("payload: {e}")))?;
        let id = self.id();
        let Some(signature) = envelope.signatures.iter().find(|s| s.keyid == id) else {
            let found: Vec<&str> = envelope
                .signatures
                .iter()
                .map(|s| s.keyid.as_str())
                .collect();
            return Err(EnvelopeError::OtherKey {
                found: match found.is_empty() {
                    true => "no signature at all".into(),
                    false => found.join(", "),
                },
                expected: id,
            });
        };
        let bytes = BASE64
            .decode(&signature.sig)
            .map_err(|e| EnvelopeError::Malformed(format!("signature: {e}")))?;
        let signature = ed25519_dalek::Signature::from_slice(&bytes)
            .map_err(|e| EnvelopeError::Malformed(format!("signature: {e}")))?;
        self.key
            .verify(&pae(&envelope.payload_type, &payload), &signature)
            .map_err(|_| EnvelopeError::Altered)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (SigningKey, PublicKey) {
        let key = SigningKey::generate().unwrap();
        let (private, public) = (
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}.pub")),
        );
        key.write(&private, &public).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is its owner's alone");
        (
            SigningKey::load(&private).unwrap(),
            PublicKey::load(&public).unwrap(),
        )
    }

    #[test]
    fn the_encoding_is_dsse_v1() {
        assert_eq!(pae("a/b", b"hello"), b"DSSEv1 3 a/b 5 hello");
    }

    #[test]
    fn an_envelope_opens_with_its_key_only_and_only_unaltered() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = pair(dir.path(), "helix");
        let (_, other) = pair(dir.path(), "other");
        assert_eq!(key.id(), public.id());
        let envelope = key.sign(IN_TOTO_PAYLOAD, br#"{"a":1}"#);
        assert_eq!(public.open(&envelope).unwrap(), br#"{"a":1}"#);

        let err = other.open(&envelope).unwrap_err();
        assert!(matches!(err, EnvelopeError::OtherKey { .. }), "{err}");

        let mut altered = envelope.clone();
        altered.payload = BASE64.encode(br#"{"a":2}"#);
        assert_eq!(public.open(&altered).unwrap_err(), EnvelopeError::Altered);
        let mut retyped = envelope;
        retyped.payload_type = "text/plain".into();
        assert_eq!(public.open(&retyped).unwrap_err(), EnvelopeError::Altered);
    }

    #[test]
    fn a_key_file_that_is_not_a_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.key");
        std::fs::write(&path, "not a key").unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(
            err.contains("junk.key is not an Ed25519 private key"),
            "{err}"
        );
        assert!(
            PublicKey::load(&path)
                .unwrap_err()
                .contains("is not an Ed25519 public key")
        );
    }
}
