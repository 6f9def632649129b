//! XDP acceleration (`bpf/lb_xdp.c`): the external NodePort, LoadBalancer
//! and ExternalIP traffic of the tc devices to remote backends is DNATed
//! (+ SNATed) or DSR-encapsulated (IPIP, IPv6-in-IPv6: the bytes the tc
//! programs would send) and forwarded at XDP, over the maps a
//! [`load`](crate::load) pinned; everything else is passed to the tc
//! programs. IPv4 and IPv6 alike (the `lb4_*` and `lb6_*` maps, one
//! per-family program body, `bpf/lb_xdp_fam.h`); NAT46/64 flows, IPv6
//! frames with extension headers and DSR packets that would exceed the
//! route's MTU once encapsulated (tc answers those with ICMP fragmentation
//! needed / ICMPv6 Packet Too Big) are passed to tc. Attach with [`attach`] (native or generic mode), detach with
//! [`detach`], and read what is attached with [`attachments`] and what it
//! did with [`stats`].
//!
//! Links are pinned as `DIR/links/<ifname>-xdp-<mode>`, so the programs
//! stay attached without a process and the mode is known after a restart.
//! Re-attaching detaches first: during that instant packets take the tc
//! path, which handles all of them anyway.
//!
//! A veth delivers frames that XDP redirects or transmits into it only when
//! its peer end has an XDP program (or GRO); [`attach_pass`] attaches a
//! pass-through one (`bpf/lb_xdp_pass.c`) for that.

use std::borrow::Cow;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aya::maps::{MapData, PerCpuArray};
use aya::programs::links::FdLink;
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use crate::loader::{maps_dir, prog_err, verifier_err, LoadError, MapCapacity};

/// The compiled XDP object (`bpf/lb_xdp.c`).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_xdp.o"));
/// The compiled pass-through XDP object (`bpf/lb_xdp_pass.c`, no maps).
pub static XDP_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_xdp_pass.o"));

/// Name of the XDP program.
pub const PROG_XDP: &str = "lb_xdp";
/// Name of the pass-through program.
pub const PROG_XDP_PASS: &str = "lb_xdp_pass";
/// Name of the per-CPU verdict counters (`enum lb_xdp_stat`).
pub const MAP_XDP_STATS: &str = "lb_xdp_stats";

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`); veth supports it.
    Native,
    /// In the stack, after the skb is built (`XDP_FLAGS_SKB_MODE`): works
    /// on any device, slower than native.
    Generic,
}

impl XdpMode {
    /// Both modes.
    pub const ALL: [XdpMode; 2] = [XdpMode::Native, XdpMode::Generic];

    /// `native` or `generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }

    fn aya(self) -> aya::programs::XdpMode {
        match self {
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Generic => aya::programs::XdpMode::Skb,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown mode name.
#[derive(Debug, thiserror::Error)]
#[error("unknown XDP mode {0:?} (native or generic)")]
pub struct BadXdpMode(String);

impl FromStr for XdpMode {
    type Err = BadXdpMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(XdpMode::Native),
            "generic" => Ok(XdpMode::Generic),
            other => Err(BadXdpMode(other.to_owned())),
        }
    }
}

/// The XDP program loaded over the pinned maps (attached or not).
pub struct XdpLoaded {
    ebpf: Ebpf,
    mode: XdpMode,
    devices: Vec<String>,
}

impl fmt::Debug for XdpLoaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpLoaded")
            .field("mode", &self.mode)
            .field("devices", &self.devices)
            .finish()
    }
}

impl XdpLoaded {
    /// The program (e.g. for `TestRun`).
    pub fn program(&mut self) -> &mut Xdp {
        xdp_prog(&mut self.ebpf, PROG_XDP).expect("loaded")
    }

    /// The mode it was attached in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The devices it was attached to.
    pub fn devices(&self) -> &[String] {
        &self.devices
    }
}

