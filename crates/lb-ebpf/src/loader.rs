//! Loading the tc object, pinning its maps, attaching and pinning the tc
//! links, re-opening all of it on a second load, and [`cleanup`].
//!
//! Pin layout under the caller's bpffs directory `DIR`:
//! `DIR/maps/<map name>`, `DIR/links/<ifname>-ingress|egress` and, with a
//! socket-LB cgroup, `DIR/links/cgroup-<cgroup inode>-<hook>`. Pinned
//! links keep the programs attached without any process; a second
//! [`load`] re-opens the maps and swaps the programs of existing links
//! atomically (`BPF_LINK_UPDATE`), so established flows keep working.

use std::borrow::Cow;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::MapData;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{CgroupSockAddr, LinkOrder, ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfError, EbpfLoader};

use crate::abi::{self, *};

/// The compiled tc object (`bpf/lb_tc.c`).
pub static TC_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_tc.o"));
/// The compiled socket-LB object (`bpf/lb_sock.c`).
pub static SOCK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_sock.o"));
/// The compiled test-only object (`bpf/lb_test.c`).
pub static TEST_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_test.o"));

/// Name of the ingress program.
pub const PROG_INGRESS: &str = "lb_tc_ingress";
/// Name of the egress program.
pub const PROG_EGRESS: &str = "lb_tc_egress";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Why loading, attaching or cleaning up failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A filesystem operation on the pin directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The object could not be loaded (maps created, BTF, relocations).
    #[error("loading the BPF object: {0}")]
    Object(#[source] Box<EbpfError>),
    /// The verifier rejected a program; `log` is its output.
    #[error("the verifier rejected {program}: {source}\n{log}")]
    Verifier {
        /// The program.
        program: &'static str,
        /// The syscall error.
        #[source]
        source: io::Error,
        /// The verifier log.
        log: String,
    },
    /// Another program or link error (attach, pin, link update).
    #[error("{context}: {source}")]
    Program {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pinned map exists but does not match this object's layout.
    #[error("pinned map {map} is incompatible ({detail}); run cleanup first")]
    IncompatiblePin {
        /// The map.
        map: &'static str,
        /// What differs.
        detail: String,
    },
    /// A program or map is missing from the object (a build problem).
    #[error("{0} missing from the BPF object")]
    Missing(&'static str),
    /// The interface does not exist in the calling thread's namespace.
    #[error("no interface {0:?} in this network namespace")]
    NoInterface(String),
    /// The socket-LB target is the root cgroup, which is refused: the
    /// programs would capture every process of the machine.
    #[error("refusing to attach the socket LB to the root cgroup {0}")]
    RootCgroup(PathBuf),
    /// The socket-LB target is not a cgroup2 directory.
    #[error("{0} is not a cgroup2 directory")]
    NotACgroup(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LoadError + 'a {
    move |source| LoadError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn prog_err(context: impl Into<String>) -> impl FnOnce(ProgramError) -> LoadError {
    let context = context.into();
    move |e| LoadError::Program {
        context,
        source: Box::new(e),
    }
}

/// Map capacities (`max_entries`), fixed when the maps are first created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapCapacity {
    /// Services map entries: frontends plus all their backend slots.
    pub services: u32,
    /// Backends.
    pub backends: u32,
    /// Reverse-NAT entries.
    pub rev_nat: u32,
    /// Connection-tracking entries (two per flow).
    pub ct: u32,
    /// Affinity entries.
    pub affinity: u32,
    /// Maglev tables (frontends using Maglev).
    pub maglev: u32,
    /// Source-range prefixes.
    pub src_range: u32,
}

impl Default for MapCapacity {
    /// The defaults of `bpf/lb_abi.h`.
    fn default() -> Self {
        MapCapacity {
            services: 65_536,
            backends: 65_536,
            rev_nat: 65_536,
            ct: 524_288,
            affinity: 65_536,
            maglev: 1024,
            src_range: 16_384,
        }
    }
}

impl MapCapacity {
    /// `(map, max_entries, key size, value size)` of every pinned map.
    /// The IPv6 maps take the same capacities as their IPv4 counterparts.
    pub(crate) fn layout(&self) -> [(&'static str, u32, usize, usize); 24] {
        use std::mem::size_of as s;
        [
            (
                MAP_SERVICES,
                self.services,
                s::<Lb4Key>(),
                s::<Lb4Service>(),
            ),
            (MAP_BACKENDS, self.backends, 4, s::<Lb4Backend>()),
            (MAP_REV_NAT, self.rev_nat, 4, s::<Lb4ReverseNat>()),
            (MAP_CT, self.ct, s::<Ct4Key>(), s::<Ct4Entry>()),
            (
                MAP_AFFINITY,
                self.affinity,
                s::<Lb4AffinityKey>(),
                s::<LbAffinityVal>(),
            ),
            (MAP_MAGLEV, self.maglev, 4, 4),
            (MAP_SRC_RANGE, self.src_range, s::<Lb4SrcRangeKey>(), 1),
            (MAP_CONFIG, 1, 4, s::<LbConfig>()),
            (MAP_DROPS, abi::DROP_MAX, 4, 8),
            (MAP_SVC_STATS, self.services, 4, s::<LbSvcStats>()),
            (MAP_SVC_META, self.services, 4, s::<LbSvcMeta>()),
            (MAP_BE_META, self.backends, 4, s::<LbBeMeta>()),
            // Socket-LB reverse entries: one per translated socket, sized like CT.
            (MAP_SOCK_REV, self.ct, s::<Lb4SockKey>(), s::<Lb4SockVal>()),
            // SNAT reverse entries: at most one per flow, sized like CT.
            (MAP_SNAT, self.ct, s::<Ct4Key>(), s::<Lb4SnatEntry>()),
            (MAP_DEVICES, abi::DEVICES_MAX, 4, 1),
            (MAP_BE_STATS, self.backends, 4, s::<LbSvcStats>()),
            (
                MAP_SERVICES6,
                self.services,
                s::<Lb6Key>(),
                s::<Lb4Service>(),
            ),
            (MAP_BACKENDS6, self.backends, 4, s::<Lb6Backend>()),
            (MAP_REV_NAT6, self.rev_nat, 4, s::<Lb6ReverseNat>()),
            (MAP_CT6, self.ct, s::<Ct6Key>(), s::<Ct6Entry>()),
            (
                MAP_AFFINITY6,
                self.affinity,
                s::<Lb6AffinityKey>(),
                s::<LbAffinityVal>(),
            ),
            (MAP_SRC_RANGE6, self.src_range, s::<Lb6SrcRangeKey>(), 1),
            (MAP_SNAT6, self.ct, s::<Ct6Key>(), s::<Lb6SnatEntry>()),
            (MAP_SOCK_REV6, self.ct, s::<Lb6SockKey>(), s::<Lb6SockVal>()),
        ]
    }
}

/// What [`load`] needs.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Directory for pins; a bpffs is mounted there when it is not on one.
    pub pin_dir: PathBuf,
    /// Client-facing devices (in the calling thread's network namespace).
    pub interfaces: Vec<String>,
    /// Map capacities for newly created maps.
    pub capacity: MapCapacity,
    /// A cgroup (v2 directory) whose processes get the socket LB
    /// (`bpf/lb_sock.c`); `None` loads no socket programs. The root cgroup
    /// is refused ([`LoadError::RootCgroup`]).
    pub cgroup: Option<PathBuf>,
}

impl LoadOptions {
    /// Options with default capacities.
    pub fn new(pin_dir: impl Into<PathBuf>, interfaces: &[&str]) -> Self {
        LoadOptions {
            pin_dir: pin_dir.into(),
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
            capacity: MapCapacity::default(),
            cgroup: None,
        }
    }

    /// The same options with the socket LB attached to `cgroup`.
    pub fn with_cgroup(mut self, cgroup: impl Into<PathBuf>) -> Self {
        self.cgroup = Some(cgroup.into());
        self
    }
}

/// A loaded, attached instance. Dropping it leaves the programs attached
/// (their links are pinned); [`cleanup`] detaches.
pub struct Loaded {
    ebpf: Ebpf,
    sock: Option<Ebpf>,
    pin_dir: PathBuf,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("pin_dir", &self.pin_dir)
            .finish()
    }
}

impl Loaded {
    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The ingress program (e.g. for `TestRun`).
    pub fn ingress(&mut self) -> &mut SchedClassifier {
        classifier(&mut self.ebpf, PROG_INGRESS).expect("loaded")
    }

    /// The egress program (e.g. for `TestRun`).
    pub fn egress(&mut self) -> &mut SchedClassifier {
        classifier(&mut self.ebpf, PROG_EGRESS).expect("loaded")
    }

    /// True when the socket-LB programs were loaded and attached.
    pub fn has_socket_lb(&self) -> bool {
        self.sock.is_some()
    }
}

pub(crate) fn verifier_err(name: &'static str) -> impl FnOnce(ProgramError) -> LoadError {
    move |e| match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoadError::Verifier {
            program: name,
            source: io_error,
            log: verifier_log.to_string(),
        },
        other => prog_err(format!("loading {name}"))(other),
    }
}

/// Loads `object` with every map pinned (or re-opened) under `maps`.
fn load_object(object: &[u8], maps: &Path, capacity: &MapCapacity) -> Result<Ebpf, LoadError> {
    let mut loader = EbpfLoader::new();
    for (name, max, _, _) in capacity.layout() {
        loader.map_pin_path(name, Cow::Owned(maps.join(name)));
        if name != MAP_CONFIG && name != MAP_DROPS && name != MAP_DEVICES {
            loader.map_max_entries(name, max);
        }
    }
    loader
        .load(object)
        .map_err(|e| LoadError::Object(Box::new(e)))
}

/// Loads the socket programs over the pinned maps and attaches them to
/// `cgroup` through pinned links.
fn load_sock(
    cgroup: &Path,
    maps: &Path,
    links: &Path,
    capacity: &MapCapacity,
) -> Result<Ebpf, LoadError> {
    let target = crate::cgroup::open_target(cgroup)?;
    let mut ebpf = load_object(SOCK_OBJECT, maps, capacity)?;
    for (name, hook) in crate::cgroup::SOCK_PROGRAMS {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(LoadError::Missing(name))?
            .try_into()
            .map_err(prog_err(format!(
                "{name} is not a cgroup sock_addr program"
            )))?;
        crate::retry::on_eagain(|| prog.load()).map_err(verifier_err(name))?;
        let pin = crate::cgroup::link_pin(links, &target, hook);
        crate::cgroup::attach_pinned(prog, name, &target, &pin)?;
    }
    Ok(ebpf)
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, LoadError> {
    ebpf.program_mut(name)
        .ok_or(LoadError::Missing(name))?
        .try_into()
        .map_err(prog_err(format!("{name} is not a classifier")))
}

/// `DIR/maps`.
pub fn maps_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("maps")
}

fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

/// Creates `dir` and mounts a bpffs on it unless it already is on one.
pub fn ensure_bpffs(dir: &Path) -> Result<(), LoadError> {
    std::fs::create_dir_all(dir).map_err(io_err("mkdir", dir))?;
    let c = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| io_err("path", dir)(io::Error::other(e)))?;
    // SAFETY: `c` is a valid NUL-terminated path; `st` is written by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err("statfs", dir)(io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = c"bpf";
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io_err("mount bpffs on", dir)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Checks that pinned maps that already exist have this object's layout
/// (aya reuses pins without checking).
fn check_pins(maps: &Path, capacity: &MapCapacity) -> Result<(), LoadError> {
    for (name, max, key, value) in capacity.layout() {
        let path = maps.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(|e| LoadError::IncompatiblePin {
                map: name,
                detail: e.to_string(),
            })?;
        let got = (info.key_size() as usize, info.value_size() as usize);
        if got != (key, value) {
            return Err(LoadError::IncompatiblePin {
                map: name,
                detail: format!("key/value size {got:?}, expected {:?}", (key, value)),
            });
        }
        // The counters were per-CPU hash maps keyed by id before they became
        // arrays indexed by counter slot (same key and value sizes).
        if name == MAP_SVC_STATS || name == MAP_BE_STATS {
            let t = info.map_type().ok();
            if t != Some(aya::maps::MapType::PerCpuArray) {
                return Err(LoadError::IncompatiblePin {
                    map: name,
                    detail: format!("map type {t:?}, expected PerCpuArray"),
                });
            }
        }
        // A pinned map keeps its size; a different requested size is not an error.
        let _ = max;
    }
    Ok(())
}

/// Loads the tc object, pins or re-opens its maps under `opts.pin_dir`,
/// and attaches ingress and egress to every interface (TCX, pinned links).
/// Run it in the network namespace of the interfaces.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    ensure_bpffs(&opts.pin_dir)?;
    let maps = maps_dir(&opts.pin_dir);
    let links = links_dir(&opts.pin_dir);
    for d in [&maps, &links] {
        std::fs::create_dir_all(d).map_err(io_err("mkdir", d))?;
    }
    check_pins(&maps, &opts.capacity)?;
    // Refuse a bad cgroup before anything is attached.
    if let Some(cg) = &opts.cgroup {
        crate::cgroup::open_target(cg)?;
    }
    let mut ebpf = load_object(TC_OBJECT, &maps, &opts.capacity)?;
    for name in [PROG_INGRESS, PROG_EGRESS] {
        let prog = classifier(&mut ebpf, name)?;
        crate::retry::on_eagain(|| prog.load()).map_err(verifier_err(name))?;
    }
    // Links this load created: if a later interface fails, they are
    // unpinned again (which detaches them), so a failed load attaches nothing.
    let mut created: Vec<PathBuf> = Vec::new();
    let attached = (|| {
        for iface in &opts.interfaces {
            for (name, attach, suffix) in [
                (PROG_INGRESS, TcAttachType::Ingress, "ingress"),
                (PROG_EGRESS, TcAttachType::Egress, "egress"),
            ] {
                // bpffs refuses names with dots (reserved), which VLAN devices have.
                let pin = links.join(format!("{}-{suffix}", iface.replace('.', "~")));
                if attach_pinned(classifier(&mut ebpf, name)?, iface, attach, &pin)? {
                    created.push(pin);
                }
            }
            register_device(&maps, iface)?;
        }
        match &opts.cgroup {
            Some(cg) => load_sock(cg, &maps, &links, &opts.capacity).map(Some),
            None => Ok(None),
        }
    })();
    let sock = match attached {
        Ok(sock) => sock,
        Err(e) => {
            for pin in created.iter().rev() {
                let _ = std::fs::remove_file(pin);
            }
            return Err(e);
        }
    };
    Ok(Loaded {
        ebpf,
        sock,
        pin_dir: opts.pin_dir.clone(),
    })
}

