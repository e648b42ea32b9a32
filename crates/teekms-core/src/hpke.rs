//! HPKE (RFC 9180), base mode, single shot, for the one suite teekms uses:
//! DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM (ids 0x0020, 0x0001, 0x0002).
//!
//! Written on aws-lc-rs, the project's one crypto library, instead of the `hpke` crate:
//! X25519 there is about twice as fast, which the deployment benchmark feels on both
//! ends. Tests cross-check every operation against the `hpke` crate in both directions.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

/// Length of keys, encapsulated keys and shared secrets of this suite.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const KEM_SUITE_ID: &[u8] = b"KEM\x00\x20";
const HPKE_SUITE_ID: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x02";
const VERSION_LABEL: &[u8] = b"HPKE-v1";
const MODE_BASE: u8 = 0;

/// HPKE failed: a malformed key or encapsulation, or a ciphertext that does not
/// authenticate. Deliberately says nothing more.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("HPKE operation failed")]
pub struct HpkeError;

/// An X25519 private key of this suite, with its public key.
pub struct HpkePrivateKey {
    secret: Zeroizing<[u8; KEY_LEN]>,
    public: [u8; KEY_LEN],
}

impl HpkePrivateKey {
    /// A fresh key pair.
    pub fn generate() -> HpkePrivateKey {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        crate::random_bytes(secret.as_mut());
        HpkePrivateKey::from_bytes(secret.as_ref()).expect("any 32 bytes are an X25519 private key")
    }

    /// From the 32-byte private key (RFC 9180 `DeserializePrivateKey`).
    pub fn from_bytes(bytes: &[u8]) -> Result<HpkePrivateKey, HpkeError> {
        let secret: [u8; KEY_LEN] = bytes.try_into().map_err(|_| HpkeError)?;
        let key = PrivateKey::from_private_key(&X25519, &secret).map_err(|_| HpkeError)?;
        let public = key
            .compute_public_key()
            .map_err(|_| HpkeError)?
            .as_ref()
            .try_into()
            .map_err(|_| HpkeError)?;
        Ok(HpkePrivateKey {
            secret: Zeroizing::new(secret),
            public,
        })
    }

    /// The private key bytes (for sealing it into storage).
    pub fn to_bytes(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }

    /// The public key.
    pub fn public_key(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    fn dh(&self, peer: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, HpkeError> {
        let key =
            PrivateKey::from_private_key(&X25519, self.secret.as_ref()).map_err(|_| HpkeError)?;
        dh(&key, peer)
    }
}

fn dh(key: &PrivateKey, peer: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, HpkeError> {
    let shared = agreement::agree(key, UnparsedPublicKey::new(&X25519, peer), HpkeError, |s| {
        <[u8; KEY_LEN]>::try_from(s)
            .map(Zeroizing::new)
            .map_err(|_| HpkeError)
    })?;
    // RFC 9180 §7.1.4: an all-zero X25519 output (a small-order peer key) is an error.
    if shared.iter().all(|&b| b == 0) {
        return Err(HpkeError);
    }
    Ok(shared)
}

/// HKDF-Extract (RFC 5869) over the concatenation of `ikm` parts.
fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, salt));
    for part in ikm {
        ctx.update(part);
    }
    Zeroizing::new(
        ctx.sign()
            .as_ref()
            .try_into()
            .expect("HMAC-SHA256 is 32 bytes"),
    )
}

/// HKDF-Expand (RFC 5869) of `info` parts into `out` (at most 255 blocks).
fn expand(prk: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut previous: Option<hmac::Tag> = None;
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let mut ctx = hmac::Context::with_key(&key);
        if let Some(t) = &previous {
            ctx.update(t.as_ref());
        }
        for part in info {
            ctx.update(part);
        }
        ctx.update(&[u8::try_from(i + 1).expect("at most 255 blocks")]);
        let t = ctx.sign();
        chunk.copy_from_slice(&t.as_ref()[..chunk.len()]);
        previous = Some(t);
    }
}

fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    extract(salt, &[VERSION_LABEL, suite, label, ikm])
}

fn labeled_expand(suite: &[u8], prk: &[u8], label: &[u8], info: &[u8], out: &mut [u8]) {
    let len = u16::try_from(out.len())
        .expect("short outputs")
        .to_be_bytes();
    expand(prk, &[&len, VERSION_LABEL, suite, label, info], out);
}

/// DHKEM `ExtractAndExpand`.
fn shared_secret(dh: &[u8], enc: &[u8], pk_r: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let eae_prk = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh);
    let kem_context = [enc, pk_r].concat();
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    labeled_expand(
        KEM_SUITE_ID,
        eae_prk.as_ref(),
        b"shared_secret",
        &kem_context,
        out.as_mut(),
    );
    out
}

/// The base-mode key schedule; returns the AEAD key and the (first and only) nonce.
fn key_schedule(shared: &[u8], info: &[u8]) -> (LessSafeKey, [u8; NONCE_LEN]) {
    let psk_id_hash = labeled_extract(HPKE_SUITE_ID, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(HPKE_SUITE_ID, b"", b"info_hash", info);
    let context = [&[MODE_BASE][..], psk_id_hash.as_ref(), info_hash.as_ref()].concat();
    let secret = labeled_extract(HPKE_SUITE_ID, shared, b"secret", b"");
    let mut key = Zeroizing::new([0u8; 32]);
    labeled_expand(
        HPKE_SUITE_ID,
        secret.as_ref(),
        b"key",
        &context,
        key.as_mut(),
    );
    let mut nonce = [0u8; NONCE_LEN];
    labeled_expand(
        HPKE_SUITE_ID,
        secret.as_ref(),
        b"base_nonce",
        &context,
        &mut nonce,
    );
    let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_ref()).expect("32-byte key"));
    (aead, nonce)
}