fn xdp_prog<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::Missing(name))?
        .try_into()
        .map_err(prog_err(format!("{name} is not an XDP program")))
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LoadError + 'a {
    move |source| LoadError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Loads `lb_xdp` over the maps pinned under `pin_dir` (a [`load`](crate::load)
/// must have created them) without attaching it, e.g. for `BPF_PROG_TEST_RUN`.
pub fn load_program(pin_dir: &Path, capacity: &MapCapacity) -> Result<XdpLoaded, LoadError> {
    let maps = maps_dir(pin_dir);
    let services = maps.join(crate::abi::MAP_SERVICES);
    if !services.exists() {
        return Err(io_err("open pinned maps (run load first)", &services)(
            io::ErrorKind::NotFound.into(),
        ));
    }
    let mut loader = EbpfLoader::new();
    for (name, max, _, _) in capacity.layout() {
        loader.map_pin_path(name, Cow::Owned(maps.join(name)));
        loader.map_max_entries(name, max);
    }
    loader.map_pin_path(MAP_XDP_STATS, Cow::Owned(maps.join(MAP_XDP_STATS)));
    let mut ebpf = loader
        .load(XDP_OBJECT)
        .map_err(|e| LoadError::Object(Box::new(e)))?;
    let prog = xdp_prog(&mut ebpf, PROG_XDP)?;
    crate::retry::on_eagain(|| prog.load()).map_err(verifier_err(PROG_XDP))?;
    Ok(XdpLoaded {
        ebpf,
        mode: XdpMode::Native,
        devices: Vec::new(),
    })
}

fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

fn pin_name(iface: &str, mode: XdpMode) -> String {
    // bpffs refuses names with dots (reserved), which VLAN devices have.
    format!("{}-xdp-{mode}", iface.replace('.', "~"))
}

/// Loads `lb_xdp` over the maps pinned under `pin_dir` and attaches it in
/// `mode` to every device of `interfaces` (in the calling thread's network
/// namespace), through links pinned in `DIR/links`. Devices already
/// accelerated (in either mode) are detached first. The devices should be
/// the tc devices of the same [`load`](crate::load): lb_xdp passes what it
/// does not handle to the tc programs, and a backend counts as remote only
/// when its route leaves through one of them. On error nothing this call
/// attached stays attached.
pub fn attach(
    pin_dir: &Path,
    interfaces: &[String],
    mode: XdpMode,
    capacity: &MapCapacity,
) -> Result<XdpLoaded, LoadError> {
    let mut loaded = load_program(pin_dir, capacity)?;
    let links = links_dir(pin_dir);
    std::fs::create_dir_all(&links).map_err(io_err("mkdir", &links))?;
    let mut created: Vec<PathBuf> = Vec::new();
    let res = (|| {
        for iface in interfaces {
            if !crate::loader::interface_exists(iface) {
                return Err(LoadError::NoInterface(iface.clone()));
            }
            detach_one(pin_dir, iface)?;
            let pin = links.join(pin_name(iface, mode));
            attach_pinned(loaded.program(), iface, mode, &pin)?;
            created.push(pin);
        }
        Ok(())
    })();
    if let Err(e) = res {
        for pin in created.iter().rev() {
            let _ = std::fs::remove_file(pin);
        }
        return Err(e);
    }
    loaded.mode = mode;
    loaded.devices = interfaces.to_vec();
    Ok(loaded)
}

fn attach_pinned(prog: &mut Xdp, iface: &str, mode: XdpMode, pin: &Path) -> Result<(), LoadError> {
    let ctx = || format!("attaching XDP ({mode}) on {iface}");
    let id = prog.attach(iface, mode.aya()).map_err(prog_err(ctx()))?;
    let link = prog.take_link(id).map_err(prog_err(ctx()))?;
    let fd: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| LoadError::Program {
            context: ctx(),
            source: Box::new(e),
        })?;
    fd.pin(pin).map_err(|e| LoadError::Program {
        context: format!("pinning link {}", pin.display()),
        source: Box::new(e),
    })?;
    Ok(())
}

/// Detaches the link pinned at `pin` now (`BPF_LINK_DETACH`): dropping the
/// last reference by unpinning detaches only once the kernel frees the
/// link, asynchronously.
fn detach_pinned_link(pin: &Path) -> io::Result<()> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    /// The prefix of `union bpf_attr` both commands use, zero-padded.
    #[repr(C)]
    struct Attr {
        a: u64, // BPF_OBJ_GET: pathname; BPF_LINK_DETACH: link_fd (low u32)
        b: u32,
        c: u32,
        pad: [u64; 14],
    }
    let path = CString::new(pin.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut attr = Attr {
        a: path.as_ptr() as u64,
        b: 0,
        c: 0,
        pad: [0; 14],
    };
    let size = std::mem::size_of::<Attr>();
    // SAFETY: `attr` is a valid, zero-padded bpf_attr for BPF_OBJ_GET whose
    // pathname points to a NUL-terminated string alive across the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &mut attr as *mut Attr, size) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut attr = Attr {
        a: u64::from(fd.as_raw_fd() as u32),
        b: 0,
        c: 0,
        pad: [0; 14],
    };
    if cfg!(target_endian = "big") {
        attr.a <<= 32;
    }
    // SAFETY: a valid bpf_attr for BPF_LINK_DETACH naming an open link fd.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, &mut attr as *mut Attr, size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches and unpins the XDP links of `iface`, in either mode.
