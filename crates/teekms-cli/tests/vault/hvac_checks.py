"""hvac, pinned by ./test, against a teekms node's Vault Transit API, as an application
uses it (the node's URL, an access token, the CA from `teekms ca export`). Driven by
crates/teekms-cli/tests/vault.rs, which sets up the node, keys and token."""

import base64
import os
import subprocess
import sys

import hvac

E = os.environ
URL, CA, TEEKMS, POLICY = E["NODE"], E["CA"], E["TEEKMS"], E["POLICY"]
with open(E["TOKEN_FILE"]) as f:
    TOKEN = f.read().strip()


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def b64(data):
    return base64.b64encode(data).decode()


def teekms(*args, input=None):
    p = subprocess.run([TEEKMS, *args], capture_output=True, input=input)
    if p.returncode != 0:
        print(f"FAILED: teekms {args}: {p.stderr.decode()}")
        sys.exit(1)
    return p.stdout


def raises(exc, call, what):
    try:
        call()
    except exc as e:
        check(True, f"{what}: {exc.__name__} ({e})")
        return
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: {exc.__name__} expected, got {type(e).__name__}: {e}")
    check(False, f"{what}: {exc.__name__} expected, but the call succeeded")


client = hvac.Client(url=URL, token=TOKEN, verify=CA)
transit = client.secrets.transit
check(client.is_authenticated(), "is_authenticated with the access token")
check(client.sys.read_health_status(method="GET")["sealed"] is False, "sys/health: unsealed")

# encrypt / decrypt, with and without context
ct = transit.encrypt_data(name="db", plaintext=b64(b"no context"))["data"]["ciphertext"]
check(ct.startswith("vault:v1:"), "encrypt_data answers vault:v1:")
check(base64.b64decode(transit.decrypt_data(name="db", ciphertext=ct)["data"]["plaintext"]) == b"no context",
      "decrypt_data without context")
ctx = b64(b"tenant-7")
ct_ctx = transit.encrypt_data(name="db", plaintext=b64(b"with context"), context=ctx)["data"]["ciphertext"]
check(base64.b64decode(transit.decrypt_data(name="db", ciphertext=ct_ctx, context=ctx)["data"]["plaintext"])
      == b"with context", "decrypt_data with the same context")
raises(hvac.exceptions.InvalidRequest, lambda: transit.decrypt_data(name="db", ciphertext=ct_ctx, context=b64(b"tenant-8")),
       "a wrong context")
raises(hvac.exceptions.InvalidRequest, lambda: transit.decrypt_data(name="db", ciphertext=ct_ctx),
       "a missing context")

# batches of 100
items = [{"plaintext": b64(b"item %d" % i), "context": ctx} for i in range(100)]
enc = transit.encrypt_data(name="db", batch_input=items)["data"]["batch_results"]
check(len(enc) == 100 and all(r["ciphertext"].startswith("vault:v1:") for r in enc), "batch encrypt of 100")
dec = transit.decrypt_data(name="db", batch_input=[{"ciphertext": r["ciphertext"], "context": ctx} for r in enc])
dec = dec["data"]["batch_results"]
check([base64.b64decode(r["plaintext"]) for r in dec] == [b"item %d" % i for i in range(100)],
      "batch decrypt of 100, in order")

# data keys
pk = transit.generate_data_key(name="db", key_type="plaintext")["data"]
check(len(base64.b64decode(pk["plaintext"])) == 32 and pk["ciphertext"].startswith("vault:v1:"),
      "generate_data_key plaintext (256 bits)")
unwrapped = transit.decrypt_data(name="db", ciphertext=pk["ciphertext"])["data"]["plaintext"]
check(unwrapped == pk["plaintext"], "the wrapped data key decrypts to it")
wk = transit.generate_data_key(name="db", key_type="wrapped", bits=512)["data"]
check("plaintext" not in wk and wk["ciphertext"].startswith("vault:v1:"), "generate_data_key wrapped (512 bits)")

# keys, rotation by the owner, rewrap
key = transit.read_key(name="db")["data"]
check(key["type"] == "aes256-gcm96" and key["latest_version"] == 1 and list(key["keys"]) == ["1"],
      "read_key: type, latest_version, versions")
check(transit.list_keys()["data"]["keys"] == sorted(E["KEY_IDS"].split(",")), "list_keys")
raises(hvac.exceptions.Forbidden, lambda: transit.rotate_key(name="db"), "rotate_key with the access token")
teekms("key", "rotate", "db", "--node", URL, "--policy", POLICY)
key = transit.read_key(name="db")["data"]
check(key["latest_version"] == 2 and sorted(key["keys"]) == ["1", "2"], "read_key after the owner rotated")
rw = transit.rewrap_data(name="db", ciphertext=ct_ctx, context=ctx)["data"]
check(rw["ciphertext"].startswith("vault:v2:") and rw["key_version"] == 2, "rewrap_data moves to version 2")
check(base64.b64decode(transit.decrypt_data(name="db", ciphertext=rw["ciphertext"], context=ctx)["data"]["plaintext"])
      == b"with context", "the rewrapped ciphertext decrypts")

# refusals
raises(hvac.exceptions.InvalidRequest, lambda: transit.encrypt_data(name="off", plaintext=b64(b"x")), "a disabled key")
raises(hvac.exceptions.InvalidRequest, lambda: transit.encrypt_data(name="db", plaintext=b64(b"x"), convergent_encryption=True),
       "convergent encryption")
raises(hvac.exceptions.InvalidPath, lambda: transit.sign_data(name="db", hash_input=b64(b"x")), "sign (unsupported path)")
# Vault answers 405 for an operation a path does not support; hvac maps no class to it.
raises(hvac.exceptions.UnexpectedError, lambda: transit.create_key(name="new"), "create_key (405 unsupported operation)")
stranger = hvac.Client(url=URL, token="ak-0000000000000000." + "0" * 64, verify=CA)
check(not stranger.is_authenticated(), "an unknown token is not authenticated")
raises(hvac.exceptions.Forbidden, lambda: stranger.secrets.transit.encrypt_data(name="db", plaintext=b64(b"x")),
       "an unknown token")

# cross-format: vault:v1: opens with teekms, a native ciphertext opens through hvac
with open(os.path.join(E["WORK"], "vault.ct"), "w") as f:
    f.write(ct_ctx)
opened = teekms("envelope", "decrypt", "--node", URL, "--policy", POLICY, "--context", "context=" + ctx,
                "-i", os.path.join(E["WORK"], "vault.ct"))
check(opened == b"with context", "a vault:v1: ciphertext opens with teekms envelope decrypt --context context=<b64>")
native = teekms("envelope", "encrypt", "--node", URL, "--policy", POLICY, "--key-id", "db",
                "--context", "associated_data=" + b64(b"ad"), input=b"native bytes")
wrapped = "vault:v2:" + base64.b64encode(native).decode()
check(base64.b64decode(transit.decrypt_data(name="db", ciphertext=wrapped, associated_data=b64(b"ad"))["data"]["plaintext"])
      == b"native bytes", "a native ciphertext wrapped as vault:v2: opens through hvac")

# revocation last: the token stops working at once
teekms("access", "revoke", E["TOKEN_ID"], "--node", URL, "--policy", POLICY)
raises(hvac.exceptions.Forbidden, lambda: transit.encrypt_data(name="db", plaintext=b64(b"x")), "a revoked token")
check(not client.is_authenticated(), "a revoked token is not authenticated")
print("all hvac checks passed")
