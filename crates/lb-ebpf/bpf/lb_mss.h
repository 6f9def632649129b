/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_mss.h: TCP MSS clamping (lb_core::nat46x64::mss_limit). A SYN or
 * SYN-ACK whose maximum segment size option is above a limit gets the
 * limit instead (never a higher value), with the TCP checksum updated
 * incrementally. The options are read into a scratch buffer and walked in
 * a loop of at most LB_TCP_OPTS_MAX steps (the verifier bounds it; every
 * index is masked into the buffer, and the offset is made opaque at each
 * step so the verifier's states converge).
 */
#ifndef LB_MSS_H
#define LB_MSS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* The longest TCP options (data offset 15: 60 - 20 bytes). */
#define LB_TCP_OPTS_MAX 40
/* The scratch buffer lb_mss_clamp needs (a power of two above
 * LB_TCP_OPTS_MAX, for masking). */
#define LB_MSS_BUF 64

#define LB_TCPOPT_EOL 0
#define LB_TCPOPT_NOP 1
#define LB_TCPOPT_MSS 2
#define LB_TCPOLEN_MSS 4

/* Lowers the MSS option of the TCP header at l4_off to max_mss when it is
 * higher; the checksum at csum_off is updated incrementally (an option at
 * an odd offset straddles two checksum words: its bytes are swapped for
 * the update). `buf` is LB_MSS_BUF bytes of scratch. 1 when the option was
 * lowered, 0 when there is none or it is not above max_mss, -1 when the
 * packet could not be read or written. */
static __always_inline int lb_mss_clamp(struct __sk_buff *skb, __u32 l4_off, __u32 csum_off,
					__u32 max_mss, __u8 *buf)
{
	__u32 olen, i = 0;
	__u8 doff;

	if (bpf_skb_load_bytes(skb, l4_off + 12, &doff, 1) < 0)
		return -1;
	olen = (__u32)(doff >> 4) * 4;
	if (olen <= 20)
		return 0;
	olen -= 20;
	/* For the verifier: 1..LB_MSS_BUF. */
	olen -= 1;
	asm volatile("%0 &= 63" : "+r"(olen));
	olen += 1;
	if (olen > LB_TCP_OPTS_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, l4_off + 20, buf, olen) < 0)
		return -1;
	for (int n = 0; n < LB_TCP_OPTS_MAX; n++) {
		__u8 kind, len;
		__u16 mss, old, new;

		/* Forget what the verifier knows of i (it is below olen, at
		 * most 40, here): every iteration then starts from the same
		 * state, whatever the options before, and the walk is verified
		 * in linear time. */
		asm volatile("%0 &= 63" : "+r"(i));
		if (i >= olen)
			break;
		kind = buf[i & (LB_MSS_BUF - 1)];
		if (kind == LB_TCPOPT_EOL)
			break;
		if (kind == LB_TCPOPT_NOP) {
			i++;
			continue;
		}
		if (i + 1 >= olen)
			break;
		len = buf[(i + 1) & (LB_MSS_BUF - 1)];
		if (len < 2 || i + len > olen)
			break;
		if (kind != LB_TCPOPT_MSS || len != LB_TCPOLEN_MSS) {
			i += len;
			continue;
		}
		mss = ((__u16)buf[(i + 2) & (LB_MSS_BUF - 1)] << 8) |
		      buf[(i + 3) & (LB_MSS_BUF - 1)];
		if (mss <= max_mss)
			return 0;
		old = bpf_htons(mss);
		new = bpf_htons((__u16)max_mss);
		if (bpf_skb_store_bytes(skb, l4_off + 20 + i + 2, &new, sizeof(new), 0) < 0)
			return -1;
		if (i & 1) {
			old = __builtin_bswap16(old);
			new = __builtin_bswap16(new);
		}
		if (bpf_l4_csum_replace(skb, csum_off, old, new, sizeof(new)) < 0)
			return -1;
		return 1;
	}
	return 0;
}

#endif /* LB_MSS_H */
