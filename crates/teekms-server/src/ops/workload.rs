//! Attested workloads on a connection.

use super::*;

impl Service {
    /// A workload presents its attestation document on this connection: its statement
    /// must name the connection's client key, and its evidence must verify. Which keys
    /// it may use is then decided per key, by the key policies' workload entries.
    pub fn attest_workload(
        &self,
        conn: &ConnState,
        doc: teekms_attest::AttestationDocument,
        now: u64,
    ) -> Result<String, OpError> {
        let Some(spki) = conn.client_spki else {
            return Err(OpError::Unauthenticated(
                "a workload attests over a connection with its TLS client certificate".into(),
            ));
        };
        if doc.statement.tls_spki_sha256.0 != spki {
            return Err(OpError::Forbidden(
                "the attestation names another TLS key than this connection's client certificate"
                    .into(),
            ));
        }
        let workload = Self::verified_workload(doc, None, now).map_err(|why| {
            OpError::Forbidden(format!("the workload's evidence does not verify: {why}"))
        })?;
        let digest = workload.claims_digest.clone();
        let caller = Caller {
            owner: conn.owner,
            access_key: None,
            workload: Some(workload.clone()),
            source: conn.peer,
        };
        self.audit(draft("workload-attest", &caller, None, None, "ok", now))?;
        *conn.workload.lock().expect("conn lock") = Some(workload);
        Ok(digest)
    }

    /// The caller of a request that names a recipient (AWS KMS's `Recipient`): an
    /// attestation document of a teekms workload, made around the HPKE key that
    /// secrets are then sealed to. Its evidence must verify (appraisal against key
    /// policies comes with each key); the caller carries it as its workload, beside its
    /// access key, so a rule naming both needs both.
    pub fn with_recipient(
        &self,
        caller: &Caller,
        document: &[u8],
        now: u64,
    ) -> Result<Caller, OpError> {
        let refused = |why: String| {
            let err = OpError::Forbidden(format!("the recipient's attestation document {why}"));
            self.refuse(
                draft(
                    "recipient",
                    caller,
                    None,
                    None,
                    format!("denied: {err}"),
                    now,
                ),
                err,
            )
        };
        let doc = teekms_attest::AttestationDocument::from_json(document)
            .map_err(|e| refused(format!("is not a teekms attestation document: {e}")))?;
        let workload = Self::verified_workload(doc, None, now)
            .map_err(|why| refused(format!("does not verify: {why}")))?;
        Ok(Caller {
            workload: Some(workload),
            ..caller.clone()
        })
    }

    /// A workload whose TLS client certificate is an RA-TLS certificate (spec/ratls-v1.md):
    /// its evidence was checked for authenticity in the handshake; here it becomes the
    /// connection's workload, appraised per key policy on each request.
    pub fn ratls_workload(
        ev: &teekms_attest::ratls::RaTlsEvidence,
        now: u64,
    ) -> Result<AttestedWorkload, String> {
        let (document, report_data) = ev
            .document()
            .ok_or("the RA-TLS certificate carries no teekms statement")?;
        Self::verified_workload(document, Some(report_data), now)
            .map_err(|why| format!("the RA-TLS evidence does not verify: {why}"))
    }

    /// Checks a workload's evidence for authenticity (not yet against any key policy)
    /// and binding: to `report_data` (RA-TLS claims), or else to its statement.
    fn verified_workload(
        document: teekms_attest::AttestationDocument,
        report_data: Option<[u8; 64]>,
        now: u64,
    ) -> Result<AttestedWorkload, String> {
        if document.tee == TeeKind::Sim {
            let expected = report_data.unwrap_or_else(|| document.statement.hash());
            let verified =
                teekms_attest::VerifiedSim::check(&document, &expected).map_err(|e| e.to_string());
            crate::metrics::METRICS.attestation(TeeKind::Sim, verified.is_ok());
            let verified = verified?;
            return Ok(AttestedWorkload::sim(document, report_data, verified));
        }
        let any = Policy::default_for(document.tee).expect("real TEEs have a default policy");
        let verdict = match report_data {
            Some(rd) => teekms_attest::ratls::verify_document_bound(&document, rd, &any, now),
            None => verify_document(&document, &any, Freshness::Offline, now),
        };
        crate::metrics::METRICS.attestation(document.tee, verdict.verified);
        if !verdict.verified {
            return Err(verdict.reasons.join("; "));
        }
        let claims = serde_json::to_vec(&verdict.claims).expect("claims serialize");
        let digest = hex::encode(teekms_attest::sha256(&claims));
        Ok(AttestedWorkload::new(document, report_data, digest))
    }

    /// `POST /v1/cluster/join`: a new node, attested on this connection, admitted by the
    /// cluster policy, gets the cluster key sealed to its attested key.
    pub fn cluster_join(
        &self,
        caller: &Caller,
        now: u64,
    ) -> Result<teekms_core::api::JoinResponse, OpError> {
        if !self.settings.shared_store {
            return Err(OpError::Forbidden(
                "this node keeps no shared store: there is no cluster to join".into(),
            ));
        }
        // Read at each join: the cluster admin may have changed it through any node.
        let (_, policy) = crate::node::read_cluster_policy(&self.keyring, self.reader().as_mut())
            .map_err(|e| OpError::Internal(format!("the cluster policy: {e}")))?;
        let policy = &policy;
        let Some(w) = &caller.workload else {
            return Err(OpError::Unauthenticated(
                "a joining node attests on its connection (an RA-TLS client certificate)".into(),
            ));
        };
        let verdict = match w.report_data {
            None => teekms_attest::verify_document(
                &w.document,
                policy,
                teekms_attest::Freshness::Offline,
                now,
            ),
            Some(rd) => teekms_attest::ratls::verify_document_bound(&w.document, rd, policy, now),
        };
        if !verdict.accepted {
            let why = format!(
                "the cluster policy does not admit this node: {}",
                verdict.reasons.join("; ")
            );
            return Err(self.refuse(
                draft(
                    "cluster-join",
                    caller,
                    None,
                    None,
                    format!("denied: {why}"),
                    now,
                ),
                OpError::Forbidden(why),
            ));
        }
        let check = teekms_core::recovery::cluster_check(self.keyring.cluster());
        let (enc, ct) = teekms_core::hpke::seal(
            &w.document.statement.hpke_public_key.0,
            teekms_core::api::CLUSTER_JOIN_INFO,
            &check.0,
            self.keyring.cluster().expose(),
        )
        .map_err(|_| OpError::BadRequest("the joiner's key is not a usable X25519 key".into()))?;
        self.audit(draft(
            "cluster-join",
            caller,
            None,
            None,
            format!("ok (node {})", w.document.statement.node_id),
            now,
        ))?;
        Ok(teekms_core::api::JoinResponse {
            cluster_check: B64(check.0.to_vec()),
            sealed: SealedSecret {
                enc: B64(enc.to_vec()),
                ciphertext: B64(ct),
            },
        })
    }
}