/// Attaches `prog` through the link pinned at `pin` (atomic replacement),
/// or creates, pins and releases a new TCX link. Returns true when it
/// created the link (and its pin).
fn attach_pinned(
    prog: &mut SchedClassifier,
    iface: &str,
    attach: TcAttachType,
    pin: &Path,
) -> Result<bool, LoadError> {
    let ctx = || format!("attaching {attach:?} on {iface}");
    if pin.exists() {
        let replaced = PinnedLink::from_pin(pin)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|l| {
                SchedClassifierLink::try_from(FdLink::from(l))
                    .map_err(|e| io::Error::other(e.to_string()))
            })
            .and_then(|link| {
                prog.attach_to_link(link)
                    .map_err(|e| io::Error::other(e.to_string()))
            });
        match replaced {
            Ok(id) => {
                // The pin keeps the link; our handle just closes its fd.
                drop(prog.take_link(id).map_err(prog_err(ctx()))?);
                return Ok(false);
            }
            // A stale pin (e.g. the device was recreated): replace it.
            Err(_) => std::fs::remove_file(pin).map_err(io_err("unpin stale link", pin))?,
        }
    }
    if !interface_exists(iface) {
        return Err(LoadError::NoInterface(iface.to_owned()));
    }
    let id = prog
        .attach_with_options(
            iface,
            attach,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(prog_err(ctx()))?;
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
    Ok(true)
}

