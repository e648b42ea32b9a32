//! Callers of signed requests (the AWS KMS API's SigV4): an access key whose AWS secret
//! is derived from the cluster key and its id, so it is never stored.

use teekms_core::sigv4::{self, Authorization, SigV4Error};

use super::*;

impl Service {
    /// The AWS secret access key of access key `id` (see
    /// [`access::aws_secret_access_key`]).
    pub(super) fn aws_secret(&self, id: &str) -> Zeroizing<String> {
        let key = self.keyring.cluster().derive(access::AWS_SECRET_LABEL);
        access::aws_secret_access_key(&key, id)
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
            return Err(self.refuse_credential(&caller, unknown(), now));
        };
        let rec = AccessKeyRecord::open(
            self.keyring.cluster(),
            &auth.access_key_id,
            revision,
            &record,
        )
        .map_err(|e| OpError::Damaged(e.to_string()))?;
        let secret = self.aws_secret(&rec.id);
        if let Err(e) = sigv4::verify(
            req,
            auth,
            secret.as_bytes(),
            &self.settings.aws_region,
            "kms",
            now,
        ) {
            let err = match e {
                SigV4Error::Malformed(_) | SigV4Error::Unsigned(_) => {
                    OpError::BadRequest(e.to_string())
                }
                _ => OpError::BadRequestSignature(e.to_string()),
            };
            // Attributed to the key it names, though not proven: the owner sees attempts.
            let mut c = caller.clone();
            c.access_key = None;
            return Err(self.refuse_credential(&c, err, now));
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
