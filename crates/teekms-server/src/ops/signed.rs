//! Callers of signed requests (the AWS KMS API's SigV4): an access key whose AWS secret
//! is derived from the cluster key and its id, so it is never stored.

use aws_lc_rs::hmac;
use teekms_core::sigv4::{self, Authorization, SigV4Error};

use super::*;

/// SigV4 signing keys by access key id, with their day: deriving one takes the secret's
/// derivation and four HMACs, and a day's requests of one access key all use the same.
/// One day per access key (around midnight a key may be derived again), only of this
/// node's region and service; at most [`SIGNING_KEYS_MAX`], then the cache starts over.
/// Whether the access key is still valid is checked at every request.
#[derive(Default)]
pub struct SigningKeys(Mutex<HashMap<String, (String, hmac::Key)>>);

/// Most signing keys kept.
const SIGNING_KEYS_MAX: usize = 4096;

impl Service {
    /// The AWS secret access key of access key `id` (see
    /// [`access::aws_secret_access_key`]).
    pub(super) fn aws_secret(&self, id: &str) -> Zeroizing<String> {
        let key = self.keyring.cluster().derive(access::AWS_SECRET_LABEL);
        access::aws_secret_access_key(&key, id)
    }

    /// The signing key of access key `id` for `date` in this node's region, and whether
    /// it came from the cache (see [`SigningKeys`]).
    fn signing_key(&self, id: &str, date: &str) -> (hmac::Key, bool) {
        let cached = self
            .signing_keys
            .0
            .lock()
            .expect("signing keys")
            .get(id)
            .filter(|(day, _)| day == date)
            .map(|(_, key)| key.clone());
        if let Some(k) = cached {
            return (k, true);
        }
        let secret = self.aws_secret(id);
        let key = sigv4::signing_key(secret.as_bytes(), date, &self.settings.aws_region, "kms");
        (key, false)
    }

    /// Keeps a signing key that just verified a request: only a signature that verified
    /// adds to the cache, so requests with made-up dates cannot fill it.
    fn keep_signing_key(&self, id: &str, date: &str, key: hmac::Key) {
        let mut keys = self.signing_keys.0.lock().expect("signing keys");
        if keys.len() >= SIGNING_KEYS_MAX {
            keys.clear();
        }
        keys.insert(id.to_owned(), (date.to_owned(), key));
    }

    /// The caller of a SigV4-signed request: the connection's identities and the access
    /// key that signed it, once the signature verifies for service `kms` in the node's
    /// region within 15 minutes of `now`. An unknown key id is
    /// [`OpError::Unauthenticated`]; a signature that does not verify, or a revoked or
    /// expired key, [`OpError::BadRequestSignature`] or `Unauthenticated`.
    pub fn signed_caller(
        &self,
        conn: &ConnState,
        req: &sigv4::Request<'_>,
        auth: &Authorization,
        now: u64,
    ) -> Result<Caller, OpError> {
        let caller = Caller {
            owner: conn.owner,
            access_key: None,
            workload: conn.workload.lock().expect("conn lock").clone(),
            source: conn.peer,
        };
        let unknown = || {
            OpError::Unauthenticated(format!(
                "the access key id {:?} is not known to this node",
                auth.access_key_id
            ))
        };
        if !access::is_access_key_id(&auth.access_key_id) {
            return Err(self.refuse_credential(&caller, unknown(), now));
        }
        let stored = self.reader().get_access_key(&auth.access_key_id)?;
        let Some(teekms_store::Revisioned { revision, record }) = stored else {
            self.freshness()
                .check_floor(Floor::AccessKey, &auth.access_key_id, None)?;
            return Err(self.refuse_credential(&caller, unknown(), now));
        };
        let rec = AccessKeyRecord::open(
            self.keyring.cluster(),
            &auth.access_key_id,
            revision,
            &record,
        )
        .map_err(|e| OpError::Damaged(e.to_string()))?;
        self.freshness()
            .check_floor(Floor::AccessKey, &auth.access_key_id, Some(revision))?;
        let region = &self.settings.aws_region;
        let verified = if auth.region == *region && auth.service == "kms" {
            let (key, cached) = self.signing_key(&rec.id, &auth.date);
            let verified = sigv4::verify_with_key(req, auth, &key, region, "kms", now);
            if verified.is_ok() && !cached {
                self.keep_signing_key(&rec.id, &auth.date, key);
            }
            verified
        } else {
            // Refused for its scope; no key to keep.
            sigv4::verify(req, auth, b"", region, "kms", now)
        };
        if let Err(e) = verified {
            let err = match e {
                SigV4Error::Malformed(_) | SigV4Error::Unsigned(_) => {
                    OpError::BadRequest(e.to_string())
                }
                _ => OpError::BadRequestSignature(e.to_string()),
            };
            return Err(self.refuse_credential(&caller, err, now));
        }
        match rec.grant_signed(now) {
            Ok(grant) => Ok(Caller {
                access_key: Some(grant),
                ..caller
            }),
            Err(why) => Err(self.refuse_credential(&caller, OpError::Unauthenticated(why), now)),
        }
    }
}
