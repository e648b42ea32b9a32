//! Command-line interface definition.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// teekms: a key management service inside a Trusted Execution Environment.
#[derive(Parser)]
#[command(name = "teekms", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The owner's identity (an Ed25519 key pair on this machine).
    #[command(subcommand)]
    Owner(OwnerCmd),
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// The simulated TEE (development only, INSECURE).
    #[command(subcommand)]
    Sim(SimCmd),
    /// Fetch and verify a node's attestation.
    #[command(subcommand)]
    Attest(AttestCmd),
    /// Verify real TEE evidence (SGX, TDX, SEV-SNP) offline with its collateral.
    #[command(subcommand)]
    Evidence(EvidenceCmd),
    /// Inspect offline collateral directories.
    #[command(subcommand)]
    Collateral(CollateralCmd),
    /// Generate, wrap, deploy, import and list data keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Encrypt a file or stream under a data key (spec/stream-v1.md): with your copy
    /// (--dek) or through a node that holds the key (--node).
    Encrypt(EncryptArgs),
    /// Decrypt a file or stream made by `teekms encrypt` (--dek or --node).
    Decrypt(DecryptArgs),
    /// Small payloads (at most 64 KiB) under a key a node holds: encrypt, decrypt,
    /// generate-data-key, re-encrypt (spec/envelope-v1.md).
    #[command(subcommand)]
    Envelope(EnvelopeCmd),
    /// Access keys: credentials an owner creates for others, scoped to keys and operations.
    #[command(subcommand)]
    Access(AccessCmd),
    /// The node's audit log: verify the hash chain, show recent entries.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// For programs inside a TEE: obtain keys by attestation.
    #[command(subcommand)]
    Workload(WorkloadCmd),
    /// The cluster: who may join it (its admin changes that, e.g. for an upgrade).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// age: recipients that encrypt to a key with no node, identities that decrypt
    /// through it (with age-plugin-teekms on the PATH).
    #[command(subcommand)]
    Age(AgeCmd),
    /// The cluster's TLS CA, for clients that check certificate chains, not evidence
    /// (AWS SDKs, curl, Python).
    #[command(subcommand)]
    Ca(CaCmd),
    /// Restore a cluster from its officers' shares when every node is gone.
    #[command(subcommand)]
    Recovery(RecoveryCmd),
    /// What nodes showed you of their store's epoch (spec/freshness-v1.md).
    #[command(subcommand)]
    Freshness(FreshnessCmd),
    /// Run the whole flow in a temporary directory and narrate it.
    Demo,
    /// Print the shell completion script (bash: `source <(teekms completions bash)`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (`teekms.1` and a `teekms-<subcommand>.1` each) into DIR.
    Man {
        /// Where to write them (made if absent).
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Args, Clone)]
pub struct OwnerArg {
    /// Owner key file [default: $XDG_CONFIG_HOME/teekms/owner.key]
    #[arg(long, env = "TEEKMS_OWNER", value_name = "FILE")]
    pub owner: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct SimRootArg {
    /// Sim platform root key [default: $XDG_DATA_HOME/teekms/sim-root.key]
    #[arg(long, env = "TEEKMS_SIM_ROOT", value_name = "FILE")]
    pub sim_root: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum OwnerCmd {
    /// Create the owner key pair (prints the fingerprint if it already exists).
    Init(OwnerArg),
    /// Write the owner's TLS client certificate and key in PEM, for curl, OpenSSL or
    /// Python to call the API as the owner (the key file is as secret as the owner key).
    TlsCert {
        #[command(flatten)]
        owner: OwnerArg,
        /// Where to write the certificate (PEM).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Where to write the private key (PEM, PKCS#8, mode 0600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TeeArg {
    /// The TEE hardware present (SGX under Gramine, TDX, SNP); never falls back to sim.
    Auto,
    /// Simulated TEE: INSECURE, for development and tests.
    Sim,
    /// Intel SGX under Gramine.
    Sgx,
    /// Intel TDX confidential VM.
    Tdx,
    /// AMD SEV-SNP confidential VM.
    Snp,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Which TEE this node runs in (never guessed).
    #[arg(long, value_enum)]
    pub tee: TeeArg,
    /// How the node writes its lines: text, or one JSON object per line on stdout and
    /// stderr (the "listening" line and warnings included).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Directory for the node's sealed state.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Where the other members of a cluster (--store) reach this node, https://HOST:PORT
    /// (default: https:// and the address it listens on).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// On a shared store (--store), whether data-plane answers (encrypt, decrypt, …)
    /// wait until a majority of the members confirm that none holds a newer epoch
    /// (spec/freshness-v1.md, "Cluster rules", 3). Off: a node cut off from its peers
    /// with a stale database in front of it is caught only by its own memory and by
    /// owners' stamps.
    #[arg(long, value_enum, default_value = "on")]
    pub data_plane_confirmation: Switch,
    /// Shortest waiting period owners may give a scheduled key deletion (e.g. 7d, 1h).
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub min_deletion_wait: String,
    /// End a stream (`/v1/stream/*`) whose client sends no request bytes, or takes no
    /// response bytes, for this long (e.g. 60s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub stream_idle_timeout: String,
    /// Memory that streams through the node may hold at once (e.g. 256MiB, 1GiB); a
    /// stream that does not fit waits for room, then gets 503 busy.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub stream_memory: String,
    /// Most open client connections (default: the open-file limit, raised to its hard
    /// limit at start, less a reserve); at the cap, the oldest connections that have not
    /// sent a request are closed to let new clients in.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// `GET /v1/ready` answers 503 once the TEE's collateral (DCAP, SNP) expires within
    /// this many days, so that a load balancer moves away before evidence stops verifying.
    #[arg(long, value_name = "DAYS", default_value_t = teekms_server::DEFAULT_COLLATERAL_WARN_DAYS)]
    pub collateral_warn: u64,
    /// A DNS name or IP address for the node's TLS certificate (repeatable), which
    /// clients that check host names (AWS SDKs, curl) connect by [default: localhost,
    /// 127.0.0.1, ::1]. The certificate chains to the cluster's CA (`teekms ca export`).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// How long the node's TLS certificate is valid; the node renews it after two
    /// thirds of that, while it runs (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub tls_cert_lifetime: String,
    /// The AWS region of the AWS KMS API: SigV4 credential scopes must name it, and
    /// ARNs carry it.
    #[arg(long, value_name = "REGION", default_value = teekms_server::DEFAULT_AWS_REGION)]
    pub aws_region: String,
    /// Serve Prometheus metrics on this address (plain HTTP, GET /metrics; off unless
    /// given). Keep it off networks a Prometheus server does not need.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where the Vault Transit API is mounted: /v1/NAME/ (Vault's `mount_point`).
    #[arg(long, value_name = "NAME", default_value = teekms_server::DEFAULT_TRANSIT_MOUNT)]
    pub transit_mount: String,
    /// Recovery officers' public key files (from `teekms recovery officer-init`),
    /// comma-separated: the cluster key is split among them once, shares written to
    /// DATA_DIR/recovery/.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FILE",
        requires = "recovery_threshold"
    )]
    pub recovery_officers: Vec<PathBuf>,
    /// How many officers' shares restore the cluster.
    #[arg(long, value_name = "K", requires = "recovery_officers")]
    pub recovery_threshold: Option<u8>,
    /// Keep the cluster's records in PostgreSQL (postgres://USER@HOST:PORT/DB or
    /// "host=... user=..."); the node's own sealed records stay in --data-dir.
    #[arg(long, value_name = "URL", env = "TEEKMS_STORE")]
    pub store: Option<String>,
    /// On first start, join the cluster of this node (https://HOST:PORT) over mutual
    /// RA-TLS instead of creating a cluster (with --store: the cluster's database).
    #[arg(long, value_name = "URL", requires = "store")]
    pub join: Option<String>,
    /// Cluster policy (TOML, as owners' policies): who may join; for a joiner, what the
    /// node it joins must be [default: the same TEE and measurement, and sim root].
    #[arg(long, value_name = "FILE")]
    pub cluster_policy: Option<PathBuf>,
    /// The owner (fingerprint, from `teekms owner init`) who may later change the cluster
    /// policy (`teekms cluster policy set`), e.g. to admit a new teekms version; taken
    /// only when the cluster is made.
    #[arg(long, value_name = "FINGERPRINT", requires = "store")]
    pub cluster_admin: Option<String>,
    #[command(flatten)]
    pub platform: PlatformArgs,
}

#[derive(Args, Clone)]
pub struct PlatformArgs {
    #[command(flatten)]
    pub sim_root: SimRootArg,
    /// SGX: Gramine's attestation interface.
    #[arg(long, value_name = "DIR", default_value = teekms_platform::gramine::DEFAULT_DIR)]
    pub attestation_dir: PathBuf,
    /// SGX: which sealing identity the node's state is bound to.
    #[arg(long, value_enum, default_value = "mrsigner")]
    pub seal_to: SealToArg,
    /// TDX and SNP: the configfs-tsm report directory.
    #[arg(long, value_name = "DIR", default_value = teekms_platform::configfs::DEFAULT_ROOT)]
    pub tsm_dir: PathBuf,
    /// SNP: the SEV guest device (sealing key).
    #[arg(long, value_name = "FILE", default_value = "/dev/sev-guest")]
    pub sev_guest: PathBuf,
    /// Collateral directory shipped in the node's attestation document (offline sites).
    #[arg(long = "collateral", value_name = "DIR")]
    pub collateral: Option<PathBuf>,
    /// Fetch the node's collateral at start from a PCCS / Intel PCS / AMD KDS into
    /// DATA_DIR/collateral (used instead of --collateral).
    #[arg(long, value_name = "URL")]
    pub collateral_url: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SealToArg {
    /// MRSIGNER: upgrades by the same signer keep state.
    Mrsigner,
    /// MRENCLAVE: only this exact enclave.
    Mrenclave,
}

#[derive(Subcommand)]
pub enum SimCmd {
    /// Print the sim root public key (hex), creating the root if absent.
    Root(SimRootArg),
    /// Print the sim measurement of a program (SHA-384 of the file, hex): what a policy
    /// pins for a node or workload binary on the sim TEE.
    Measure {
        /// The executable.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AttestCmd {
    /// Save a node's attestation document.
    Fetch {
        /// The node, https://HOST:PORT.
        #[arg(long)]
        node: String,
        /// Output file [default: stdout].
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Verify a saved attestation document against a policy.
    Verify {
        /// The attestation document (from `attest fetch`).
        document: PathBuf,
        /// Verification policy (TOML).
        #[arg(long, value_name = "POLICY")]
        policy: PathBuf,
        /// Print the verdict as one JSON object.
        #[arg(long)]
        json: bool,
        /// Collateral directory to verify real-TEE evidence with (replaces the document's).
        #[arg(long, value_name = "DIR")]
        collateral: Option<PathBuf>,
        /// Verification time, RFC 3339 UTC [default: now].
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Write a fresh 256-bit data key (64 hex characters and a newline, mode 0600).
    Generate {
        /// Output file (must not exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Verify a node, then wrap a data key to it and deploy it online.
    Deploy(DeployArgs),
    /// Verify a saved attestation offline and wrap a data key into a bundle file.
    Wrap(WrapArgs),
    /// Import a bundle into a running node (--node) or a stopped one (--data-dir).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["node", "data_dir"])))]
    Import {
        /// The bundle file.
        bundle: PathBuf,
        /// A running node, https://HOST:PORT.
        #[arg(long)]
        node: Option<String>,
        /// A stopped node's data dir (run this inside the node's TEE).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// With --data-dir: the TEE of that node.
        #[arg(long, value_enum, requires = "data_dir")]
        tee: Option<TeeArg>,
        /// With --node: also verify the node's fresh evidence against this policy.
        #[arg(long, value_name = "POLICY", requires = "node")]
        policy: Option<PathBuf>,
        /// Where to write the receipt [default: BUNDLE.receipt].
        #[arg(long, value_name = "FILE")]
        receipt: Option<PathBuf>,
        #[command(flatten)]
        platform: PlatformArgs,
    },
    /// Check a node's receipt against its attestation and your data key (offline).
    CheckReceipt {
        /// The receipt file.
        receipt: PathBuf,
        /// The node's attestation document (the one you wrapped to).
        #[arg(long, value_name = "FILE")]
        evidence: PathBuf,
        /// Verification policy (TOML).
        #[arg(long, value_name = "POLICY")]
        policy: PathBuf,
        /// Key id.
        #[arg(long)]
        key_id: String,
        /// Data key file.
        #[arg(long, value_name = "FILE")]
        dek: PathBuf,
        #[command(flatten)]
        owner: OwnerArg,
        #[command(flatten)]
        collateral: CollateralArg,
    },
    /// A key's metadata: versions with their check values, state, deletion.
    Describe {
        /// The key id.
        key_id: String,
        /// The key's owner (fingerprint) when it is not your own.
        #[arg(long)]
        key_owner: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// A new version for new encryptions; older versions still decrypt.
    Rotate(KeyAdmin),
    /// Let the key be used again.
    Enable(KeyAdmin),
    /// Refuse every use of the key until it is enabled.
    Disable(KeyAdmin),
    /// Delete the key after a waiting period (cancellable until then).
    ScheduleDeletion {
        #[command(flatten)]
        key: KeyAdmin,
        /// Waiting period such as 7d or 30d [default: 7d; the node sets a minimum].
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
    },
    /// Cancel a scheduled deletion.
    CancelDeletion(KeyAdmin),
    /// Versions below VERSION stop decrypting.
    MinDecryptionVersion {
        #[command(flatten)]
        key: KeyAdmin,
        /// The oldest version that still decrypts.
        version: u64,
    },
    /// Export a version's material (only if the key policy says "exportable": true),
    /// HPKE-wrapped to a key made here, checked by its KCV, written as a data key file.
    Export {
        #[command(flatten)]
        key: KeyAdmin,
        /// Which version [default: current].
        #[arg(long)]
        version: Option<u64>,
        /// Data key file to write (must not exist; mode 0600).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Read or replace a key's policy (spec/key-policy-v1.md).
    #[command(subcommand)]
    Policy(KeyPolicyCmd),
    /// List your keys on a node (id, created, key check value; never material).
    List {
        /// The node, https://HOST:PORT.
        #[arg(long)]
        node: String,
        /// Verification policy (TOML).
        #[arg(long, value_name = "POLICY")]
        policy: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        owner: OwnerArg,
        #[command(flatten)]
        collateral: CollateralArg,
    },
}

/// A setting that is on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// A verified node, and who to be on it.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// The node, https://HOST:PORT.
    #[arg(long)]
    pub node: String,
    /// Verification policy (TOML) the node must satisfy before anything is sent.
    #[arg(long, value_name = "POLICY")]
    pub policy: PathBuf,
    /// Act with this access key (its token, in a file) instead of as an owner.
    #[arg(long, value_name = "FILE", env = "TEEKMS_ACCESS_KEY_FILE")]
    pub access_key: Option<PathBuf>,
    #[command(flatten)]
    pub owner: OwnerArg,
    #[command(flatten)]
    pub collateral: CollateralArg,
}

/// An owner's administrative action on one of their keys.
#[derive(Args, Clone)]
pub struct KeyAdmin {
    /// The key id.
    pub key_id: String,
    /// Print one JSON object (the key's description afterwards).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Subcommand)]
pub enum KeyPolicyCmd {
    /// Print the key policy (JSON).
    Get {
        /// The key id.
        key_id: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Replace the key policy with the JSON object in FILE (checked by the node).
    Set {
        /// The key id.
        key_id: String,
        /// The policy file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// `serve --log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
pub enum AgeCmd {
    /// Print the age recipient (age1teekms1…) of a key's current version, once the
    /// node's evidence verified against the policy and its signature on the key's age
    /// key checked. `age -r` encrypts to it with no node.
    Recipient {
        /// The key id.
        #[arg(long)]
        key_id: String,
        /// The key's owner (fingerprint) when it is not your own namespace.
        #[arg(long)]
        key_owner: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Write an age identity (AGE-PLUGIN-TEEKMS-1…) that decrypts through the node with
    /// an access key; it names the token file, the secret stays there.
    Identity {
        /// The node, https://HOST:PORT (a name its certificate carries: --tls-san).
        #[arg(long)]
        node: String,
        /// The cluster's CA file (`teekms ca export`).
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// The access key's token file (`teekms access create -o`).
        #[arg(long, value_name = "FILE")]
        access_key: PathBuf,
        /// The identity file to write (must not exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum CaCmd {
    /// Verify the node's fresh evidence against the policy, then write the CA
    /// certificate its statement binds (PEM): a trust file for AWS_CA_BUNDLE, curl
    /// --cacert, Python's ssl. The same CA serves every node of the cluster, for good.
    Export {
        /// The node, https://HOST:PORT.
        #[arg(long)]
        node: String,
        /// Verification policy (TOML) the node must satisfy.
        #[arg(long, value_name = "POLICY")]
        policy: PathBuf,
        /// Where to write the CA certificate [default: stdout].
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        collateral: CollateralArg,
    },
}

#[derive(Subcommand)]
pub enum EnvelopeCmd {
    /// Encrypt at most 64 KiB under a key's current version; the ciphertext names it.
    Encrypt {
        /// The key id.
        #[arg(long)]
        key_id: String,
        /// The key's owner (fingerprint) when it is not your own namespace.
        #[arg(long)]
        key_owner: Option<String>,
        /// Associated data (needed again to decrypt).
        #[arg(long)]
        aad: Option<String>,
        /// Encryption context (KEY=VALUE, repeatable), bound as the associated data
        /// (spec/envelope-v1.md); what AWS KMS calls EncryptionContext.
        #[arg(long = "context", value_name = "KEY=VALUE", conflicts_with = "aad")]
        context: Vec<String>,
        #[command(flatten)]
        io: InOut,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Decrypt an envelope ciphertext: through a node that holds its key (--node), or
    /// offline with your copy of the key version that made it (--dek).
    #[command(group(clap::ArgGroup::new("keysource").required(true).args(["dek", "node"])))]
    Decrypt {
        /// Associated data given at encryption.
        #[arg(long)]
        aad: Option<String>,
        /// Encryption context (KEY=VALUE, repeatable), bound as the associated data
        /// (spec/envelope-v1.md); what AWS KMS calls EncryptionContext.
        #[arg(long = "context", value_name = "KEY=VALUE", conflicts_with = "aad")]
        context: Vec<String>,
        /// Your copy of the data key (a data key file): no node needed.
        #[arg(long, value_name = "FILE")]
        dek: Option<PathBuf>,
        /// Decrypt through this node, which holds the key (https://HOST:PORT).
        #[arg(long, requires = "policy")]
        node: Option<String>,
        #[command(flatten)]
        via: ViaNode,
        #[command(flatten)]
        collateral: CollateralArg,
        #[command(flatten)]
        io: InOut,
    },
    /// A fresh data key: written in plaintext to -o (mode 0600), wrapped under the key
    /// to --wrapped.
    GenerateDataKey {
        /// The wrapping key.
        #[arg(long)]
        key_id: String,
        /// The key's owner (fingerprint) when it is not your own namespace.
        #[arg(long)]
        key_owner: Option<String>,
        /// Data key file to write (must not exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Where the wrapped copy goes.
        #[arg(long, value_name = "FILE")]
        wrapped: PathBuf,
        /// Encryption context (KEY=VALUE, repeatable) bound to the wrapped copy.
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Move a ciphertext to the key's latest version, or to another key, inside the node.
    ReEncrypt {
        /// Associated data of the input.
        #[arg(long)]
        aad: Option<String>,
        /// Encryption context (KEY=VALUE, repeatable), bound as the associated data
        /// (spec/envelope-v1.md); what AWS KMS calls EncryptionContext.
        #[arg(long = "context", value_name = "KEY=VALUE", conflicts_with = "aad")]
        context: Vec<String>,
        /// Destination key [default: the same key].
        #[arg(long)]
        to_key_id: Option<String>,
        /// Destination associated data [default: the same].
        #[arg(long)]
        to_aad: Option<String>,
        /// Destination encryption context (KEY=VALUE, repeatable) [default: the same].
        #[arg(
            long = "to-context",
            value_name = "KEY=VALUE",
            conflicts_with = "to_aad"
        )]
        to_context: Vec<String>,
        #[command(flatten)]
        io: InOut,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// Input and output files (stdin and stdout by default).
#[derive(Args, Clone)]
pub struct InOut {
    /// Input [default: stdin].
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Output [default: stdout].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AccessCmd {
    /// Create an access key; its token is written to -o (mode 0600) and shown nowhere else.
    Create {
        /// Key ids it reaches, comma-separated (`*`: all of yours).
        #[arg(long, value_delimiter = ',', required = true)]
        keys: Vec<String>,
        /// Operations: encrypt, decrypt, generate-data-key, re-encrypt, describe.
        #[arg(long, value_delimiter = ',', required = true)]
        operations: Vec<String>,
        /// Lifetime such as 90d [default: no expiry].
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Token file to write (must not exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Also write an AWS shared-credentials file (mode 0600; must not exist) for the
        /// AWS KMS API: aws_access_key_id (the access key's id) and
        /// aws_secret_access_key.
        #[arg(long, value_name = "FILE")]
        aws_credentials: Option<PathBuf>,
        /// The profile of --aws-credentials.
        #[arg(
            long,
            value_name = "NAME",
            default_value = "default",
            requires = "aws_credentials"
        )]
        aws_profile: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List your access keys (never their secrets).
    List {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Revoke an access key (final).
    Revoke {
        /// Its id, ak-...
        id: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// Where the audit log is read: through a verified node, or a stopped node's data dir
/// (inside its TEE).
#[derive(Args, Clone)]
pub struct AuditSource {
    /// A running node, https://HOST:PORT (with --policy).
    #[arg(
        long,
        requires = "policy",
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    pub node: Option<String>,
    /// Verification policy for --node.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<PathBuf>,
    /// A stopped node's data dir (run inside its TEE; with --tee).
    #[arg(long, value_name = "DIR", requires = "tee")]
    pub data_dir: Option<PathBuf>,
}

/// What `audit verify` checks: a running node's log, a stopped node's, or exports.
#[derive(Args, Clone)]
pub struct AuditVerifySource {
    /// A running node, https://HOST:PORT (with --policy).
    #[arg(
        long,
        requires = "policy",
        conflicts_with_all = ["data_dir", "file"],
        required_unless_present_any = ["data_dir", "file"]
    )]
    pub node: Option<String>,
    /// Verification policy, for --node or --evidence.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<PathBuf>,
    /// A stopped node's data dir (run inside its TEE; with --tee).
    #[arg(long, value_name = "DIR", requires = "tee", conflicts_with = "file")]
    pub data_dir: Option<PathBuf>,
    /// An export made by `teekms audit export`, checked offline; repeat it for
    /// consecutive exports, oldest first, to check that they join into one chain.
    #[arg(long = "file", value_name = "FILE", requires_all = ["evidence", "policy"])]
    pub file: Vec<PathBuf>,
    /// With --file: the attestation document of the node that made the exports
    /// (`teekms attest -o`).
    #[arg(long, value_name = "FILE")]
    pub evidence: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check the whole hash chain and every entry's MAC, or exports offline; report the
    /// first broken entry (exit 1).
    Verify {
        #[command(flatten)]
        source: AuditVerifySource,
        /// With --data-dir: the node's TEE.
        #[arg(long, value_enum)]
        tee: Option<TeeArg>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        owner: OwnerArg,
        #[command(flatten)]
        platform: PlatformArgs,
    },
    /// Export entries (JSON lines, each with its chain hash) ending with a checkpoint the
    /// node signs inside its TEE: yours in full, other owners' as links of the chain
    /// (the cluster admin's export shows all). Checked against the node before it is
    /// written; `audit verify --file` checks it offline.
    Export {
        /// The node, https://HOST:PORT.
        #[arg(long)]
        node: String,
        /// Verification policy.
        #[arg(long, value_name = "POLICY")]
        policy: PathBuf,
        /// The first entry [default: the oldest kept].
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// The last entry [default: the newest].
        #[arg(long, value_name = "SEQ")]
        to: Option<u64>,
        /// Where to write the export.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        owner: OwnerArg,
        #[command(flatten)]
        collateral: CollateralArg,
    },
    /// Remove the entries before SEQ from the node's log, keeping a sealed checkpoint the
    /// rest of the chain verifies from. Refused for entries no export covers unless
    /// --force; an owner prunes only its own entries, the cluster admin anyone's.
    Prune {
        /// The node, https://HOST:PORT.
        #[arg(long)]
        node: String,
        /// Verification policy.
        #[arg(long, value_name = "POLICY")]
        policy: PathBuf,
        /// The first entry kept.
        #[arg(long, value_name = "SEQ")]
        before: u64,
        /// Also remove entries that no export covers.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        owner: OwnerArg,
        #[command(flatten)]
        collateral: CollateralArg,
    },
    /// Show the most recent entries as a table, every field in full (through a node:
    /// those about your keys or made by you); `--json` for one JSON object per line.
    Tail {
        #[command(flatten)]
        source: AuditSource,
        /// With --data-dir: the node's TEE.
        #[arg(long, value_enum)]
        tee: Option<TeeArg>,
        /// How many.
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        /// One JSON object per line, as stored (chain hash and MAC included).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        owner: OwnerArg,
        #[command(flatten)]
        platform: PlatformArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RealTee {
    /// Intel SGX (DCAP quote v3).
    Sgx,
    /// Intel TDX (DCAP quote v4/v5).
    Tdx,
    /// AMD SEV-SNP attestation report.
    Snp,
}

#[derive(Subcommand)]
pub enum EvidenceCmd {
    /// Verify evidence against its collateral directory and a policy (exit 0 accepted, 1 rejected, 2 usage).
    Verify {
        /// Which TEE produced the evidence.
        #[arg(long, value_enum)]
        tee: RealTee,
        /// The raw evidence (quote.bin or report.bin).
        #[arg(long, value_name = "FILE")]
        evidence: PathBuf,
        /// Collateral directory (tcb_info.json, ... or vcek.der, ask.pem, ark.pem).
        #[arg(long, value_name = "DIR")]
        collateral: PathBuf,
        /// Verification time, RFC 3339 UTC (e.g. 2025-07-19T10:00:00Z) [default: now].
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// Verification policy (TOML) [default: genuine hardware, UpToDate only, no debug].
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// DCAP: verify even when the CRL files are missing (a revoked platform or CA
        /// would then go unnoticed; a warning goes to stderr). CRLs that are present are
        /// still checked.
        #[arg(long)]
        dangerous_skip_revocation: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ProductArg {
    /// AMD EPYC 7003.
    Milan,
    /// AMD EPYC 9004.
    Genoa,
    /// AMD EPYC 9005.
    Turin,
}

#[derive(Subcommand)]
pub enum CollateralCmd {
    /// Fetch the collateral for a piece of evidence from a PCCS / Intel PCS (DCAP) or AMD
    /// KDS (SNP) into a directory, for verification where there is no network.
    Fetch {
        /// Which TEE produced the evidence.
        #[arg(long, value_enum)]
        tee: RealTee,
        /// The raw evidence (quote.bin or report.bin).
        #[arg(long, value_name = "FILE")]
        evidence: PathBuf,
        /// Service base URL, e.g. https://api.trustedservices.intel.com, https://kdsintf.amd.com, http://pccs:8081
        #[arg(long)]
        url: String,
        /// SNP: the product line of the chip.
        #[arg(long, value_enum)]
        product: Option<ProductArg>,
        /// Directory to write (created if needed; existing files are replaced).
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: PathBuf,
    },
    /// What a collateral directory covers and when each piece expires (exit 1 if any has).
    Show {
        /// The collateral directory.
        dir: PathBuf,
        /// Reference time, RFC 3339 UTC [default: now].
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// Warn about pieces that expire within this long (e.g. 7d, 12h).
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        warn_within: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
pub struct CollateralArg {
    /// Verify real-TEE evidence with this collateral directory instead of the node's.
    #[arg(long = "collateral", value_name = "DIR")]
    pub collateral: Option<PathBuf>,
}

#[derive(Args)]
pub struct DeployArgs {
    /// The node, https://HOST:PORT.
    #[arg(long)]
    pub node: String,
    /// Verification policy (TOML).
    #[arg(long, value_name = "POLICY")]
    pub policy: PathBuf,
    /// Key id in your namespace.
    #[arg(long)]
    pub key_id: String,
    /// Data key file.
    #[arg(long, value_name = "FILE")]
    pub dek: PathBuf,
    /// Key policy file (a JSON object) [default: {}].
    #[arg(long, value_name = "FILE")]
    pub key_policy: Option<PathBuf>,
    /// Also save the node's receipt here.
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
    #[command(flatten)]
    pub owner: OwnerArg,
    #[command(flatten)]
    pub collateral: CollateralArg,
}

#[derive(Args)]
pub struct WrapArgs {
    /// The node's attestation document.
    #[arg(long, value_name = "FILE")]
    pub evidence: PathBuf,
    /// Verification policy (TOML).
    #[arg(long, value_name = "POLICY")]
    pub policy: PathBuf,
    /// Key id in your namespace.
    #[arg(long)]
    pub key_id: String,
    /// Data key file.
    #[arg(long, value_name = "FILE")]
    pub dek: PathBuf,
    /// Key policy file (a JSON object) [default: {}].
    #[arg(long, value_name = "FILE")]
    pub key_policy: Option<PathBuf>,
    /// Bundle file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub owner: OwnerArg,
    #[command(flatten)]
    pub collateral: CollateralArg,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("keysource").required(true).args(["dek", "node"])))]
pub struct EncryptArgs {
    /// Key id written into the header.
    #[arg(long)]
    pub key_id: String,
    /// Key version written into the header (with --dek; a node uses the current one).
    #[arg(long, default_value_t = 1)]
    pub key_version: u64,
    /// Your copy of the data key (a data key file).
    #[arg(long, value_name = "FILE")]
    pub dek: Option<PathBuf>,
    /// Encrypt through this node instead, which holds the key (https://HOST:PORT).
    #[arg(long, requires = "policy")]
    pub node: Option<String>,
    #[command(flatten)]
    pub via: ViaNode,
    /// Input [default: stdin].
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Output [default: stdout].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// log2 of the chunk size (12 to 24).
    #[arg(long, default_value_t = teekms_core::stream::DEFAULT_CHUNK_LOG2, value_parser = clap::value_parser!(u8).range(12..=24))]
    pub chunk_log2: u8,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("keysource").required(true).args(["dek", "node"])))]
pub struct DecryptArgs {
    /// Your copy of the data key (a data key file).
    #[arg(long, value_name = "FILE")]
    pub dek: Option<PathBuf>,
    /// Decrypt through this node instead, which holds the key (https://HOST:PORT).
    #[arg(long, requires = "policy")]
    pub node: Option<String>,
    #[command(flatten)]
    pub via: ViaNode,
    /// Input [default: stdin].
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Output [default: stdout]. A regular file appears only once every chunk authenticated.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// With --node: how to verify it and who to be.
#[derive(Args, Clone)]
pub struct ViaNode {
    /// Verification policy (TOML) for --node.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<PathBuf>,
    /// With --node: the key's owner (fingerprint) when it is not your own namespace.
    #[arg(long)]
    pub key_owner: Option<String>,
    /// With --node: act with this access key (its token, in a file).
    #[arg(long, value_name = "FILE", env = "TEEKMS_ACCESS_KEY_FILE")]
    pub access_key: Option<PathBuf>,
    #[command(flatten)]
    pub owner: OwnerArg,
}

#[derive(Subcommand)]
pub enum WorkloadCmd {
    /// Attest this program's TEE to a node (mutually: the node is verified first) and
    /// fetch a key that the key's policy admits for this workload; the node seals it to
    /// the key bound in this program's evidence.
    #[command(group(clap::ArgGroup::new("dest").required(true).args(["output", "gramine_key"])))]
    Fetch {
        /// The node, https://HOST:PORT.
        #[arg(long)]
        node: String,
        /// Verification policy (TOML) for the node.
        #[arg(long, value_name = "POLICY")]
        policy: PathBuf,
        /// The key id.
        #[arg(long)]
        key_id: String,
        /// The key's owner (fingerprint).
        #[arg(long)]
        key_owner: Option<String>,
        /// Which version [default: current].
        #[arg(long)]
        version: Option<u64>,
        /// The TEE this program runs in.
        #[arg(long, value_enum)]
        tee: TeeArg,
        /// Write the key as a data key file (mode 0600; must not exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Write it where Gramine reads provisioned keys for encrypted files: 16 bytes
        /// derived from the data key (spec/api-v1.md) in GRAMINE_KEYS_DIR/NAME.
        #[arg(long, value_name = "NAME")]
        gramine_key: Option<String>,
        /// Gramine's key directory.
        #[arg(long, value_name = "DIR", default_value = "/dev/attestation/keys")]
        gramine_keys_dir: PathBuf,
        #[command(flatten)]
        platform: PlatformArgs,
    },
    /// Make this program's attestation document around a fresh HPKE key, for AWS KMS
    /// API calls that name it as `Recipient` (the node then seals its answer to that
    /// key: `CiphertextForRecipient`).
    Attest {
        /// The TEE this program runs in.
        #[arg(long, value_enum)]
        tee: TeeArg,
        /// Where to write the workload's private keys (mode 0600; must not exist).
        #[arg(long, value_name = "FILE")]
        key_out: PathBuf,
        /// Where to write the attestation document (JSON) [default: stdout].
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        platform: PlatformArgs,
    },
    /// Open a CiphertextForRecipient (raw bytes, or base64 as AWS answers carry it)
    /// with the key from `workload attest`; writes the plaintext bytes.
    Open {
        /// The workload's key file (from `workload attest --key-out`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        io: InOut,
    },
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// The cluster policy, read or replaced by the cluster admin (`serve --cluster-admin`).
    #[command(subcommand)]
    Policy(ClusterPolicyCmd),
    /// Each member's store epoch (E, H), audit position and alarm, as it answers now
    /// (asked by the node, each answer MAC'd under the cluster key).
    Status {
        #[command(flatten)]
        node: NodeArgs,
        /// One JSON object per member.
        #[arg(long)]
        json: bool,
    },
    /// Accept epoch (E, H) for the members that wait to recover because a majority of
    /// the cluster restarted at once (the cluster admin only): each then refuses a store
    /// behind it, and serves. Take E and H from `teekms freshness show` or the newest
    /// receipt an owner holds; `cluster status` shows what each member's store says.
    Resume {
        /// The epoch number E a person accepted.
        #[arg(long)]
        epoch: u64,
        /// Its hash H (64 hex digits).
        #[arg(long, value_name = "HEX")]
        hash: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Remove a member that is gone for good (the cluster admin only), so that it no
    /// longer counts towards the majority that confirms changes.
    Remove {
        /// The member's node id (`teekms cluster status` lists them).
        node_id: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
pub enum ClusterPolicyCmd {
    /// Print the cluster policy (TOML).
    Get {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Replace the cluster policy with the TOML in FILE (checked here and by the node);
    /// nodes joining afterwards must satisfy it.
    Set {
        /// The policy file (TOML, as owners' policies).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
pub enum RecoveryCmd {
    /// Make a recovery officer's key pair: FILE (secret, mode 0600) and FILE.pub.
    OfficerInit {
        /// The private key file to write (must not exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// An officer opens their share (on their own machine); the result is secret.
    Open {
        /// The sealed share (DATA_DIR/recovery/share-<i>.json).
        #[arg(long, value_name = "FILE")]
        share: PathBuf,
        /// The officer's private key file.
        #[arg(long, value_name = "FILE")]
        officer: PathBuf,
        /// The opened share to write (mode 0600; must not exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Restore a node on new hardware from the cluster's stored state and K opened shares
    /// (run inside the new node's TEE, with the node stopped).
    Restore {
        /// The new node's data dir. Without --store it must hold the SQLite store
        /// (copied from the lost node or its backup); with --store it may be new.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The cluster's PostgreSQL database (as given to `serve --store`), whose state
        /// outlives every node.
        #[arg(long, value_name = "URL", env = "TEEKMS_STORE")]
        store: Option<String>,
        /// The TEE of the new node.
        #[arg(long, value_enum)]
        tee: TeeArg,
        /// Opened shares (at least the threshold).
        #[arg(long = "share", value_name = "FILE", required = true)]
        shares: Vec<PathBuf>,
        #[command(flatten)]
        platform: PlatformArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum FreshnessCmd {
    /// The highest epoch (E, H) each cluster acknowledged to you, as kept in
    /// $XDG_DATA_HOME/teekms/freshness (or TEEKMS_FRESHNESS_DIR): a node that later
    /// shows less had its store rolled back, and every command says so (exit 1).
    Show {
        /// One JSON object per cluster.
        #[arg(long)]
        json: bool,
    },
}
