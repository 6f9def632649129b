/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_xdp_unfam.h: undefines the LBX_* macros of one family after
 * lb_xdp_fam.h, so that lb_xdp.c can define them for the next one.
 */
#undef LBX
#undef LBX_PKT
#undef LBX_ADDR
#undef LBX_ADDR_NONE
#undef LBX_KEY
#undef LBX_CT_KEY
#undef LBX_CT_ENTRY
#undef LBX_AFF_KEY
#undef LBX_SNAT_ENTRY
#undef LBX_BACKEND
#undef LBX_CT_MAP
#undef LBX_BACKENDS_MAP
#undef LBX_AFFINITY_MAP
#undef LBX_SNAT_MAP
#undef LBX_PARSE
#undef LBX_EQ
#undef LBX_SNAT_ADDR
#undef LBX_LOOKUP_FRONTEND
#undef LBX_SRC_RANGE_OK
#undef LBX_CHOOSE_BACKEND
#undef LBX_HAS_DSR
#undef LBX_DSR_PROTO
#undef LBX_DSR_OVERHEAD
#undef LBX_ROUTE_IS_OURS
#undef LBX_FIB
#undef LBX_SNAT_ALLOC
#undef LBX_SNAT_REFRESH
#undef LBX_SNAT_KEY
#undef LBX_CT_TOUCH
#undef LBX_CT_FRESH
#undef LBX_NAT
#undef LBX_DSR_ENCAP
#undef LBX_STATE
#undef LBX_STATE_DECL
