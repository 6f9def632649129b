//! A drop of the IP frames arriving on a device that the I/O loop handles
//! instead of the kernel ([`takes`]: every IPv4 frame, and every IPv6 frame
//! except hop-by-hop and ICMPv6 informational messages, so neighbour
//! discovery and MLD stay with the kernel while ICMPv6 errors, which may
//! be about load-balanced flows, go to the loop), owned by this process: a
//! twenty-instruction BPF program attached to the device's tc ingress hook
//! through a TCX link (`BPF_LINK_CREATE`, Linux 6.6+).
//!
//! The link is an fd of this process, not an object in the kernel's
//! configuration: when [`TcxDrop`] is dropped, or the process exits for any
//! reason (also `kill -9` or a panic that aborts), the kernel closes the
//! fd and detaches the program. Nothing survives the process to blackhole
//! the device, and no qdisc or tc filter is created or deleted, so other
//! programs' tc configuration (clsact qdiscs, cls_bpf filters, other TCX
//! programs) is never touched. Other frames go on to the next program of
//! the hook (`TCX_NEXT`).
//!
//! The program, as it is loaded:
//!
//! ```text
//!  0: r0 = *(u32 *)(r1 + offsetof(struct __sk_buff, protocol))
//!  1: if r0 == htons(ETH_P_IP) goto 16
//!  2: if r0 != htons(ETH_P_IPV6) goto 18
//!  3: r2 = *(u32 *)(r1 + offsetof(struct __sk_buff, data))
//!  4: r3 = *(u32 *)(r1 + offsetof(struct __sk_buff, data_end))
//!  5: r4 = r2
//!  6: r4 += 21                      // Ethernet + IPv6 up to next header
//!  7: if r4 > r3 goto 18
//!  8: r0 = *(u8 *)(r2 + 20)         // the IPv6 next header
//!  9: if r0 == IPPROTO_HOPOPTS goto 18
//! 10: if r0 != IPPROTO_ICMPV6 goto 16
//! 11: r4 = r2
//! 12: r4 += 55                      // Ethernet + IPv6 + ICMPv6 type
//! 13: if r4 > r3 goto 18
//! 14: r0 = *(u8 *)(r2 + 54)         // the ICMPv6 type
//! 15: if r0 > 127 goto 18           // informational (ND, MLD, echo)
//! 16: r0 = TCX_DROP
//! 17: exit
//! 18: r0 = TCX_NEXT
//! 19: exit
//! ```
//!
//! It is built and attached with raw `bpf(2)` calls (no ELF object, no
//! helper calls, no maps), so lb-userspace needs no BPF toolchain.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const TCX_DROP: i32 = 2;
const TCX_NEXT: i32 = -1;
/// `offsetof(struct __sk_buff, protocol)`.
const SKB_PROTOCOL: i16 = 16;
/// `offsetof(struct __sk_buff, data)`.
const SKB_DATA: i16 = 76;
/// `offsetof(struct __sk_buff, data_end)`.
const SKB_DATA_END: i16 = 80;
/// IPv6 next header: ICMPv6.
const IPPROTO_ICMPV6: i32 = 58;
/// IPv6 next header: hop-by-hop options (MLD reports carry one).
const IPPROTO_HOPOPTS: i32 = 0;

/// True for an Ethernet frame the drop program drops, i.e. the frames the
/// I/O loop must handle (and re-inject) itself: IPv4, and IPv6 whose next
/// header is neither hop-by-hop options nor ICMPv6 other than an error
/// (types below 128). (The program reads the
/// EtherType from `skb->protocol`, which for an untagged frame is the
/// frame's own.)
///
/// ```
/// use lb_userspace::tcx::takes;
/// let mut f = [0u8; 60];
/// f[12..14].copy_from_slice(&[0x08, 0x06]); // ARP
/// assert!(!takes(&f));
/// f[12..14].copy_from_slice(&[0x86, 0xdd]); // IPv6
/// f[20] = 6; // TCP
/// assert!(takes(&f));
/// f[20] = 58; // ICMPv6
/// f[54] = 135; // neighbour solicitation
/// assert!(!takes(&f));
/// f[54] = 1; // destination unreachable
/// assert!(takes(&f));
/// ```
pub fn takes(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => true,
        Some([0x86, 0xdd]) => match frame.get(20).map(|&n| i32::from(n)) {
            None | Some(IPPROTO_HOPOPTS) => false,
            Some(IPPROTO_ICMPV6) => frame.get(54).is_some_and(|&t| t < 128),
            Some(_) => true,
        },
        _ => false,
    }
}

