"""The AWS clients against a teekms node: awscli, boto3 and the AWS Encryption SDK CLI,
as pinned by ./test, each used as an application would use it (AWS_ENDPOINT_URL_KMS,
AWS_CA_BUNDLE from `teekms ca export`, AWS_SHARED_CREDENTIALS_FILE from
`teekms access create --aws-credentials`). Driven by crates/teekms-cli/tests/aws.rs,
which sets up the node, keys and credentials and passes them in the environment."""

import base64
import json
import os
import subprocess
import sys

import boto3
import botocore.exceptions

E = os.environ
VENV_BIN = os.path.dirname(sys.executable)
WORK = E["WORK"]
TEEKMS = E["TEEKMS"]
REGION = "us-east-1"
ARN = E["DB_ARN"]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def run(args, env=None, input=None):
    """Runs a program; returns stdout bytes; fails the test on a non-zero exit."""
    p = subprocess.run(args, capture_output=True, env=env or os.environ, input=input)
    if p.returncode != 0:
        print(f"FAILED: {args}: exit {p.returncode}\n{p.stdout.decode()}\n{p.stderr.decode()}")
        sys.exit(1)
    return p.stdout


def aws(*args):
    return json.loads(run([os.path.join(VENV_BIN, "aws"), "kms", *args, "--output", "json"]))


def path(name):
    return os.path.join(WORK, name)


def teekms(*args, input=None):
    return run([TEEKMS, *args], input=input)


# ---- awscli ----------------------------------------------------------------------------
with open(path("secret.txt"), "wb") as f:
    f.write(b"card 4111 1111 1111 1111")
enc = aws("encrypt", "--key-id", "alias/db", "--plaintext", "fileb://" + path("secret.txt"),
          "--encryption-context", "tenant=acme,purpose=test")
check(enc["KeyId"] == ARN and enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT",
      "aws kms encrypt answers the key's ARN")
blob = base64.b64decode(enc["CiphertextBlob"])
with open(path("aws.ct"), "wb") as f:
    f.write(blob)
dec = aws("decrypt", "--ciphertext-blob", "fileb://" + path("aws.ct"),
          "--encryption-context", "purpose=test,tenant=acme")
check(base64.b64decode(dec["Plaintext"]) == b"card 4111 1111 1111 1111" and dec["KeyId"] == ARN,
      "aws kms decrypt with the encryption context (pairs in another order)")
re = aws("re-encrypt", "--ciphertext-blob", "fileb://" + path("aws.ct"),
         "--source-encryption-context", "tenant=acme,purpose=test",
         "--destination-key-id", ARN, "--destination-encryption-context", "moved=yes")
check(re["SourceKeyId"] == ARN and re["KeyId"] == ARN, "aws kms re-encrypt names both keys")
with open(path("re.ct"), "wb") as f:
    f.write(base64.b64decode(re["CiphertextBlob"]))
back = aws("decrypt", "--ciphertext-blob", "fileb://" + path("re.ct"),
           "--encryption-context", "moved=yes")
check(base64.b64decode(back["Plaintext"]) == b"card 4111 1111 1111 1111",
      "the re-encrypted ciphertext opens under its new context")
gdk = aws("generate-data-key", "--key-id", ARN, "--key-spec", "AES_256")
check(len(base64.b64decode(gdk["Plaintext"])) == 32 and gdk["KeyId"] == ARN,
      "aws kms generate-data-key (AES_256) gives 32 bytes and the wrapped copy")
with open(path("gdk.ct"), "wb") as f:
    f.write(base64.b64decode(gdk["CiphertextBlob"]))
unwrapped = aws("decrypt", "--ciphertext-blob", "fileb://" + path("gdk.ct"))
check(unwrapped["Plaintext"] == gdk["Plaintext"], "the wrapped data key decrypts to the same key")
gdk16 = aws("generate-data-key", "--key-id", "db", "--number-of-bytes", "16")
check(len(base64.b64decode(gdk16["Plaintext"])) == 16, "NumberOfBytes 16")
wp = aws("generate-data-key-without-plaintext", "--key-id", "db", "--key-spec", "AES_128")
check("Plaintext" not in wp and wp["KeyId"] == ARN and len(base64.b64decode(wp["CiphertextBlob"])) > 16,
      "aws kms generate-data-key-without-plaintext has no Plaintext")
rnd = aws("generate-random", "--number-of-bytes", "64")
check(len(base64.b64decode(rnd["Plaintext"])) == 64, "aws kms generate-random 64 bytes")
desc = aws("describe-key", "--key-id", "db")["KeyMetadata"]
check(desc["Arn"] == ARN and desc["KeyState"] == "Enabled" and desc["Enabled"]
      and desc["KeyUsage"] == "ENCRYPT_DECRYPT" and desc["KeySpec"] == "SYMMETRIC_DEFAULT"
      and len(desc["AWSAccountId"]) == 12 and ARN.split(":")[4] == desc["AWSAccountId"],
      "aws kms describe-key: ARN, state, usage, spec, account")
