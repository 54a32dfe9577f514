// Package ipfrag splits IP packets into fragments and reassembles IPv4
// and IPv6 datagrams from fragments (RFC 791, RFC 815, RFC 8200 §4.5),
// with bounded memory, for vnic's data path.
//
// It has two uses. vnic's underlay sends ESP packets through raw sockets
// with IP_HDRINCL or IPV6_HDRINCL, where the kernel refuses a packet larger
// than the link MTU (EMSGSIZE) instead of fragmenting it: FragmentIPv4 and
// FragmentIPv6 split such an outer packet into fragments that fit, to be
// sent one by one. And in transport mode ESP must protect whole datagrams,
// never fragments (RFC 4303 §3.3.4), while the host fragments large
// datagrams at the TUN device: vnic's outbound loop hands the IPv4 and
// IPv6 fragments (IsFragment) to a Reassembler and protects the datagram
// once it is whole. (A peer would not take IPv6 fragments protected one by
// one once the ESP packet carrying one is itself fragmented on the way:
// Linux refuses a Fragment header in a reassembled packet.)
//
// Nothing here allocates per packet once warmed up: the fragmenters write
// into the caller's buffers, and a Reassembler reuses the buffers of the
// datagrams it has released, expired or dropped.
package ipfrag