fn ifindex(iface: &str) -> u32 {
    let Ok(c) = CString::new(iface) else {
        return 0;
    };
    // SAFETY: `c` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

pub(crate) fn interface_exists(iface: &str) -> bool {
    ifindex(iface) != 0
}

/// Records `iface` in `lb_devices`: routes through it make backends remote
/// (SNAT mode).
fn register_device(maps: &Path, iface: &str) -> Result<(), LoadError> {
    let index = ifindex(iface);
    if index == 0 {
        return Err(LoadError::NoInterface(iface.to_owned()));
    }
    let err = |e: aya::maps::MapError| LoadError::Program {
        context: format!("registering device {iface} in {MAP_DEVICES}"),
        source: Box::new(e),
    };
    let data = MapData::from_pin(maps.join(MAP_DEVICES)).map_err(err)?;
    let mut devices: aya::maps::HashMap<MapData, u32, u8> = aya::maps::Map::from_map_data(data)
        .map_err(err)?
        .try_into()
        .map_err(err)?;
    devices.insert(index, 1, 0).map_err(err)
}

/// Detaches every pinned link and unpins every map under `pin_dir`, then
/// removes the (empty) directories. Missing pins are fine.
pub fn cleanup(pin_dir: &Path) -> Result<(), LoadError> {
    for dir in [links_dir(pin_dir), maps_dir(pin_dir)] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read", &dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io_err("read", &dir))?.path();
            std::fs::remove_file(&path).map_err(io_err("unpin", &path))?;
        }
        std::fs::remove_dir(&dir).map_err(io_err("rmdir", &dir))?;
    }
    Ok(())
}
