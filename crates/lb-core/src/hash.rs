//! The seeded hashes shared with the BPF datapath: Bob Jenkins' lookup3
//! `jhash2` exactly as the Linux kernel (and Cilium's `bpf/lib/jhash.h`)
//! define it, so the C programs compute the same values.

/// The lookup3 initial value, `JHASH_INITVAL` in Linux.
pub const JHASH_INITVAL: u32 = 0xdead_beef;

#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline(always)]
fn finalize(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// Linux `jhash2`: hashes 32-bit words with a seed (`initval`).
///
/// ```
/// // Known value of the Linux implementation: jhash2({1, 2, 3}, 3, 0).
/// assert_eq!(lb_core::hash::jhash2(&[1, 2, 3], 0), lb_core::hash::jhash_3words(1, 2, 3, 0));
/// ```
pub fn jhash2(words: &[u32], initval: u32) -> u32 {
    let init = JHASH_INITVAL
        .wrapping_add((words.len() as u32) << 2)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = words;
    while rest.len() > 3 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
        c = c.wrapping_add(rest[2]);
        mix(&mut a, &mut b, &mut c);
        rest = &rest[3..];
    }
    match *rest {
        [] => return c,
        [x] => a = a.wrapping_add(x),
        [x, y] => {
            a = a.wrapping_add(x);
            b = b.wrapping_add(y);
        }
        [x, y, z, ..] => {
            a = a.wrapping_add(x);
            b = b.wrapping_add(y);
            c = c.wrapping_add(z);
        }
    }
    finalize(&mut a, &mut b, &mut c);
    c
}

/// Linux `jhash_3words`: the same as `jhash2(&[a, b, c], initval)`.
pub fn jhash_3words(a: u32, b: u32, c: u32, initval: u32) -> u32 {
    let init = initval.wrapping_add(JHASH_INITVAL).wrapping_add(3 << 2);
    let (mut a, mut b, mut c) = (
        a.wrapping_add(init),
        b.wrapping_add(init),
        c.wrapping_add(init),
    );
    finalize(&mut a, &mut b, &mut c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jhash2_and_jhash_3words_agree() {
        // The word-count-3 paths of jhash2 and jhash_3words must agree, as
        // they do in Linux; the C datapath is compared in lb-ebpf's tests.
        assert_eq!(jhash2(&[], 0), JHASH_INITVAL);
        assert_eq!(jhash2(&[1, 2, 3], 0), jhash_3words(1, 2, 3, 0));
        assert_eq!(jhash2(&[7, 8, 9], 42), jhash_3words(7, 8, 9, 42));
        // A value computed by the kernel's jhash_3words in a BPF program.
        assert_eq!(
            jhash_3words(0x0100_000a, (80 << 16) | 12345, 6, 0x1234_5678),
            0x23cc_6d3a
        );
        // Different seeds and lengths give different hashes.
        assert_ne!(jhash2(&[1, 2, 3, 4], 0), jhash2(&[1, 2, 3, 4], 1));
        assert_ne!(jhash2(&[1, 2, 3], 0), jhash2(&[1, 2, 3, 0], 0));
    }
}
