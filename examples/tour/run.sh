#!/usr/bin/env bash
# The five-minute tour of README.md, as one script: every step as README shows it, run
# against a real node (sim TEE) on a free port. Runs from any directory; all state
# (owner key, sim root, node, files) lives in a temporary directory; exits 0 on success.
# The part between the `tour` markers is README's tour, word for word (a test checks).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -n "${TEEKMS_BIN_DIR:-}" ]; then
    bin=$TEEKMS_BIN_DIR # a prebuilt teekms (the test suite's)
else
    echo "== building (release)"
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p teekms-cli
    bin="$root/target/release"
fi
teekms() { "$bin/teekms" "$@"; }

work=$(mktemp -d)
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then
        # `teekms serve ... &` runs in a subshell (teekms is a function here): stop the
        # node under it first, or it outlives the tour.
        pkill -P "$node_pid" 2>/dev/null || true
        kill "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
export HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share"
unset TEEKMS_OWNER TEEKMS_SIM_ROOT TEEKMS_ACCESS_KEY_FILE
mkdir -p "$HOME"
cd "$work"

# --- tour ---
# 1. You, the owner: an Ed25519 identity (in ~/.config/teekms/owner.key; --owner or TEEKMS_OWNER to change).
teekms owner init

# 2. The node (here on the sim TEE: INSECURE, development only). Keys are born and sealed at
#    first start. Port 0 takes a free port; the node's first line names its URL.
teekms serve --tee sim --data-dir node --listen 127.0.0.1:0 > node.out 2> node.err &
node_pid=$!
for _ in $(seq 100); do grep -q https:// node.out && break; sleep 0.1; done
node=$(grep -o 'https://[^ ]*' node.out)

# 3. Your policy: which evidence you accept. For sim, pin the simulated platform root.
printf '[[accept]]\ntee = "sim"\nsim_root = "%s"\n' "$(teekms sim root)" > policy.toml

# 4. Fetch and verify the node's attestation (exit 0 accepted, 1 rejected, 2 usage/I-O error).
teekms attest fetch --node "$node" -o node.json
teekms attest verify node.json --policy policy.toml

# 5. Deploy a key online: verifies fresh evidence first, then HPKE-wraps and sends, then checks the signed receipt.
teekms key generate -o db.key
teekms key deploy --node "$node" --policy policy.toml --key-id db --dek db.key

# 6. Or offline: wrap to the saved evidence, carry the bundle, import it on the node side.
teekms key generate -o backup.key
teekms key wrap --evidence node.json --policy policy.toml --key-id backup --dek backup.key -o backup.bundle
teekms key import backup.bundle --node "$node"      # or: --data-dir node --tee sim (node stopped)
teekms key check-receipt backup.bundle.receipt --evidence node.json --policy policy.toml --key-id backup --dek backup.key

# 7. Your keys on the node: id, created, key check value; never material.
teekms key list --node "$node" --policy policy.toml

# 8. Protect data with your copy of a key (spec/stream-v1.md); files, or stdin and a pipe.
seq 1 100000 > dump.sql
teekms encrypt --key-id db --dek db.key -i dump.sql -o dump.sql.tkms
teekms decrypt --dek db.key -i dump.sql.tkms -o restored.sql   # appears only if every chunk authenticates
cmp dump.sql restored.sql
# ... or through the node, which holds the key (same format: either side decrypts the other's).
teekms encrypt --node "$node" --policy policy.toml --key-id db -i dump.sql -o by-node.tkms
teekms decrypt --dek db.key -i by-node.tkms | cmp - dump.sql

# 9. Small payloads under the node's key (spec/envelope-v1.md), as with AWS KMS / Vault transit.
echo -n 4111-1111 | teekms envelope encrypt --node "$node" --policy policy.toml --key-id db --aad row=7 -o card.env
teekms envelope decrypt --node "$node" --policy policy.toml --aad row=7 -i card.env; echo
teekms envelope generate-data-key --node "$node" --policy policy.toml --key-id db -o file.key --wrapped file.key.env

# 10. Others: access keys, granted by the key's policy (spec/key-policy-v1.md); default deny.
shipper=$(teekms access create --keys db --operations encrypt --expires-in 90d -o shipper.token --node "$node" --policy policy.toml)
printf '{"rules": [{"principals": [{"access_key": "%s"}], "operations": ["encrypt"]}]}\n' "$shipper" > db-policy.json
teekms key policy set db --file db-policy.json --node "$node" --policy policy.toml
echo -n parcel-17 | teekms envelope encrypt --access-key shipper.token --node "$node" --policy policy.toml --key-id db -o parcel.env

# 11. Lifecycle: versions, rotation, scheduled deletion (cancelled here), export (only if the key policy allows it).
teekms key rotate db --node "$node" --policy policy.toml
teekms key describe db --node "$node" --policy policy.toml
teekms key schedule-deletion backup --wait 30d --node "$node" --policy policy.toml
teekms key cancel-deletion backup --node "$node" --policy policy.toml

# 12. The audit log: every operation and denial, hash-chained and MAC'd inside the TEE (spec/audit-v1.md).
teekms audit tail -n 20 --node "$node" --policy policy.toml     # a table; --json for the entries as stored
teekms audit verify --node "$node" --policy policy.toml         # or --data-dir node --tee sim on a stopped node
teekms audit export --node "$node" --policy policy.toml -o audit.jsonl     # signed in the TEE; others' entries as links
teekms audit verify --file audit.jsonl --evidence node.json --policy policy.toml   # offline, anywhere
teekms audit prune --before 5 --node "$node" --policy policy.toml  # exported entries only (or --force)

# 13. Freshness: every answer carries the node's store epoch, signed in the TEE; a node that
#     later shows less (its store rolled back by the host) fails your next command (spec/freshness-v1.md).
teekms freshness show
# --- end ---

echo "== tour: every step ran"