/// `SealBase`: encrypts `plaintext` to `pk_r`. Returns the encapsulated key and the
/// ciphertext (with its 16-byte tag).
pub fn seal(
    pk_r: &[u8; KEY_LEN],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; KEY_LEN], Vec<u8>), HpkeError> {
    let ephemeral = PrivateKey::generate(&X25519).map_err(|_| HpkeError)?;
    let enc: [u8; KEY_LEN] = ephemeral
        .compute_public_key()
        .map_err(|_| HpkeError)?
        .as_ref()
        .try_into()
        .map_err(|_| HpkeError)?;
    let dh = dh(&ephemeral, pk_r)?;
    let shared = shared_secret(dh.as_ref(), &enc, pk_r);
    let (key, nonce) = key_schedule(shared.as_ref(), info);
    let mut out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut out,
    )
    .map_err(|_| HpkeError)?;
    Ok((enc, out))
}

/// `OpenBase`: decrypts what [`seal`] made for this key.
pub fn open(
    sk_r: &HpkePrivateKey,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    if enc.len() != KEY_LEN {
        return Err(HpkeError);
    }
    let dh = sk_r.dh(enc)?;
    let shared = shared_secret(dh.as_ref(), enc, sk_r.public_key());
    let (key, nonce) = key_schedule(shared.as_ref(), info);
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            buf.as_mut_slice(),
        )
        .map_err(|_| HpkeError)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::hpke::aead::AesGcm256;
    use ::hpke::kdf::HkdfSha256;
    use ::hpke::kem::X25519HkdfSha256;
    use ::hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
    use proptest::prelude::*;

    type TheirPrivate = <X25519HkdfSha256 as Kem>::PrivateKey;
    type TheirPublic = <X25519HkdfSha256 as Kem>::PublicKey;
    type TheirEnc = <X25519HkdfSha256 as Kem>::EncappedKey;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Ours seals, the `hpke` crate opens.
        #[test]
        fn theirs_opens_ours(info in proptest::collection::vec(any::<u8>(), 0..40),
                             aad in proptest::collection::vec(any::<u8>(), 0..80),
                             pt in proptest::collection::vec(any::<u8>(), 0..100)) {
            let (their_sk, their_pk) = X25519HkdfSha256::gen_keypair();
            let pk: [u8; 32] = their_pk.to_bytes().as_slice().try_into().unwrap();
            let (enc, ct) = seal(&pk, &info, &aad, &pt).unwrap();
            let enc = TheirEnc::from_bytes(&enc).unwrap();
            let opened = ::hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base, &their_sk, &enc, &info, &ct, &aad).unwrap();
            prop_assert_eq!(opened, pt);
        }

        /// The `hpke` crate seals, ours opens; any change to enc, ct, aad or info fails.
        #[test]
        fn ours_opens_theirs(info in proptest::collection::vec(any::<u8>(), 0..40),
                             aad in proptest::collection::vec(any::<u8>(), 0..80),
                             pt in proptest::collection::vec(any::<u8>(), 0..100)) {
            let ours = HpkePrivateKey::generate();
            let their_pk = TheirPublic::from_bytes(ours.public_key()).unwrap();
            let (enc, ct) = ::hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base, &their_pk, &info, &pt, &aad).unwrap();
            let enc = enc.to_bytes().to_vec();
            let opened = open(&ours, &enc, &info, &aad, &ct).unwrap();
            prop_assert_eq!(opened.as_slice(), pt.as_slice());
            let mut bad_enc = enc.clone();
            bad_enc[0] ^= 1;
            prop_assert!(open(&ours, &bad_enc, &info, &aad, &ct).is_err());
            let mut bad_ct = ct.clone();
            bad_ct[0] ^= 1;
            prop_assert!(open(&ours, &enc, &info, &aad, &bad_ct).is_err());
            prop_assert!(open(&ours, &enc, &[info.as_slice(), b"x"].concat(), &aad, &ct).is_err());
            prop_assert!(open(&ours, &enc, &info, &[aad.as_slice(), b"x"].concat(), &ct).is_err());
        }
    }

    #[test]
    fn public_keys_agree_with_the_hpke_crate() {
        let ours = HpkePrivateKey::generate();
        let theirs = TheirPrivate::from_bytes(ours.to_bytes()).unwrap();
        assert_eq!(
            X25519HkdfSha256::sk_to_pk(&theirs).to_bytes().as_slice(),
            ours.public_key()
        );
    }

    #[test]
    fn small_order_and_malformed_encapsulations_fail() {
        let ours = HpkePrivateKey::generate();
        assert!(open(&ours, &[0u8; 32], b"", b"", &[0; 48]).is_err());
        assert!(open(&ours, &[1u8; 31], b"", b"", &[0; 48]).is_err());
        assert!(seal(&[0u8; 32], b"", b"", b"x").is_err());
    }
}
