#!/usr/bin/env bash
# Two data owners, one untrusted machine, one joint result that only the owners can read.
#
#   bank:     customer_id,region,spend       (encrypted with the bank's key)
#   retailer: customer_id,segment,purchases  (encrypted with the retailer's key)
#
# A teekms node (sim TEE here) holds both keys. The workload program, attested by its
# measurement, fetches them, joins the two files on customer_id in memory, and returns the
# result encrypted to each owner under that owner's own key. Neither owner sees the
# other's rows; the machine's operator sees nothing. Runs from any directory; state lives
# in a temporary directory; exits 0 on success.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -n "${TEEKMS_BIN_DIR:-}" ]; then
    bin=$TEEKMS_BIN_DIR   # prebuilt teekms and joint-stats-workload (the test suite's)
else
    echo "== building (release)"
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p teekms-cli -p joint-stats
    bin="$root/target/release"
fi
teekms="$bin/teekms"

work=$(mktemp -d)
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# Everything (owner keys, sim root) stays in the temporary directory.
export HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share"
unset TEEKMS_OWNER TEEKMS_SIM_ROOT TEEKMS_ACCESS_KEY_FILE
mkdir -p "$HOME"

echo "== the node (sim TEE: INSECURE, for the demonstration)"
"$teekms" serve --tee sim --listen 127.0.0.1:0 --data-dir "$work/node" >"$work/node.out" 2>"$work/node.err" &
node_pid=$!
for _ in $(seq 100); do grep -q https:// "$work/node.out" 2>/dev/null && break; sleep 0.05; done
url=$(grep -o 'https://[^ ]*' "$work/node.out" | head -1)
echo "node at $url"
sim_root=$("$teekms" sim root)
printf '[[accept]]\ntee = "sim"\nsim_root = "%s"\n' "$sim_root" >"$work/policy.toml"

# The workload is admitted by its measurement: only this exact program may fetch the keys.
measurement=$("$teekms" sim measure "$bin/joint-stats-workload")
cat >"$work/key-policy.json" <<JSON
{"rules": [{"principals": [{"workload": {"tee": "sim", "sim_root": "$sim_root", "measurement": "$measurement"}}],
            "operations": ["fetch"]}]}
JSON

owner() { # name csv
    local name=$1
    export TEEKMS_OWNER="$work/$name.owner"
    "$teekms" owner init >/dev/null
    "$teekms" key generate -o "$work/$name.key" >/dev/null
    "$teekms" key deploy --node "$url" --policy "$work/policy.toml" --key-id "$name" \
        --dek "$work/$name.key" --key-policy "$work/key-policy.json" >/dev/null 2>"$work/$name.deploy.err"
    printf '%s' "$2" | "$teekms" encrypt --key-id "$name" --dek "$work/$name.key" -o "$work/$name.csv.tkms"
    "$teekms" owner init | sed -n 's/^fingerprint: //p'
    unset TEEKMS_OWNER
}

echo "== two owners deploy a key each and upload their data, encrypted"
bank_fp=$(owner bank 'customer_id,region,spend
c01,north,120
c02,north,80
c03,south,200
c04,south,50
c05,east,75
c06,east,310
')
retail_fp=$(owner retailer 'customer_id,segment,purchases
c02,gold,7
c03,gold,12
c04,silver,3
c06,silver,9
c07,gold,4
c08,bronze,1
')
echo "bank $bank_fp"
echo "retailer $retail_fp"

echo "== the workload attests, fetches both keys, computes, and seals the result to each owner"
"$bin/joint-stats-workload" --node "$url" --policy "$work/policy.toml" \
    --sim-root "$XDG_DATA_HOME/teekms/sim-root.key" \
    --input "$bank_fp:bank:$work/bank.csv.tkms" \
    --input "$retail_fp:retailer:$work/retailer.csv.tkms" \
    --out-dir "$work" 2>&1 | sed 's/^/   /'

echo "== each owner decrypts the result with their own key"
echo "-- bank:"
"$teekms" decrypt --dek "$work/bank.key" -i "$work/result-for-owner-1.tkms"
echo "-- retailer:"
"$teekms" decrypt --dek "$work/retailer.key" -i "$work/result-for-owner-2.tkms"

echo "== an impostor program (any other binary) is refused the keys"
if "$teekms" workload fetch --node "$url" --policy "$work/policy.toml" --tee sim \
        --key-id bank --key-owner "$bank_fp" -o "$work/stolen.key" 2>"$work/impostor.err"; then
    echo "FAIL: an unadmitted workload got a key"; exit 1
fi
sed 's/^/   /' "$work/impostor.err" | grep -m1 -i "error" || true

echo "== the node's audit log"
TEEKMS_OWNER="$work/bank.owner" "$teekms" audit tail -n 4 --node "$url" --policy "$work/policy.toml" 2>/dev/null \
    | sed -E 's/"(prev|mac)":"[0-9a-f]+"/"\1":"…"/g; s/[0-9a-f]{64}/…/g' | sed 's/^/   /'
echo "== done"
