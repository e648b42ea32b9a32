//! Recovery of the cluster key when every node is gone (spec/recovery-v1.md).
//!
//! At cluster creation the cluster key is split k-of-n with Shamir's scheme over
//! GF(2^8), one polynomial of degree k-1 per byte, shares at x = 1..=n. Each share is
//! HPKE-sealed to one recovery officer's X25519 key. Fewer than k shares say nothing
//! about the key; k shares give it back, and a check value (a subkey of the cluster key)
//! tells a right combination from a wrong one, so a wrong share is detected.

use serde::{Deserialize, Serialize};
use teekms_attest::hexbytes::HexBytes;
use zeroize::Zeroizing;

use crate::api::B64;
use crate::hpke::{self, HpkePrivateKey};
use crate::{CoreError, SealingKey};

/// HPKE `info` of sealed shares.
pub const SHARE_INFO: &[u8] = b"teekms/v1/recovery-share";
const FORMAT_VERSION: u8 = 1;

/// What a recovery officer keeps: one share, sealed to their key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedShare {
    /// Format version (1).
    pub version: u8,
    /// Identifies the cluster key without revealing it.
    pub cluster_check: HexBytes<16>,
    /// Shares needed (k).
    pub threshold: u8,
    /// Shares made (n).
    pub count: u8,
    /// This share's x (1..=n).
    pub index: u8,
    /// The officer's X25519 public key.
    pub officer: HexBytes<32>,
    /// HPKE encapsulated key.
    pub enc: B64,
    /// HPKE ciphertext of the 32 share bytes.
    pub ciphertext: B64,
}

/// A share opened by its officer (secret: handle like a key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenShare {
    /// Format version (1).
    pub version: u8,
    /// The cluster it belongs to.
    pub cluster_check: HexBytes<16>,
    /// Shares needed.
    pub threshold: u8,
    /// Shares made.
    pub count: u8,
    /// x.
    pub index: u8,
    /// y: 32 bytes.
    pub share: HexBytes<32>,
}

impl std::fmt::Debug for OpenShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenShare(index {} of {})", self.index, self.count)
    }
}

impl Drop for OpenShare {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.share.0);
    }
}

/// The check value of a cluster key.
pub fn cluster_check(cluster: &SealingKey) -> HexBytes<16> {
    let d = cluster.derive("teekms/v1/cluster-check");
    HexBytes(d[..16].try_into().expect("16 of 32 bytes"))
}

fn bad(why: impl Into<String>) -> CoreError {
    CoreError::Recovery(why.into())
}

// GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1, constant time.
fn mul(a: u8, b: u8) -> u8 {
    let (mut a, mut b, mut p) = (a, b, 0u8);
    for _ in 0..8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    p
}

