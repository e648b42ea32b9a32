//! TDX and SEV-SNP evidence through Linux configfs-tsm (`/sys/kernel/config/tsm/report`,
//! Linux ≥ 6.7), and the SNP certificate table the host attaches to a report.
//!
//! One report per directory entry: `mkdir`, read `provider` and `generation`, write 64
//! bytes to `inblob`, read `outblob` (and for SNP `auxblob`), read `generation` again:
//! if it moved by more than our one write, another process raced us on the same entry,
//! so we retry with a fresh entry. The entry is removed afterwards.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use teekms_attest::TeeKind;
use teekms_attest::collateral::CollateralFiles;
use teekms_core::SealingKey;

use crate::files::io;
use crate::{Platform, PlatformError};

/// Where configfs-tsm lives.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm/report";
const ATTEMPTS: usize = 3;
/// configfs creates an entry's attributes with the directory; an imitation of it may
/// take a moment. Bounded, so a missing attribute still fails fast.
const ATTRIBUTE_WAIT: Duration = Duration::from_secs(2);

/// A report and, for SNP, the certificate table that came with it.
type Report = (Vec<u8>, Option<Vec<u8>>);

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A source of the SNP guest's derived key (`SNP_GET_DERIVED_KEY`): the narrow seam where a
/// directory cannot imitate the kernel (an ioctl).
pub trait DerivedKeySource: Send + Sync {
    /// A 32-byte key derived by the AMD secure processor, bound to the guest's
    /// measurement and policy.
    fn derived_key(&self) -> Result<[u8; 32], PlatformError>;
}

/// A TDX or SNP guest reporting through configfs-tsm.
pub struct ConfigfsTsm {
    root: PathBuf,
    tee: TeeKind,
    derived_key: Option<Box<dyn DerivedKeySource>>,
    collateral: Mutex<CollateralFiles>,
}

impl ConfigfsTsm {
    /// A guest of `tee` (TDX or SNP) using the configfs-tsm tree at `root`. `collateral`
    /// is the node's collateral directory contents (it may be empty); SNP certificates
    /// from `auxblob` are added to it.
    pub fn new(
        root: &Path,
        tee: TeeKind,
        derived_key: Option<Box<dyn DerivedKeySource>>,
        collateral: CollateralFiles,
    ) -> ConfigfsTsm {
        ConfigfsTsm {
            root: root.to_owned(),
            tee,
            derived_key,
            collateral: Mutex::new(collateral),
        }
    }

    fn provider(&self) -> &'static str {
        if self.tee == TeeKind::Snp {
            "sev_guest"
        } else {
            "tdx_guest"
        }
    }

    fn one_report(
        &self,
        entry: &Path,
        report_data: &[u8; 64],
    ) -> Result<Option<Report>, PlatformError> {
        let provider = read_attribute(&entry.join("provider"))?;
        let provider = String::from_utf8_lossy(&provider).trim().to_owned();
        if provider != self.provider() {
            return Err(PlatformError::Damaged {
                what: "configfs-tsm provider",
                path: entry.display().to_string(),
                reason: format!(
                    "is {provider:?}, but this node was started as {} (expected {:?})",
                    self.tee,
                    self.provider()
                ),
            });
        }
        let before = generation(entry)?;
        let inblob = entry.join("inblob");
        std::fs::write(&inblob, report_data).map_err(io("configfs-tsm inblob", &inblob))?;
        let outblob = read_attribute(&entry.join("outblob"))?;
        let auxblob = if self.tee == TeeKind::Snp {
            read_optional(&entry.join("auxblob"))?
        } else {
            None
        };
        let after = generation(entry)?;
        if after != before + 1 {
            return Ok(None);
        }
        Ok(Some((outblob, auxblob)))
    }
}