keys = aws("list-keys")["Keys"]
ids = sorted(k["KeyId"] for k in keys)
check(ids == sorted(E["KEY_IDS"].split(",")) and all(k["KeyArn"].endswith("key/" + k["KeyId"]) for k in keys),
      "aws kms list-keys lists the keys in the access key's scope")
page = aws("list-keys", "--limit", "2", "--no-paginate")
check(len(page["Keys"]) == 2 and page["Truncated"] and page["NextMarker"],
      "list-keys pages with Limit and NextMarker")
rest = aws("list-keys", "--limit", "2", "--marker", page["NextMarker"], "--no-paginate")
check([k["KeyId"] for k in page["Keys"] + rest["Keys"]] == ids[:len(page["Keys"]) + len(rest["Keys"])],
      "the next page starts after the marker")
aliases = aws("list-aliases")["Aliases"]
check(sorted(a["AliasName"] for a in aliases) == sorted("alias/" + i for i in ids)
      and all(a["TargetKeyId"] == a["AliasName"][6:] for a in aliases),
      "aws kms list-aliases: alias/<key id> for each key")

# ---- boto3: the named exception for each refusal ---------------------------------------
session = boto3.session.Session(region_name=REGION)
kms = session.client("kms")


def raises(name, call, what):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        check(got == name, f"{what}: {name} (got {got}: {e.response['Error'].get('Message')})")
        return
    check(False, f"{what}: {name} expected, but the call succeeded")


with open(E["AWS_SHARED_CREDENTIALS_FILE"]) as f:
    creds = dict(l.split(" = ", 1) for l in f.read().splitlines() if " = " in l)
key_id = creds["aws_access_key_id"].strip()
wrong = boto3.session.Session(region_name=REGION, aws_access_key_id=key_id,
                              aws_secret_access_key="A" * 40).client("kms")
raises("InvalidSignatureException", lambda: wrong.describe_key(KeyId="db"), "a wrong secret")
unknown = boto3.session.Session(region_name=REGION, aws_access_key_id="ak-0000000000000000",
                                aws_secret_access_key="A" * 40).client("kms")
raises("UnrecognizedClientException", lambda: unknown.describe_key(KeyId="db"), "an unknown access key id")
raises("DisabledException", lambda: kms.encrypt(KeyId="off", Plaintext=b"x"), "a disabled key")
raises("KMSInvalidStateException", lambda: kms.encrypt(KeyId="doomed", Plaintext=b"x"),
       "a key pending deletion")
limited = boto3.session.Session(profile_name="limited", region_name=REGION).client("kms")
check(limited.describe_key(KeyId="db")["KeyMetadata"]["KeyId"] == "db",
      "the describe-only access key describes")
raises("AccessDeniedException", lambda: limited.encrypt(KeyId="db", Plaintext=b"x"),
       "an operation the access key may not do")
raises("NotFoundException", lambda: kms.encrypt(KeyId="no-such-key", Plaintext=b"x"), "an unknown key")
raises("NotFoundException",
       lambda: kms.encrypt(KeyId=ARN.replace("us-east-1", "eu-west-1"), Plaintext=b"x"),
       "an ARN of another region")
raises("InvalidCiphertextException",
       lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "other", "purpose": "test"}),
       "a wrong encryption context")
raises("InvalidCiphertextException", lambda: kms.decrypt(CiphertextBlob=blob), "a missing encryption context")
tampered = bytearray(blob)
tampered[-1] ^= 1
raises("InvalidCiphertextException",
       lambda: kms.decrypt(CiphertextBlob=bytes(tampered), EncryptionContext={"tenant": "acme", "purpose": "test"}),
       "a tampered ciphertext")
raises("InvalidCiphertextException", lambda: kms.decrypt(CiphertextBlob=b"not a ciphertext at all"),
       "bytes that are no ciphertext")
raises("IncorrectKeyException",
       lambda: kms.decrypt(CiphertextBlob=blob, KeyId="off", EncryptionContext={"tenant": "acme", "purpose": "test"}),
       "a KeyId that is not the ciphertext's")
raises("AccessDeniedException", lambda: kms.disable_key(KeyId="db"), "DisableKey, the owner's")
raises("AccessDeniedException", lambda: kms.schedule_key_deletion(KeyId="db"), "ScheduleKeyDeletion, the owner's")
raises("UnsupportedOperationException", lambda: kms.create_key(), "CreateKey")
raises("ValidationException", lambda: kms.encrypt(KeyId="db", Plaintext=b"x" * 4097), "4097 bytes of plaintext")
raises("ValidationException", lambda: kms.generate_random(NumberOfBytes=1025), "1025 random bytes")

# ---- recipients: a sim workload's attestation document ---------------------------------
with open(E["WL_DOC"], "rb") as f:
    doc = f.read()
with open(E["STRANGER_DOC"], "rb") as f:
    stranger = f.read()