fn inv(a: u8) -> u8 {
    // a^254 = a^-1 for a != 0.
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u8;
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// One Shamir share: x and the 32 bytes of y.
pub type Share = (u8, Zeroizing<[u8; 32]>);

/// Splits `secret` into `count` shares, any `threshold` of which give it back.
pub fn split(secret: &[u8; 32], threshold: u8, count: u8) -> Result<Vec<Share>, CoreError> {
    if threshold == 0 || threshold > count {
        return Err(bad(
            "the threshold must be between 1 and the number of officers",
        ));
    }
    let mut coefficients = Zeroizing::new(vec![[0u8; 32]; threshold as usize - 1]);
    for c in coefficients.iter_mut() {
        crate::random_bytes(c);
    }
    Ok((1..=count)
        .map(|x| {
            let mut y = Zeroizing::new([0u8; 32]);
            for (i, byte) in y.iter_mut().enumerate() {
                // Horner: ((c_{k-1} x + c_{k-2}) x + ... ) x + secret.
                let mut acc = 0u8;
                for c in coefficients.iter().rev() {
                    acc = mul(acc, x) ^ c[i];
                }
                *byte = mul(acc, x) ^ secret[i];
            }
            (x, y)
        })
        .collect())
}

/// Interpolates at 0 from shares with distinct, non-zero x.
fn combine(shares: &[&OpenShare]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    for (j, sj) in shares.iter().enumerate() {
        // Lagrange basis at 0: prod_{m != j} x_m / (x_m - x_j); in GF(2^8), minus is xor.
        let mut basis = 1u8;
        for (m, sm) in shares.iter().enumerate() {
            if m != j {
                basis = mul(basis, mul(sm.index, inv(sm.index ^ sj.index)));
            }
        }
        for (o, y) in out.iter_mut().zip(sj.share.0.iter()) {
            *o ^= mul(basis, *y);
        }
    }
    out
}

/// Splits the cluster key and seals share i to officer i.
pub fn seal_shares(
    cluster: &SealingKey,
    threshold: u8,
    officers: &[[u8; 32]],
) -> Result<Vec<SealedShare>, CoreError> {
    let count = u8::try_from(officers.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| bad("between 1 and 255 recovery officers"))?;
    let check = cluster_check(cluster);
    let shares = split(cluster.expose(), threshold, count)?;
    shares
        .iter()
        .zip(officers)
        .map(|((x, y), officer)| {
            let aad = share_aad(&check, threshold, count, *x, officer);
            let (enc, ct) = hpke::seal(officer, SHARE_INFO, &aad, y.as_ref())
                .map_err(|_| bad("an officer key is not a usable X25519 public key"))?;
            Ok(SealedShare {
                version: FORMAT_VERSION,
                cluster_check: check,
                threshold,
                count,
                index: *x,
                officer: HexBytes(*officer),
                enc: B64(enc.to_vec()),
                ciphertext: B64(ct),
            })
        })
        .collect()
}

fn share_aad(
    check: &HexBytes<16>,
    threshold: u8,
    count: u8,
    index: u8,
    officer: &[u8; 32],
) -> Vec<u8> {
    let mut w = teekms_attest::codec::Writer::with_label(SHARE_INFO);
    w.bytes(&check.0)
        .u8(threshold)
        .u8(count)
        .u8(index)
        .bytes(officer);
    w.finish()
}

impl SealedShare {
    /// The officer opens their share with their private key.
    pub fn open(&self, officer: &HpkePrivateKey) -> Result<OpenShare, CoreError> {
        if self.version != FORMAT_VERSION {
            return Err(bad(format!(
                "unknown share format version {}",
                self.version
            )));
        }
        if officer.public_key() != &self.officer.0 {
            return Err(bad("this share is sealed to another officer's key"));
        }
        let aad = share_aad(
            &self.cluster_check,
            self.threshold,
            self.count,
            self.index,
            &self.officer.0,
        );
        let y = hpke::open(officer, &self.enc.0, SHARE_INFO, &aad, &self.ciphertext.0)
            .map_err(|_| bad("the share does not open: it was altered"))?;
        let share: [u8; 32] = y
            .as_slice()
            .try_into()
            .map_err(|_| bad("the share is not 32 bytes"))?;
        Ok(OpenShare {
            version: FORMAT_VERSION,
            cluster_check: self.cluster_check,
            threshold: self.threshold,
            count: self.count,
            index: self.index,
            share: HexBytes(share),
        })
    }
}

/// Recovers the cluster key from at least `threshold` opened shares. With more than
/// `threshold`, a wrong share among them is worked around; with exactly `threshold`, a
/// wrong one is detected (the check value differs) and reported.
pub fn recover(shares: &[OpenShare]) -> Result<SealingKey, CoreError> {
    let first = shares.first().ok_or_else(|| bad("no shares given"))?;
    let (check, k, n) = (&first.cluster_check, first.threshold, first.count);
    for s in shares {
        if s.version != FORMAT_VERSION {
            return Err(bad(format!("share {}: unknown format version", s.index)));
        }
        if s.cluster_check != *check || s.threshold != k || s.count != n {
            return Err(bad(format!(
                "share {} belongs to another cluster or split",
                s.index
            )));
        }
        if s.index == 0 || s.index > n {
            return Err(bad(format!("share index {} is out of range", s.index)));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let distinct: Vec<&OpenShare> = shares.iter().filter(|s| seen.insert(s.index)).collect();
    if distinct.len() < k as usize {
        return Err(bad(format!(
            "{} distinct share(s) given; this cluster needs {k} of {n}",
            distinct.len()
        )));
    }
    // Try combinations of k (all of them when a share is wrong; usually the first).
    let mut pick: Vec<usize> = (0..k as usize).collect();
    loop {
        let chosen: Vec<&OpenShare> = pick.iter().map(|&i| distinct[i]).collect();
        let key = SealingKey::from_bytes(*combine(&chosen));
        if cluster_check(&key) == *check {
            return Ok(key);
        }
        if !next_combination(&mut pick, distinct.len()) {
            return Err(bad(
                "the shares do not give the cluster key back: at least one is wrong (altered, or opened from another split)",
            ));
        }
    }
}

fn next_combination(pick: &mut [usize], n: usize) -> bool {
    let k = pick.len();
    for i in (0..k).rev() {
        if pick[i] < n - k + i {
            pick[i] += 1;
            for j in i + 1..k {
                pick[j] = pick[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn officers(n: usize) -> Vec<HpkePrivateKey> {
        (0..n).map(|_| HpkePrivateKey::generate()).collect()
    }

    #[test]
    fn field_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
    }

    #[test]
    fn any_k_of_n_recover_and_wrong_shares_are_detected() {
        let cluster = SealingKey::generate();
        let offs = officers(5);
        let pubs: Vec<[u8; 32]> = offs.iter().map(|o| *o.public_key()).collect();
        let sealed = seal_shares(&cluster, 3, &pubs).unwrap();
        let open: Vec<OpenShare> = sealed
            .iter()
            .zip(&offs)
            .map(|(s, o)| s.open(o).unwrap())
            .collect();
        // Another officer cannot open it; an altered share does not open.
        assert!(sealed[0].open(&offs[1]).is_err());
        let mut altered = sealed[0].clone();
        altered.threshold = 2;
        assert!(altered.open(&offs[0]).is_err());
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let got =
                        recover(&[open[a].clone(), open[b].clone(), open[c].clone()]).unwrap();
                    assert_eq!(got.expose(), cluster.expose());
                }
                assert!(
                    recover(&[open[a].clone(), open[b].clone()]).is_err(),
                    "k-1 shares"
                );
            }
        }
        let mut wrong = open[1].clone();
        wrong.share.0[0] ^= 1;
        let Err(e) = recover(&[open[0].clone(), wrong.clone(), open[2].clone()]) else {
            panic!("a wrong share was not detected");
        };
        assert!(e.to_string().contains("wrong"), "{e}");
        // With one more share than needed, the wrong one is worked around.
        let got = recover(&[open[0].clone(), wrong, open[2].clone(), open[3].clone()]).unwrap();
        assert_eq!(got.expose(), cluster.expose());
        // Shares of another split do not mix.
        let other = seal_shares(&SealingKey::generate(), 3, &pubs).unwrap();
        let foreign = other[3].open(&offs[3]).unwrap();
        assert!(recover(&[open[0].clone(), open[1].clone(), foreign]).is_err());
    }

    #[test]
    fn fewer_than_k_shares_are_uniform() {
        // For k = 2, a single share's byte is the secret plus a uniformly random slope
        // times x: every value is equally likely whatever the secret. Check the spread
        // for two very different secrets.
        for secret in [[0u8; 32], [0xff; 32]] {
            let mut counts = [0u32; 256];
            for _ in 0..4096 {
                let s = split(&secret, 2, 3).unwrap();
                counts[s[0].1[0] as usize] += 1;
            }
            assert!(counts.iter().all(|&c| c > 0), "every byte value occurs");
            assert!(counts.iter().all(|&c| c < 50), "none dominates");
        }
    }
}
