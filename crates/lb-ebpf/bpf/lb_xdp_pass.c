/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_xdp_pass.c: an XDP program that passes every frame, with no maps.
 *
 * A veth delivers frames sent to it with XDP_REDIRECT or XDP_TX from its
 * peer (ndo_xdp_xmit) only when its receiving end runs an XDP program (or
 * has GRO enabled): without one they are dropped. Attach this to the far
 * end of a veth that lb_xdp forwards into (a backend's or a router's end
 * in tests); physical NICs need nothing of the kind.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int lb_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
