/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_test.c: test-only programs (never attached). lb_test_flow_hash parses a
 * packet (IPv4 or IPv6) like lb_tc_ingress and returns its Maglev flow hash
 * under the seed in lb_config, so tests can compare it with lb_core::FlowKey::hash.
 * lb_test_nop does nothing: its BPF_PROG_TEST_RUN time is the fixed cost
 * of a test run, which benches/benches/ebpf_packet.rs subtracts.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"
#include "lb_jhash.h"
#include "lb_pkt.h"

SEC("classifier")
int lb_test_flow_hash(struct __sk_buff *skb)
{
	struct lb_pkt p = {};
	__u32 zero = 0;
	struct lb_config *cfg = bpf_map_lookup_elem(&lb_config, &zero);

	if (cfg && skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct lb_pkt6 p6 = {};

		if (lb_parse6(skb, &p6) != LB_PARSE_OK)
			return 0;
		return lb_flow_hash6(&p6.saddr, &p6.daddr, p6.sport, p6.dport, p6.proto,
				     cfg->maglev_seed);
	}
	if (!cfg || lb_parse4(skb, &p) != LB_PARSE_OK)
		return 0;
	return lb_flow_hash4(p.saddr, p.daddr, p.sport, p.dport, p.proto, cfg->maglev_seed);
}

SEC("classifier")
int lb_test_nop(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK */
}

char LICENSE[] SEC("license") = "GPL";
