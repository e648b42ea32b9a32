//! The only unsafe code in teekms: the `SNP_GET_DERIVED_KEY` ioctl on `/dev/sev-guest`,
//! reading and raising the process's limit on open files (`getrlimit`/`setrlimit`),
//! deferring accepts until data arrives (`setsockopt(TCP_DEFER_ACCEPT)`), and the
//! allocators' settings (`malloc_trim`, mimalloc's purge delay).
//!
//! Layouts follow Linux `include/uapi/linux/sev-guest.h`. The firmware response carries a
//! status word, then the 32-byte key at offset 32. Not testable on machines without SNP;
//! the rest of the platform reaches it only through `DerivedKeySource`.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

use crate::PlatformError;
use crate::configfs::DerivedKeySource;

/// `_IOWR('S', 0x1, struct snp_guest_request_ioctl)` (32-byte argument).
const SNP_GET_DERIVED_KEY: libc::c_ulong = 0xC020_5301;
/// GUEST_FIELD_SELECT: bind the key to the guest policy (bit 0) and the launch
/// measurement (bit 3), so another image or a weaker policy derives another key.
const FIELDS_POLICY_AND_MEASUREMENT: u64 = 0b1001;

#[repr(C)]
struct SnpDerivedKeyReq {
    root_key_select: u32,
    rsvd: u32,
    guest_field_select: u64,
    vmpl: u32,
    guest_svn: u32,
    tcb_version: u64,
}

#[repr(C)]
struct SnpDerivedKeyResp {
    data: [u8; 64],
}

#[repr(C)]
struct SnpGuestRequestIoctl {
    msg_version: u8,
    req_data: u64,
    resp_data: u64,
    exitinfo2: u64,
}

/// The SEV guest device.
pub struct SevGuestDevice {
    path: PathBuf,
}

impl SevGuestDevice {
    /// The device at `path` (normally `/dev/sev-guest`).
    pub fn new(path: &Path) -> SevGuestDevice {
        SevGuestDevice {
            path: path.to_owned(),
        }
    }
}

impl DerivedKeySource for SevGuestDevice {
    fn derived_key(&self) -> Result<[u8; 32], PlatformError> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(crate::files::io("SEV guest device", &self.path))?;
        let mut req = SnpDerivedKeyReq {
            root_key_select: 0,
            rsvd: 0,
            guest_field_select: FIELDS_POLICY_AND_MEASUREMENT,
            vmpl: 0,
            guest_svn: 0,
            tcb_version: 0,
        };
        let mut resp = SnpDerivedKeyResp { data: [0; 64] };
        let mut arg = SnpGuestRequestIoctl {
            msg_version: 1,
            req_data: &mut req as *mut SnpDerivedKeyReq as u64,
            resp_data: &mut resp as *mut SnpDerivedKeyResp as u64,
            exitinfo2: 0,
        };
        // SAFETY: `dev` is an open file descriptor for the whole call; `arg` and the
        // request and response it points to are live, properly aligned `repr(C)` values
        // of the sizes the kernel's SNP_GET_DERIVED_KEY expects, and nothing else
        // aliases them during the call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), SNP_GET_DERIVED_KEY, &mut arg) };
        if rc != 0 {
            let source = std::io::Error::last_os_error();
            return Err(PlatformError::Damaged {
                what: "SNP_GET_DERIVED_KEY",
                path: self.path.display().to_string(),
                reason: format!("{source} (firmware/VMM error {:#x})", arg.exitinfo2),
            });
        }
        let status = u32::from_le_bytes(resp.data[0..4].try_into().expect("4 bytes"));
        let mut key = [0u8; 32];
        key.copy_from_slice(&resp.data[32..64]);
        resp.data.zeroize();
        if status != 0 {
            key.zeroize();
            return Err(PlatformError::Damaged {
                what: "SNP_GET_DERIVED_KEY",
                path: self.path.display().to_string(),
                reason: format!("firmware status {status:#x}"),
            });
        }
        Ok(key)
    }
}

/// The process's limit on open files: (soft, hard).
pub fn open_file_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft limit on open files to the hard limit (systemd starts services with
/// a soft limit of 1024, which a few idle clients exhaust); returns the limit now in
/// force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let (soft, hard) = open_file_limit()?;
    if soft >= hard {
        return Ok(soft);
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid `rlimit`; the call only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(hard)
}

/// Sets the soft limit on open files (for tests that imitate a service's limits).
pub fn set_open_file_soft_limit(soft: u64) -> std::io::Result<()> {
    let (_, hard) = open_file_limit()?;
    let lim = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid `rlimit`; the call only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to hand a listener's connections to `accept` only once their first
/// bytes have arrived, or after about `secs` seconds (Linux `TCP_DEFER_ACCEPT`): a client
/// that connects and sends nothing then holds no file descriptor and costs no accept.
pub fn defer_accept(listener: std::os::fd::BorrowedFd<'_>, secs: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = secs.try_into().unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open for the borrow's lifetime; `value` is a valid c_int
    // whose size is passed with it, and the call only reads it.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// mimalloc's `mi_option_purge_delay` (the same in its versions 2 and 3).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

#[cfg(feature = "mimalloc")]
unsafe extern "C" {
    /// Sets a mimalloc option (in the binary, which links mimalloc as its allocator).
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
}

/// Makes mimalloc give freed pages back to the system at once rather than after its
/// delay, which it counts only when the thread that freed them allocates again: a
/// node's burst of requests spreads over runtime and blocking-pool threads that then
/// idle, and their freed pages stayed resident. `teekms-bench soak`, 5 minutes: RSS
/// 25.4 -> 26.1 MiB, against 40 to 46 MiB climbing 6–11 % in 10 minutes with the
/// default, and 27.4 -> 30.7 MiB (+12 %) with a forced `mi_collect` every 10 s instead.
/// `teekms-bench envelope` in the same hour: 26,742 encrypts/s with it, 27,303 without
/// (ratio to ping 0.34 both). Call it first thing in `main`.
#[cfg(feature = "mimalloc")]
pub fn release_freed_pages_at_once() {
    // SAFETY: an option setter of the linked allocator, called before other threads
    // exist; it takes two integers and writes only that option's value.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// Gives the heap memory that the allocator holds free back to the operating system
/// (glibc's `malloc_trim`, for what C code — SQLite, aws-lc — allocates): a node's memory then follows what it uses, not the peak of
/// its last burst (stream buffers, batches), so its RSS can be watched for leaks. A no-op
/// with other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a size and touches only the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}
