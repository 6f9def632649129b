//! What the packets-per-second examples `family_pps` and `nat46x64_pps`
//! share: their frames, addresses, per-case state and statistics.
#![allow(dead_code)]

use lb_userspace::{PacketPath, UserspaceDataplane};

/// Client flows of each case.
pub const FLOWS: usize = 4096;

/// An established-flow TCP frame (ACK, 18 bytes of payload) `src` → `dst`.
pub fn frame(src: &str, dst: &str) -> Vec<u8> {
    lb_testkit::PacketBuilder::tcp(src.parse().unwrap(), dst.parse().unwrap())
        .ack()
        .payload([0u8; 18])
        .build()
        .unwrap()
}

/// `[ADDR]:PORT` for IPv6, `ADDR:PORT` for IPv4.
pub fn hp(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// The client frames to `dst`: flow `i` from `172.16.I/250%250.I%250+1`
/// (or `fd00:16:…::…` for `v6`), port `10000 + i`.
pub fn client_frames(v6: bool, dst: &str) -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|i| {
            let src = if v6 {
                format!("fd00:16:{:x}::{:x}", i / 250 % 250, i % 250 + 1)
            } else {
                format!("172.16.{}.{}", i / 250 % 250, i % 250 + 1)
            };
            frame(&hp(&src, (10000 + i) as u16), dst)
        })
        .collect()
}

/// One case's worker and its client and reply frames.
pub struct Case {
    pub _dp: UserspaceDataplane,
    pub w: PacketPath,
    pub frames: Vec<Vec<u8>>,
    pub replies: Vec<Vec<u8>>,
}

/// Median, minimum and maximum of `v` (sorted in place).
pub fn median_spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}
