//! The cluster policy (who may join) and its one administrator: read and replaced only
//! by the owner named when the cluster was made. Changing it is how a new teekms version
//! (a new measurement) is admitted to join and take over (spec/sealed-record-v1.md,
//! "Upgrades"; deploy/cluster.md).

use teekms_core::access::Caller;
use teekms_core::api::ClusterPolicy;

use super::{OpError, Service, draft};
use crate::writer::Job;

impl Service {
    /// The cluster admin's check: the caller must be the owner named at creation.
    fn gate_cluster_admin(&self, caller: &Caller, op: &str, now: u64) -> Result<String, OpError> {
        if !self.settings.shared_store {
            return Err(OpError::NotFound(
                "this node keeps no shared store: it has no cluster policy".into(),
            ));
        }
        let admin = crate::node::read_cluster_admin(&self.keyring, self.reader().as_mut())
            .map_err(|e| OpError::Internal(format!("the cluster admin record: {e}")))?;
        let Some(admin) = admin else {
            return Err(self.refuse(
                draft(op, caller, None, None, "denied: no cluster admin", now),
                OpError::Forbidden(
                    "this cluster was made without --cluster-admin: its policy cannot be changed"
                        .into(),
                ),
            ));
        };
        match &caller.owner {
            Some(o) if o.fingerprint() == admin => Ok(admin),
            _ => Err(self.refuse(
                draft(op, caller, None, None, "denied: not the cluster admin", now),
                OpError::Forbidden("only the cluster admin may do this".into()),
            )),
        }
    }

    /// The cluster policy, for its admin.
    pub fn cluster_policy_get(&self, caller: &Caller, now: u64) -> Result<ClusterPolicy, OpError> {
        let admin = self.gate_cluster_admin(caller, "cluster-policy-get", now)?;
        let (policy, _) = crate::node::read_cluster_policy(&self.keyring, self.reader().as_mut())
            .map_err(|e| OpError::Internal(format!("the cluster policy: {e}")))?;
        self.audit(draft("cluster-policy-get", caller, None, None, "ok", now))?;
        Ok(ClusterPolicy {
            policy,
            admin: Some(admin),
        })
    }

    /// Replaces the cluster policy (checked to parse), sealed, with its audit entry in
    /// the same transaction. Joins on every node use it from then on.
    pub fn cluster_policy_set(
        &self,
        caller: &Caller,
        policy: String,
        now: u64,
    ) -> Result<ClusterPolicy, OpError> {
        let admin = self.gate_cluster_admin(caller, "cluster-policy-set", now)?;
        if let Err(e) = teekms_attest::Policy::from_toml(&policy) {
            return Err(OpError::BadRequest(format!(
                "the cluster policy does not parse: {e}"
            )));
        }
        self.commit_change(Job {
            writes: vec![crate::node::seal_cluster_policy(&self.keyring, &policy)],
            audit: draft("cluster-policy-set", caller, None, None, "ok", now),
            on_conflict: "error",
        })?;
        Ok(ClusterPolicy {
            policy,
            admin: Some(admin),
        })
    }

    /// Removes a member for good (the cluster admin only): a node that is gone and will
    /// not come back no longer counts towards majorities. The removal is confirmed by
    /// the members that remain: it is the admin's decision, as `cluster resume` is.
    pub fn cluster_member_remove(
        &self,
        caller: &Caller,
        node_id: &str,
        now: u64,
    ) -> Result<(), OpError> {
        self.gate_cluster_admin(caller, "cluster-member-remove", now)?;
        let before = self.members()?;
        if !before.iter().any(|m| m.node_id == node_id) {
            return Err(OpError::NotFound(format!("no member {node_id:?}")));
        }
        if node_id == self.keyring.keys().node_id().to_hex() {
            return Err(OpError::BadRequest(
                "a node does not remove itself: ask another member".into(),
            ));
        }
        let after: Vec<_> = before
            .iter()
            .filter(|m| m.node_id != node_id)
            .cloned()
            .collect();
        let applied = self.writer.submit(Job {
            writes: vec![teekms_store::Write::DeleteMeta {
                name: format!("{}{node_id}", super::members::MEMBER_PREFIX),
            }],
            audit: draft(
                "cluster-member-remove",
                caller,
                None,
                None,
                format!("ok: {node_id}"),
                now,
            ),
            on_conflict: "error",
        })?;
        if applied == teekms_store::Applied::Done {
            // A membership change: majorities of the membership before and after hold
            // it (spec/freshness-v1.md, "Cluster rules", 4). A member that is gone
            // counts against the first: remove members while they still answer, or
            // while a majority of the others do.
            self.confirm_by_majorities(&[before, after])?;
        }
        Ok(())
    }
}