fn detach_one(pin_dir: &Path, iface: &str) -> Result<(), LoadError> {
    for mode in XdpMode::ALL {
        let pin = links_dir(pin_dir).join(pin_name(iface, mode));
        if pin.exists() {
            // A link whose device is gone is already detached: unpin anyway.
            let _ = detach_pinned_link(&pin);
        }
        match std::fs::remove_file(&pin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("unpin", &pin)(e)),
        }
    }
    Ok(())
}

/// Detaches the XDP program from every device it is attached to under
/// `pin_dir` (nothing attached is fine). The tc programs stay.
pub fn detach(pin_dir: &Path) -> Result<(), LoadError> {
    for (iface, _) in attachments(pin_dir)? {
        detach_one(pin_dir, &iface)?;
    }
    Ok(())
}

/// The devices the XDP program is attached to under `pin_dir`, with their
/// modes, sorted by device name.
pub fn attachments(pin_dir: &Path) -> Result<Vec<(String, XdpMode)>, LoadError> {
    let dir = links_dir(pin_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.map_err(io_err("read", &dir))?.file_name();
        let name = name.to_string_lossy();
        for mode in XdpMode::ALL {
            if let Some(iface) = name.strip_suffix(&format!("-xdp-{mode}")) {
                out.push((iface.replace('~', "."), mode));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What `lb_xdp` did, summed over CPUs (`lb_xdp_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames forwarded out of their arrival device (`XDP_TX`).
    pub tx: u64,
    /// Frames forwarded out of another device (`XDP_REDIRECT`).
    pub redirect: u64,
    /// Frontend packets left to tc (local backends, ClusterIP, ...).
    pub pass: u64,
    /// Frames dropped (the reason is counted in `lb_drops`).
    pub drop: u64,
}

impl XdpStats {
    /// Frames forwarded at XDP (`tx + redirect`).
    pub fn forwarded(&self) -> u64 {
        self.tx + self.redirect
    }
}

/// Reads `lb_xdp_stats` under `pin_dir`; all zero when the XDP program was
/// never loaded there.
pub fn stats(pin_dir: &Path) -> Result<XdpStats, LoadError> {
    let path = maps_dir(pin_dir).join(MAP_XDP_STATS);
    if !path.exists() {
        return Ok(XdpStats::default());
    }
    let err = |e: aya::maps::MapError| LoadError::Program {
        context: format!("reading {MAP_XDP_STATS}"),
        source: Box::new(e),
    };
    let data = MapData::from_pin(&path).map_err(err)?;
    let map: PerCpuArray<MapData, u64> =
        aya::maps::Map::PerCpuArray(data).try_into().map_err(err)?;
    let mut v = [0u64; 4];
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = map.get(&(i as u32), 0).map_err(err)?.iter().sum();
    }
    Ok(XdpStats {
        tx: v[0],
        redirect: v[1],
        pass: v[2],
        drop: v[3],
    })
}

/// A pass-through XDP program attached (native mode) to a device; detached
/// on drop. For the receiving end of a veth that XDP forwards into.
pub struct PassThrough {
    _ebpf: Ebpf,
}

impl fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PassThrough")
    }
}

/// Attaches `lb_xdp_pass` to `iface` (calling thread's namespace) in native
/// mode, until the returned value is dropped.
pub fn attach_pass(iface: &str) -> Result<PassThrough, LoadError> {
    let mut ebpf = Ebpf::load(XDP_PASS_OBJECT).map_err(|e| LoadError::Object(Box::new(e)))?;
    let prog = xdp_prog(&mut ebpf, PROG_XDP_PASS)?;
    crate::retry::on_eagain(|| prog.load()).map_err(verifier_err(PROG_XDP_PASS))?;
    prog.attach(iface, XdpMode::Native.aya())
        .map_err(prog_err(format!("attaching {PROG_XDP_PASS} on {iface}")))?;
    Ok(PassThrough { _ebpf: ebpf })
}
