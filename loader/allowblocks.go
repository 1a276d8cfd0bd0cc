package loader

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// The block bitmaps (xdpguard_blk4, xdpguard_blk6 in bpf/xdpguard.c) say
// which address blocks the allow lists touch: block b is the addresses whose
// leading blockBits bits are b, and its bit is set when a listed prefix
// covers the block or lies inside it. The data plane walks a
// trie only for a peer whose block's bit is set.
//
// A set bit with no prefix behind it costs a trie walk and changes no answer;
// a clear bit with a prefix behind it would drop a listed peer. So every
// change keeps this order, and a packet between two writes gets the answer of
// the list before the change or of the list after it:
//
//   - adds: the prefixes go into the trie first, then their blocks' bits are
//     set. Before the bit, the new peer is treated as unlisted: the old
//     list's answer.
//   - deletes: the prefixes leave the trie first, then the bits of blocks no
//     remaining prefix touches are cleared (computed from the whole remaining
//     list, never by counting). While the bit is still set, the trie already
//     answers as the new list does.
//
// A bit set for an add that is rolled back stays set until the next deletion
// in its family: the trie answers exactly, the bitmap only saves work.
//
// Blocks are /24s in both families (ALLOW4_BLOCK_BITS, ALLOW6_BLOCK_BITS): an
// address's leading three bytes.
const blockBits = 24

// blockBitmap is one family's bitmap in memory, word i being array slot i.
type blockBitmap []uint64

func newBlockBitmap() blockBitmap { return make(blockBitmap, 1<<blockBits/64) }

// blockRange returns the first and last block p touches.
func blockRange(p netip.Prefix) (first, last uint32) {
	var top uint32
	if p.Addr().Is4() {
		a := p.Addr().As4()
		top = uint32(a[0])<<16 | uint32(a[1])<<8 | uint32(a[2])
	} else {
		a := p.Addr().As16()
		top = uint32(a[0])<<16 | uint32(a[1])<<8 | uint32(a[2])
	}
	if p.Bits() >= blockBits {
		return top, top
	}
	span := uint32(1)<<(blockBits-p.Bits()) - 1
	return top &^ span, top | span
}

// setRange sets the bits of blocks first to last.
func (b blockBitmap) setRange(first, last uint32) {
	for blk := first; blk <= last; {
		if blk%64 == 0 && last-blk >= 63 {
			b[blk/64] = ^uint64(0)
			blk += 64
		} else {
			b[blk/64] |= 1 << (blk % 64)
			blk++
		}
	}
}

// blocksOf returns the bitmaps of the blocks ps touch, nil for a family
// without prefixes.
func blocksOf(ps []netip.Prefix) (v4, v6 blockBitmap) {
	for _, p := range ps {
		first, last := blockRange(p)
		if p.Addr().Is4() {
			if v4 == nil {
				v4 = newBlockBitmap()
			}
			v4.setRange(first, last)
		} else {
			if v6 == nil {
				v6 = newBlockBitmap()
			}
			v6.setRange(first, last)
		}
	}
	return v4, v6
}

// readBlocks reads a whole bitmap map, through its memory mapping
// (BPF_F_MMAPABLE): a batch lookup of the 2 MiB takes some 100 ms.
func readBlocks(m *ebpf.Map) (blockBitmap, error) {
	mem, err := m.Memory()
	if err != nil {
		return nil, fmt.Errorf("map allow-list block bitmap: %w", err)
	}
	raw := make([]byte, 8*m.MaxEntries())
	if _, err := mem.ReadAt(raw, 0); err != nil {
		return nil, fmt.Errorf("read allow-list block bitmap: %w", err)
	}
	out := make(blockBitmap, m.MaxEntries())
	for i := range out {
		out[i] = binary.NativeEndian.Uint64(raw[8*i:])
	}
	return out, nil
}

