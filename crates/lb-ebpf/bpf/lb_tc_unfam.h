/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * lb_tc_unfam.h: undefines the LBF_* macros of one family after
 * lb_tc_fam.h, so that lb_tc.c can define them for the next one.
 */
#undef LBF
#undef LBF_PKT
#undef LBF_ADDR
#undef LBF_ADDR_NONE
#undef LBF_KEY
#undef LBF_CT_KEY
#undef LBF_CT_ENTRY
#undef LBF_AFF_KEY
#undef LBF_SNAT_ENTRY
#undef LBF_BACKEND
#undef LBF_REV_NAT
#undef LBF_CT_MAP
#undef LBF_BACKENDS_MAP
#undef LBF_AFFINITY_MAP
#undef LBF_SNAT_MAP
#undef LBF_REV_NAT_MAP
#undef LBF_PARSE
#undef LBF_IS_SET
#undef LBF_EQ
#undef LBF_SNAT_ADDR
#undef LBF_LOOKUP_FRONTEND
#undef LBF_SRC_RANGE_OK
#undef LBF_CHOOSE_BACKEND
#undef LBF_DSR_APPLIES
#undef LBF_ROUTE_IS_OURS
#undef LBF_FIB_REDIRECT
#undef LBF_SNAT_ALLOC
#undef LBF_SNAT_REFRESH
#undef LBF_SNAT_KEY
#undef LBF_CT_REPLY_INSERT
#undef LBF_CT_TOUCH
#undef LBF_CT_FRESH
#undef LBF_CT_CLOSE
#undef LBF_FLOW_HASH
#undef LBF_REWRITE_SRC
#undef LBF_REWRITE_DST
#undef LBF_INGRESS_OTHER
#undef LBF_EGRESS_OTHER
#undef LBF_HAS_DSR
#undef LBF_XLATE
#undef LBF_XLATE_REPLY_IS
#undef LBF_XLATE_REPLY
#undef LBF_DSR_PROTO
#undef LBF_DSR_FORWARD
#undef LBF_SUBFN
#undef LBF_STATE
#undef LBF_STATE_DECL