fn read_attribute(path: &Path) -> Result<Vec<u8>, PlatformError> {
    let start = Instant::now();
    loop {
        match std::fs::read(path) {
            Ok(b) => return Ok(b),
            Err(e) if e.kind() == ErrorKind::NotFound && start.elapsed() < ATTRIBUTE_WAIT => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(io("configfs-tsm attribute", path)(e)),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PlatformError> {
    match std::fs::read(path) {
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("configfs-tsm auxblob", path)(e)),
    }
}

fn generation(entry: &Path) -> Result<u64, PlatformError> {
    let path = entry.join("generation");
    let raw = read_attribute(&path)?;
    String::from_utf8_lossy(&raw)
        .trim()
        .parse()
        .map_err(|_| PlatformError::Damaged {
            what: "configfs-tsm generation",
            path: path.display().to_string(),
            reason: "is not a number".into(),
        })
}

impl Platform for ConfigfsTsm {
    fn tee(&self) -> TeeKind {
        self.tee
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        for _ in 0..ATTEMPTS {
            let n = ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed);
            let entry = self.root.join(format!("teekms-{}-{n}", std::process::id()));
            std::fs::create_dir(&entry).map_err(io(
                "configfs-tsm report entry (is configfs-tsm available? Linux 6.7+)",
                &entry,
            ))?;
            let result = self.one_report(&entry, report_data);
            let _ = std::fs::remove_dir(&entry);
            match result? {
                Some((report, aux)) => {
                    if let Some(aux) = aux {
                        let mut c = self.collateral.lock().expect("collateral lock");
                        for (name, der) in parse_cert_table(&aux)? {
                            c.insert(name, der);
                        }
                    }
                    return Ok(report);
                }
                None => continue,
            }
        }
        Err(PlatformError::Damaged {
            what: "configfs-tsm report",
            path: self.root.display().to_string(),
            reason: format!(
                "another writer changed the entry {ATTEMPTS} times in a row; retry later"
            ),
        })
    }

    fn collateral(&self) -> Option<serde_json::Value> {
        let c = self.collateral.lock().expect("collateral lock");
        if c.files.is_empty() {
            None
        } else {
            serde_json::to_value(&*c).ok()
        }
    }

    fn has_sealing_key(&self) -> bool {
        self.tee != TeeKind::Tdx
    }

    fn sealing_key(&self) -> Result<SealingKey, PlatformError> {
        match (self.tee, &self.derived_key) {
            (TeeKind::Snp, Some(source)) => {
                let key = zeroize::Zeroizing::new(source.derived_key()?);
                Ok(crate::expand_sealing_key(key.as_ref(), b"snp-derived-key"))
            }
            (TeeKind::Tdx, _) => Err(PlatformError::Damaged {
                what: "TDX sealing key",
                path: self.root.display().to_string(),
                reason: "TDX has no sealing key: a TDX node joins a cluster at every start (serve --store URL --join NODE) and keeps its keys in memory".into(),
            }),
            _ => Err(PlatformError::Damaged {
                what: "SNP derived key",
                path: "/dev/sev-guest".into(),
                reason: "no derived-key source is configured".into(),
            }),
        }
    }
}

/// GUIDs of the SNP certificate table (in their binary, mixed-endian form).
const CERT_GUIDS: [([u8; 16], &str); 4] = [
    (
        guid(
            0x63da758d,
            0xe664,
            0x4564,
            [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
        ),
        "vcek.der",
    ),
    (
        guid(
            0xa8074bc2,
            0xa25a,
            0x483e,
            [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1],
        ),
        "vlek.der",
    ),
    (
        guid(
            0x4ab7b379,
            0xbbac,
            0x4fe4,
            [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82],
        ),
        "ask.pem",
    ),
    (
        guid(
            0xc0b406a4,
            0xa803,
            0x4952,
            [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae],
        ),
        "ark.pem",
    ),
];

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// Encodes a certificate table (what the host puts in `auxblob`); used by tests and tools.
pub fn encode_cert_table(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let header_len = (entries.len() + 1) * 24;
    let mut table = Vec::new();
    let mut blobs = Vec::new();
    for (name, der) in entries {
        let g = CERT_GUIDS
            .iter()
            .find(|(_, n)| n == name)
            .expect("known certificate name")
            .0;
        table.extend_from_slice(&g);
        table.extend_from_slice(
            &u32::try_from(header_len + blobs.len())
                .expect("small")
                .to_le_bytes(),
        );
        table.extend_from_slice(&u32::try_from(der.len()).expect("small").to_le_bytes());
        blobs.extend_from_slice(der);
    }
    table.extend_from_slice(&[0u8; 24]);
    table.extend_from_slice(&blobs);
    table
}

/// Parses the SNP certificate table: `(guid, offset u32, length u32)` entries, ended by
/// an all-zero entry, offsets relative to the table start. Unknown GUIDs are skipped.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<(&'static str, Vec<u8>)>, PlatformError> {
    let bad = |reason: String| PlatformError::Damaged {
        what: "SNP certificate table",
        path: "auxblob".into(),
        reason,
    };
    let mut out = Vec::new();
    for i in 0.. {
        let e = table
            .get(i * 24..i * 24 + 24)
            .ok_or_else(|| bad("no terminating entry".into()))?;
        if e.iter().all(|&b| b == 0) {
            break;
        }
        let off = u32::from_le_bytes(e[16..20].try_into().expect("4")) as usize;
        let len = u32::from_le_bytes(e[20..24].try_into().expect("4")) as usize;
        let data = off
            .checked_add(len)
            .and_then(|end| table.get(off..end))
            .ok_or_else(|| bad(format!("entry {i} points outside the table")))?;
        if let Some((_, name)) = CERT_GUIDS.iter().find(|(g, _)| g[..] == e[..16]) {
            out.push((*name, data.to_vec()));
        }
    }
    Ok(out)
}
