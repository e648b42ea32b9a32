//! The node's secrets: its key set (born and sealed inside the TEE) and the cluster key,
//! with the two things made directly from them, the attestation document and a
//! deployment's receipt. Operations on keys are `ops::Service`'s.

use teekms_attest::document::DOCUMENT_VERSION;
use teekms_attest::{AttestationDocument, TeeKind};
use teekms_core::receipt::ReceiptFields;
use teekms_core::record::DataKeyRecord;
use teekms_core::{NodeKeys, Receipt, SealingKey};
use teekms_platform::{Platform, PlatformError};

use crate::ServerError;
use crate::ca::ClusterCa;

/// A node's key set and cluster key, and the cluster's TLS CA made from it.
pub struct Keyring {
    tee: TeeKind,
    keys: NodeKeys,
    cluster: SealingKey,
    ca: ClusterCa,
}

impl Keyring {
    pub(crate) fn new(
        tee: TeeKind,
        keys: NodeKeys,
        cluster: SealingKey,
    ) -> Result<Keyring, ServerError> {
        let ca = ClusterCa::derive(&cluster)?;
        Ok(Keyring {
            tee,
            keys,
            cluster,
            ca,
        })
    }

    /// The cluster's TLS CA.
    pub(crate) fn ca(&self) -> &ClusterCa {
        &self.ca
    }

    /// The node's statement (version 2: it binds the cluster's CA), for a verifier's
    /// `nonce` if any.
    pub fn statement(&self, nonce: Option<&[u8]>) -> teekms_attest::NodeStatement {
        self.keys
            .cluster_statement(self.tee, nonce, self.ca.spki_sha256())
    }

    /// The cluster key (seals records; subkeys for the audit MAC and access keys).
    pub(crate) fn cluster(&self) -> &SealingKey {
        &self.cluster
    }

    /// The node's key set (private keys: stays inside the server crate).
    pub(crate) fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    /// The attestation document, optionally for a verifier's nonce.
    pub fn attestation(
        &self,
        platform: &dyn Platform,
        nonce: Option<&[u8]>,
    ) -> Result<AttestationDocument, PlatformError> {
        let statement = self.statement(nonce);
        let evidence = platform.evidence(&statement.hash())?;
        Ok(AttestationDocument {
            version: DOCUMENT_VERSION,
            tee: self.tee,
            evidence,
            statement,
            collateral: platform.collateral(),
        })
    }

    /// The node's signed receipt for a deployed key, bound to the statement the owner
    /// verified.
    pub(crate) fn receipt(&self, record: &DataKeyRecord, statement_hash: [u8; 64]) -> Receipt {
        Receipt::sign(
            &self.keys,
            ReceiptFields {
                owner: &record.owner,
                key_id: &record.key_id,
                key_version: record.key_version,
                kcv: record.kcv(),
                created_at: record.created_at,
                statement_hash,
            },
        )
    }
}
