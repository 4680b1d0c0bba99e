//! The same signed statements as Sigstore bundles (v0.3), the form
//! `cosign verify-attestation` reads from an image's referrers: the DSSE
//! envelope as it is, a public-key hint (the key's id) as verification
//! material, and no transparency-log entry or timestamp — a keyed
//! signature, verified against a key the verifier is given
//! (`cosign verify-attestation --key k.pub --insecure-ignore-tlog`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dsse::Envelope;

/// The media type of a Sigstore bundle v0.3 (the artifact type and layer
/// type of its referrer).
pub const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// A Sigstore bundle (protobuf-specs `Bundle`, JSON) holding a DSSE
/// envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    pub dsse_envelope: Envelope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    pub public_key: PublicKeyHint,
    /// Always empty: the host logs to no transparency log.
    pub tlog_entries: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyHint {
    /// The id of the signing key (`sha256:` of its 32 bytes).
    pub hint: String,
}

/// `envelope` in a bundle, hinting at the key `key_id`.
pub fn bundle(envelope: &Envelope, key_id: &str) -> Bundle {
    Bundle {
        media_type: BUNDLE_TYPE.into(),
        verification_material: VerificationMaterial {
            public_key: PublicKeyHint {
                hint: key_id.to_string(),
            },
            tlog_entries: Vec::new(),
        },
        dsse_envelope: envelope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::dsse::{IN_TOTO_PAYLOAD, SigningKey};

    #[test]
    fn a_bundle_is_the_envelope_with_a_key_hint_in_protobuf_json() {
        let key = SigningKey::generate().unwrap();
        let envelope = key.sign(IN_TOTO_PAYLOAD, b"{}");
        let json = serde_json::to_value(bundle(&envelope, &key.id())).unwrap();
        assert_eq!(json["mediaType"], BUNDLE_TYPE);
        assert_eq!(json["verificationMaterial"]["publicKey"]["hint"], key.id());
        assert_eq!(
            json["verificationMaterial"]["tlogEntries"],
            serde_json::json!([])
        );
        assert_eq!(json["dsseEnvelope"]["payloadType"], IN_TOTO_PAYLOAD);
        assert_eq!(
            json["dsseEnvelope"]["signatures"][0]["sig"],
            envelope.signatures[0].sig
        );
    }
}
