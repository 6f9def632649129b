//! A fast, seedable PRNG for weighted random backend selection.

/// wyrand: 64-bit state, one multiply per draw. Not cryptographic.
///
/// ```
/// use lb_userspace::rng::FastRng;
/// let (mut a, mut b) = (FastRng::new(7), FastRng::new(7));
/// assert_eq!(a.next_u32(), b.next_u32());
/// ```
#[derive(Debug, Clone)]
pub struct FastRng(u64);

impl FastRng {
    /// A generator with the given seed (tests: deterministic entropy).
    pub const fn new(seed: u64) -> Self {
        FastRng(seed)
    }

    /// A generator seeded from the clock and an address on the stack.
    pub fn from_entropy() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        FastRng(t ^ (std::ptr::addr_of!(local) as u64).rotate_left(32))
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64 ^ t as u64) as u32
    }
}
