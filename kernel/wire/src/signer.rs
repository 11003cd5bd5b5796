//! HMAC signing of the four JSON frames of a message.

use hmac::{Hmac, Mac};
use jupyter_protocol::ConnectionInfo;
use sha2::Sha256;

use crate::WireError;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies messages with the connection file's key.
///
/// The signature is the lowercase hex HMAC of header, parent header,
/// metadata and content, in that order. As in Jupyter, an empty key disables
/// authentication: the signature sent is `""` and any received signature is
/// accepted.
#[derive(Clone)]
pub struct Signer {
    /// The keyed HMAC state, cloned per message so the key is processed once;
    /// `None` when the key is empty.
    keyed_mac: Option<HmacSha256>,
}

impl Signer {
    pub const SUPPORTED_SCHEME: &'static str = "hmac-sha256";

    /// A signer for `key` under `signature_scheme` (the connection file's
    /// `signature_scheme`). Only `hmac-sha256` is supported; with an empty
    /// key the scheme is never used, so any scheme is accepted then.
    pub fn new(signature_scheme: &str, key: &[u8]) -> Result<Self, WireError> {
        if key.is_empty() {
            return Ok(Self::unsigned());
        }
        if signature_scheme != Self::SUPPORTED_SCHEME {
            return Err(WireError::UnsupportedSignatureScheme(
                signature_scheme.to_owned(),
            ));
        }
        let keyed_mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        Ok(Self {
            keyed_mac: Some(keyed_mac),
        })
    }

    pub fn from_connection_info(info: &ConnectionInfo) -> Result<Self, WireError> {
        Self::new(&info.signature_scheme, info.key.as_bytes())
    }

    /// A signer that signs nothing and accepts everything (empty key).
    pub fn unsigned() -> Self {
        Self { keyed_mac: None }
    }

    /// Whether messages are authenticated at all.
    pub fn is_signing(&self) -> bool {
        self.keyed_mac.is_some()
    }

    /// The hex signature of `parts`, or `""` when unsigned.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        match self.mac_over(parts) {
            Some(mac) => hex::encode(mac.finalize().into_bytes()),
            None => String::new(),
        }
    }

    /// Checks a received hex `signature` of `parts` in constant time.
    pub fn verify(&self, signature: &[u8], parts: &[&[u8]]) -> Result<(), WireError> {
        let Some(mac) = self.mac_over(parts) else {
            return Ok(());
        };
        // Decoding the hex first lets the comparison run on raw digests, where
        // `verify_slice` is constant-time; a non-hex signature is simply wrong.
        let claimed = hex::decode(signature).map_err(|_| WireError::BadSignature)?;
        mac.verify_slice(&claimed)
            .map_err(|_| WireError::BadSignature)
    }

    fn mac_over(&self, parts: &[&[u8]]) -> Option<HmacSha256> {
        let mut mac = self.keyed_mac.clone()?;
        for part in parts {
            mac.update(part);
        }
        Some(mac)
    }
}

impl std::fmt::Debug for Signer {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("signing", &self.is_signing())
            .finish()
    }
}
