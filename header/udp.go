package header

import "encoding/binary"

// UDP is a view of a UDP header (RFC 768) at the start of the slice.
type UDP []byte

// SrcPort returns the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[0:]) }

// DstPort returns the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[2:]) }

// Length returns the length field: header and payload.
func (u UDP) Length() int { return int(binary.BigEndian.Uint16(u[4:])) }

// Checksum returns the checksum field (0: none, over IPv4).
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:]) }

// SetChecksum sets the checksum field.
func (u UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(u[6:], c) }

// Encode writes a UDP header with a zero checksum.
func (u UDP) Encode(src, dst uint16, length int) {
	binary.BigEndian.PutUint16(u[0:], src)
	binary.BigEndian.PutUint16(u[2:], dst)
	binary.BigEndian.PutUint16(u[4:], uint16(length))
	binary.BigEndian.PutUint16(u[6:], 0)
}

// ESP is a view of an ESP header (RFC 4303 §2) at the start of the slice.
type ESP []byte

// SPI returns the Security Parameters Index.
func (e ESP) SPI() uint32 { return binary.BigEndian.Uint32(e[0:]) }

// Seq returns the (low 32 bits of the) sequence number.
func (e ESP) Seq() uint32 { return binary.BigEndian.Uint32(e[4:]) }

// Encode writes the SPI and the low 32 bits of the sequence number.
func (e ESP) Encode(spi, seq uint32) {
	binary.BigEndian.PutUint32(e[0:], spi)
	binary.BigEndian.PutUint32(e[4:], seq)
}