// writeBlocks writes the words of next that differ from cur, each with one
// 8-byte store into the map's memory (an aligned 8-byte copy is one move on
// the architectures BPF runs on), so a reader sees each word either before
// or after, never half of it.
func writeBlocks(m *ebpf.Map, cur, next blockBitmap) error {
	mem, err := m.Memory()
	if err != nil {
		return fmt.Errorf("map allow-list block bitmap: %w", err)
	}
	var word [8]byte
	for i := range next {
		if next[i] == cur[i] {
			continue
		}
		binary.NativeEndian.PutUint64(word[:], next[i])
		if _, err := mem.WriteAt(word[:], int64(8*i)); err != nil {
			return fmt.Errorf("write allow-list block bitmap: %w", err)
		}
	}
	return nil
}

func (m *Maps) blocksMap(v6 bool) *ebpf.Map {
	if v6 {
		return m.Allow6Blocks
	}
	return m.Allow4Blocks
}

// setBlocks sets the bits of the blocks ps touch. Call it after ps are in
// the tries.
func (m *Maps) setBlocks(ps []netip.Prefix) error {
	add4, add6 := blocksOf(ps)
	for _, f := range []struct {
		v6  bool
		add blockBitmap
	}{{false, add4}, {true, add6}} {
		if f.add == nil {
			continue
		}
		mp := m.blocksMap(f.v6)
		cur, err := readBlocks(mp)
		if err != nil {
			return err
		}
		next := make(blockBitmap, len(cur))
		for i := range cur {
			next[i] = cur[i] | f.add[i]
		}
		if err := writeBlocks(mp, cur, next); err != nil {
			return err
		}
	}
	return nil
}

// clearBlocks clears, in each family deleted has prefixes of, the bits of
// blocks that remaining, the whole list the tries hold now, does not touch.
// Call it after deleted are out of the tries. It only ever clears bits.
func (m *Maps) clearBlocks(deleted, remaining []netip.Prefix) error {
	del4, del6 := blocksOf(deleted)
	keep4, keep6 := blocksOf(remaining)
	for _, f := range []struct {
		v6        bool
		del, keep blockBitmap
	}{{false, del4, keep4}, {true, del6, keep6}} {
		if f.del == nil {
			continue
		}
		if f.keep == nil {
			f.keep = newBlockBitmap()
		}
		mp := m.blocksMap(f.v6)
		cur, err := readBlocks(mp)
		if err != nil {
			return err
		}
		// keep is the whole list's: bits it lacks are stale (the deleted
		// prefixes', or an added one's whose Apply was rolled back).
		next := make(blockBitmap, len(cur))
		for i := range cur {
			next[i] = cur[i] & f.keep[i]
		}
		if err := writeBlocks(mp, cur, next); err != nil {
			return err
		}
	}
	return nil
}

// clearAllBlocks clears both bitmaps; the tries must be empty.
func (m *Maps) clearAllBlocks() error {
	for _, v6 := range []bool{false, true} {
		mp := m.blocksMap(v6)
		cur, err := readBlocks(mp)
		if err != nil {
			return err
		}
		if err := writeBlocks(mp, cur, make(blockBitmap, len(cur))); err != nil {
			return err
		}
	}
	return nil
}

// fillAllBlocks sets every bit: the trie is then walked for every peer, as
// before the bitmaps existed. Exact whatever the tries hold; a read-only
// open gives it to maps it cannot pin (state from before the bitmaps).
func (m *Maps) fillAllBlocks() error {
	for _, v6 := range []bool{false, true} {
		mp := m.blocksMap(v6)
		cur := make(blockBitmap, mp.MaxEntries())
		next := make(blockBitmap, len(cur))
		for i := range next {
			next[i] = ^uint64(0)
		}
		if err := writeBlocks(mp, cur, next); err != nil {
			return err
		}
	}
	return nil
}

// syncBlocks sets every bit the tries' prefixes need, read from the tries
// themselves (not the record or this process's copy), once per Apply. An
// upgrade runs it before it swaps programs in: programs of a release
// without the bitmaps may have run, and their loader changed the tries,
// since the bitmaps were made (a downgrade and upgrade again), and the
// programs swapped in must not see a clear bit over a listed prefix. It
// only sets bits.
func (g *Guard) syncBlocks() error {
	if g.blocksSynced {
		return nil
	}
	ps, err := g.Maps.AllowList()
	if err != nil {
		return err
	}
	if err := g.Maps.setBlocks(ps); err != nil {
		return err
	}
	g.blocksSynced = true
	return nil
}
