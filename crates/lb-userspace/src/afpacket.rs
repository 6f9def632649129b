//! The I/O loop's receive socket: an `AF_PACKET` socket bound to one
//! device with `PACKET_VNET_HDR`, so every frame comes with the kernel's
//! offload metadata ([`VnetHdr`]): whether its L4 checksum is left to
//! offload (`CHECKSUM_PARTIAL`, with the exact place of the field) and
//! whether it is a GSO/GRO super-frame (bigger than the MTU, with the
//! segment size its sender asked for).
//!
//! A frame from a GSO-capable sender over veth (a pod, or the client
//! namespace in tests), or one the NIC's GRO merged, is handed to packet
//! taps whole, up to 64 KiB. pnet's datalink channel reads it into a
//! 4096-byte buffer (truncated) and says nothing of its segment size, and
//! a raw IP socket refuses to send anything above the egress MTU
//! (`EMSGSIZE`): with pnet the loop lost every such frame and TCP crawled
//! on retransmissions. With this socket the loop reads whole frames and
//! cuts them into the segments the sender meant ([`crate::gso`]).
//!
//! Receiving makes one `recvfrom(2)` into the caller's buffer: no
//! allocation.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::gso::{VnetHdr, VNET_HDR_LEN};

const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_OUTGOING: u8 = 4;

/// One frame read by [`RxSocket::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The kernel's offload metadata of the frame.
    pub vnet: VnetHdr,
    /// The frame's length (it starts at [`VNET_HDR_LEN`] in the buffer).
    pub len: usize,
    /// The frame is one this host sends out of the device (not received).
    pub outgoing: bool,
}

/// A packet socket with virtio-net headers, bound to one device.
#[derive(Debug)]
pub struct RxSocket {
    fd: OwnedFd,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

impl RxSocket {
    /// Opens the socket on the device with index `ifindex` (in the calling
    /// thread's network namespace), promiscuous (as pnet's channel was),
    /// with a receive buffer of `rcvbuf` bytes (forced past `rmem_max`
    /// when the process may). Reads do not block: wait with `poll(2)` on
    /// [`RxSocket::as_raw_fd`].
    pub fn open(ifindex: u32, rcvbuf: usize) -> io::Result<Self> {
        // SAFETY: plain socket creation; the fd is owned right away.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(ETH_P_ALL.to_be()),
            )
        })?;
        // SAFETY: a new fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Before bind: no frame is queued without its header.
        setsockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &1 as &libc::c_int)?;
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size)?;
        }
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: an all-zero packet_mreq is valid; the fields are set below.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex as libc::c_int;
        mreq.mr_type = PACKET_MR_PROMISC;
        setsockopt(&fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)?;
        Ok(RxSocket { fd })
    }

    /// The socket's fd (for `poll(2)`).
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one frame into `buf`: its virtio-net header in the first
    /// [`VNET_HDR_LEN`] bytes, the frame after it. Fails with
    /// `WouldBlock` when no frame is queued, and
    /// with `InvalidData` for a frame longer than `buf` (it is consumed).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut sll_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` is writable for its length; `sll` and `sll_len`
        // describe a writable address buffer.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut sll_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > buf.len() || n < VNET_HDR_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame longer than the buffer",
            ));
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr.copy_from_slice(&buf[..VNET_HDR_LEN]);
        Ok(Received {
            vnet: VnetHdr::parse(&hdr),
            len: n - VNET_HDR_LEN,
            outgoing: sll.sll_pkttype == PACKET_OUTGOING,
        })
    }
}