/// `union bpf_attr`, as bytes (large enough for the commands used here;
/// the kernel requires the bytes it does not know to be zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable `union bpf_attr` of the size
    // passed; every pointer stored in it points to memory that outlives
    // the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: a successful BPF_PROG_LOAD / BPF_LINK_CREATE returns a new
    // fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// One `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let regs = if cfg!(target_endian = "little") {
        dst | (src << 4)
    } else {
        (dst << 4) | src
    };
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = regs;
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

fn program() -> [[u8; 8]; 20] {
    // skb->protocol holds the big-endian EtherType, read as a host number.
    let eth_p_ip = i32::from(u16::from_ne_bytes([0x08, 0x00]));
    let eth_p_ipv6 = i32::from(u16::from_ne_bytes([0x86, 0xdd]));
    // Jump offsets count from the next instruction.
    [
        insn(0x61, 0, 1, SKB_PROTOCOL, 0), //  0: ldxw r0, [r1 + protocol]
        insn(0x15, 0, 0, 14, eth_p_ip),    //  1: jeq r0, ETH_P_IP, 16
        insn(0x55, 0, 0, 15, eth_p_ipv6),  //  2: jne r0, ETH_P_IPV6, 18
        insn(0x61, 2, 1, SKB_DATA, 0),     //  3: ldxw r2, [r1 + data]
        insn(0x61, 3, 1, SKB_DATA_END, 0), //  4: ldxw r3, [r1 + data_end]
        insn(0xbf, 4, 2, 0, 0),            //  5: mov64 r4, r2
        insn(0x07, 4, 0, 0, 21),           //  6: add64 r4, 21
        insn(0x2d, 4, 3, 10, 0),           //  7: jgt r4, r3, 18
        insn(0x71, 0, 2, 20, 0),           //  8: ldxb r0, [r2 + 20]
        insn(0x15, 0, 0, 8, IPPROTO_HOPOPTS), //  9: jeq r0, 0, 18
        insn(0x55, 0, 0, 5, IPPROTO_ICMPV6), // 10: jne r0, 58, 16
        insn(0xbf, 4, 2, 0, 0),            // 11: mov64 r4, r2
        insn(0x07, 4, 0, 0, 55),           // 12: add64 r4, 55
        insn(0x2d, 4, 3, 4, 0),            // 13: jgt r4, r3, 18
        insn(0x71, 0, 2, 54, 0),           // 14: ldxb r0, [r2 + 54]
        insn(0x25, 0, 0, 2, 127),          // 15: jgt r0, 127, 18
        insn(0xb7, 0, 0, 0, TCX_DROP),     // 16: mov64 r0, TCX_DROP
        insn(0x95, 0, 0, 0, 0),            // 17: exit
        insn(0xb7, 0, 0, 0, TCX_NEXT),     // 18: mov64 r0, TCX_NEXT
        insn(0x95, 0, 0, 0, 0),            // 19: exit
    ]
}

/// The drop program ([`takes`]) attached to one device's tc ingress; detached
/// when dropped (or when the process dies).
#[derive(Debug)]
pub struct TcxDrop {
    ifindex: u32,
    _link: OwnedFd,
}

impl TcxDrop {
    /// Loads the program and attaches it to the ingress of the device with
    /// index `ifindex` (in the calling thread's network namespace). Makes
    /// system calls only (no allocation).
    pub fn attach(ifindex: u32) -> io::Result<Self> {
        let insns = program();
        let license = b"Apache-2.0\0";
        let mut a = Attr::new();
        a.u32(0, BPF_PROG_TYPE_SCHED_CLS)
            .u32(4, insns.len() as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(68, BPF_TCX_INGRESS); // expected_attach_type
        a.0[48..48 + 10].copy_from_slice(b"lb_us_drop"); // prog_name
        let prog = fd(bpf(BPF_PROG_LOAD, &mut a)?);
        let mut a = Attr::new();
        a.u32(0, prog.as_raw_fd() as u32)
            .u32(4, ifindex)
            .u32(8, BPF_TCX_INGRESS);
        // The link holds the program: its own fd can be closed.
        let link = fd(bpf(BPF_LINK_CREATE, &mut a)?);
        Ok(TcxDrop {
            ifindex,
            _link: link,
        })
    }

    /// The device's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

/// How many programs are attached to the TCX ingress of device `ifindex`
/// (ours and anybody else's).
pub fn ingress_programs(ifindex: u32) -> io::Result<u32> {
    let mut a = Attr::new();
    a.u32(0, ifindex).u32(4, BPF_TCX_INGRESS);
    bpf(BPF_PROG_QUERY, &mut a)?;
    Ok(a.get_u32(24)) // prog_cnt
}
