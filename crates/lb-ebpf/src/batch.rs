//! `BPF_MAP_UPDATE_BATCH`: many entries of one map in one `bpf(2)` call.
//!
//! aya 0.14 has no batch API, so this module makes the raw syscall. It is
//! the crate's only `unsafe` for map writes, kept to two places: the
//! syscall itself, and viewing a slice of [`Pod`] keys or values as bytes.
//! The kernel applies the elements in order, each like one
//! `BPF_MAP_UPDATE_ELEM` (a concurrent reader sees every element old or
//! new), and stops at the first one it refuses.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::Pod;

/// `enum bpf_cmd` value of `BPF_MAP_UPDATE_BATCH` (stable kernel ABI).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr` (stable kernel ABI, Linux 5.6+).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A batch the kernel refused part of: `done` elements were applied
/// before `error`.
#[derive(Debug, thiserror::Error)]
#[error("batch update stopped after {done} elements: {error}")]
pub(crate) struct BatchError {
    /// Elements applied (in order) before the failure.
    pub done: usize,
    /// The kernel's error for the next element.
    #[source]
    pub error: io::Error,
}

/// The bytes of a slice of plain-old-data values.
fn bytes<T: Pod>(items: &[T]) -> &[u8] {
    // SAFETY: `Pod` types are `repr(C)`, `Copy` and have no padding the
    // kernel could not read (the ABI structs carry explicit `pad` fields);
    // the length is the slice's size in bytes and the lifetime is the
    // slice's.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), std::mem::size_of_val(items)) }
}

/// Writes `keys[i] = values[i]` into the map `fd` for every `i`, in one
/// call; `values` holds `keys.len()` values of the map's value size, raw
/// (for a per-CPU map: each value repeated per possible CPU, every copy
/// padded to 8 bytes).
pub(crate) fn update_raw<K: Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[u8],
) -> Result<(), BatchError> {
    if keys.is_empty() {
        return Ok(());
    }
    let count = u32::try_from(keys.len()).map_err(|_| BatchError {
        done: 0,
        error: io::Error::from_raw_os_error(libc::E2BIG),
    })?;
    let keys = bytes(keys);
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for this command; the
    // kernel reads `count` keys and values from the two buffers, which
    // outlive the call, and writes back only `attr.count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(BatchError {
            done: attr.count as usize,
            error: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// [`update_raw`] for a map whose values are `V`.
pub(crate) fn update<K: Pod, V: Pod>(
    fd: impl AsFd,
    keys: &[K],
    values: &[V],
) -> Result<(), BatchError> {
    if keys.len() != values.len() {
        return Err(BatchError {
            done: 0,
            error: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    update_raw(fd.as_fd(), keys, bytes(values))
}