wl_ct = kms.encrypt(KeyId="wl", Plaintext=b"model weights key")["CiphertextBlob"]
recipient = {"KeyEncryptionAlgorithm": "TEEKMS_HPKE_X25519_SHA256_AES256GCM", "AttestationDocument": doc}
r = kms.decrypt(CiphertextBlob=wl_ct, Recipient=recipient)
check("Plaintext" not in r and r["CiphertextForRecipient"], "Decrypt with a Recipient answers CiphertextForRecipient only")
with open(path("for-recipient.bin"), "wb") as f:
    f.write(r["CiphertextForRecipient"])
opened = teekms("workload", "open", "--key", E["WL_KEY"], "-i", path("for-recipient.bin"))
check(opened == b"model weights key", "the workload opens it with its key")
g = kms.generate_data_key(KeyId="wl", NumberOfBytes=32, Recipient=recipient)
check("Plaintext" not in g and len(teekms("workload", "open", "--key", E["WL_KEY"],
                                          input=base64.b64encode(g["CiphertextForRecipient"]))) == 32,
      "GenerateDataKey with a Recipient: the data key opens with the workload's key (from base64)")
gr = kms.generate_random(NumberOfBytes=24, Recipient=recipient)
check("Plaintext" not in gr and gr["CiphertextForRecipient"], "GenerateRandom with a Recipient")
raises("AccessDeniedException",
       lambda: kms.decrypt(CiphertextBlob=wl_ct, Recipient={**recipient, "AttestationDocument": stranger}),
       "a workload the key policy does not admit")
raises("AccessDeniedException", lambda: kms.decrypt(CiphertextBlob=wl_ct),
       "the access key alone, where the rule needs the workload too")
raises("AccessDeniedException",
       lambda: kms.decrypt(CiphertextBlob=wl_ct, Recipient={**recipient, "AttestationDocument": b"{}"}),
       "a document that is no attestation")

# ---- cross-protocol: AWS ciphertexts open with teekms, and the other way round ---------
via_node = teekms("envelope", "decrypt", "--node", E["NODE"], "--policy", E["POLICY"],
                  "--context", "tenant=acme", "--context", "purpose=test", "-i", path("aws.ct"))
check(via_node == b"card 4111 1111 1111 1111", "an aws kms ciphertext opens with teekms envelope decrypt (node)")
offline = teekms("envelope", "decrypt", "--dek", E["DEK"], "--context", "tenant=acme",
                 "--context", "purpose=test", "-i", path("aws.ct"))
check(offline == b"card 4111 1111 1111 1111", "... and offline with the owner's copy (--dek)")
teekms("envelope", "encrypt", "--node", E["NODE"], "--policy", E["POLICY"], "--key-id", "db",
       "--context", "app=billing", "-i", path("secret.txt"), "-o", path("native.ct"))
from_native = aws("decrypt", "--ciphertext-blob", "fileb://" + path("native.ct"),
                  "--encryption-context", "app=billing")
check(base64.b64decode(from_native["Plaintext"]) == b"card 4111 1111 1111 1111",
      "a teekms envelope encrypt --context ciphertext opens with aws kms decrypt")

# ---- the AWS Encryption SDK CLI: 10 MiB with the key's ARN -----------------------------
big = path("big.bin")
with open(big, "wb") as f:
    f.write(os.urandom(10 * 1024 * 1024))
esdk = os.path.join(VENV_BIN, "aws-encryption-cli")
run([esdk, "--encrypt", "--input", big, "--output", path("big.enc"), "--wrapping-keys", f"key={ARN}",
     "--encryption-context", "purpose=backup", "--commitment-policy", "require-encrypt-require-decrypt",
     "--metadata-output", path("enc.meta")])
run([esdk, "--decrypt", "--input", path("big.enc"), "--output", path("big.dec"), "--wrapping-keys", f"key={ARN}",
     "--encryption-context", "purpose=backup", "--commitment-policy", "require-encrypt-require-decrypt",
     "--metadata-output", path("dec.meta")])
with open(big, "rb") as a, open(path("big.dec"), "rb") as b:
    check(a.read() == b.read(), "aws-encryption-cli encrypts and decrypts 10 MiB with the ARN, byte-identical")

# ---- the same CA file against another node of the cluster ------------------------------
other = subprocess.run([os.path.join(VENV_BIN, "aws"), "kms", "decrypt", "--ciphertext-blob",
                        "fileb://" + path("aws.ct"), "--encryption-context", "tenant=acme,purpose=test",
                        "--output", "json"], capture_output=True,
                       env={**os.environ, "AWS_ENDPOINT_URL_KMS": E["NODE2"]})
check(other.returncode == 0 and base64.b64decode(json.loads(other.stdout)["Plaintext"]) == b"card 4111 1111 1111 1111",
      f"the same CA file and credentials work against the cluster's second node {other.stderr.decode()}")
print("all AWS client checks passed")
