//! A shard's memory for item buffers: size classes 4 bytes apart, carved out of pages of
//! about 4 KiB, so an item costs its length rounded up to 4 bytes. malloc would add an
//! 8-byte header and round to 16 (a 148-byte item takes 160 there). Items too large for a
//! class keep a heap allocation of their own. Everything here runs under the shard's lock.

use super::item;

/// Class sizes step by this many bytes.
pub(crate) const GRAIN: usize = 4;
/// Largest item kept in a class: class numbers fit in a handle's top byte, and 255 marks
/// "no buffer".
pub(crate) const MAX_CLASSED: usize = 254 * GRAIN;
const CLASS_SHIFT: u32 = 24;
const IDX_MASK: u32 = (1 << CLASS_SHIFT) - 1;
/// Class 0: the buffer is a heap allocation of its own, indexed in `big`.
const BIG: usize = 0;
/// The handle of no buffer (a free slot).
pub(crate) const NO_HANDLE: u32 = u32::MAX;
/// A page holds at least this many bytes of chunks (a power-of-two count of them).
const PAGE_TARGET: usize = 4096;
/// Bytes of the `big` table entry that a big item needs besides its allocation.
const BIG_ENTRY: usize = 16;

/// Where an item's buffer lives: class in the top byte, chunk (or `big`) index below.
pub(crate) type Handle = u32;

/// What glibc malloc really consumes for a request of `n` bytes: 8 bytes of chunk header,
/// 16-byte granularity, 32-byte minimum; large requests are page-rounded mmaps.
pub(crate) fn malloc_cost(n: usize) -> usize {
    const MMAP_THRESHOLD: usize = 128 * 1024;
    if n >= MMAP_THRESHOLD {
        (n + 16 + 4095) & !4095
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

fn class_of(len: usize) -> Option<usize> {
    (len > 0 && len <= MAX_CLASSED).then(|| len.div_ceil(GRAIN))
}

/// Bytes an item buffer of `len` bytes takes: its chunk, or its allocation plus its entry
/// in the big-item table.
pub(crate) fn buffer_cost(len: usize) -> usize {
    match class_of(len) {
        Some(c) => c * GRAIN,
        None => malloc_cost(len) + BIG_ENTRY,
    }
}

struct Class {
    size: usize,
    /// log2 of the chunks per page.
    shift: u32,
    pages: Vec<Box<[u8]>>,
    /// Free chunk indices; a new page pushes all of its own.
    free: Vec<u32>,
    live: u32,
}

impl Class {
    fn new(c: usize) -> Class {
        let size = c * GRAIN;
        let per_page = PAGE_TARGET.div_ceil(size).next_power_of_two();
        Class {
            size,
            shift: per_page.trailing_zeros(),
            pages: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
    fn per_page(&self) -> usize {
        1 << self.shift
    }
    fn chunk(&self, idx: u32) -> Option<&[u8]> {
        let page = self.pages.get((idx >> self.shift) as usize)?;
        let off = (idx as usize & (self.per_page() - 1)) * self.size;
        page.get(off..off + self.size)
    }
    fn chunk_mut(&mut self, idx: u32) -> Option<&mut [u8]> {
        let size = self.size;
        let off = (idx as usize & (self.per_page() - 1)) * size;
        let page = self.pages.get_mut((idx >> self.shift) as usize)?;
        page.get_mut(off..off + size)
    }
    /// A free chunk, adding a page when none is left. None when the class's index space
    /// (24 bits) is full.
    fn take(&mut self) -> Option<u32> {
        if self.free.is_empty() {
            let per = self.per_page();
            let first = self.pages.len() * per;
            if first + per > IDX_MASK as usize {
                return None;
            }
            self.pages
                .push(vec![0u8; per * self.size].into_boxed_slice());
            // Lowest index on top, so a page fills front to back.
            self.free
                .extend((first..first + per).rev().map(|i| i as u32));
        }
        let idx = self.free.pop()?;
        self.live += 1;
        Some(idx)
    }
}

/// A shard's item buffers.
pub(crate) struct Arena {
    /// Class number to its position in `classes` plus one (0: not in use yet). Classes are
    /// made on first use: most shards see only a few sizes.
    pos: [u8; 256],
    classes: Vec<Class>,
    big: Vec<Box<[u8]>>,
    big_free: Vec<u32>,
}

impl Default for Arena {
    fn default() -> Self {
        Arena {
            pos: [0; 256],
            classes: Vec::new(),
            big: Vec::new(),
            big_free: Vec::new(),
        }
    }
}

fn split(h: Handle) -> (usize, u32) {
    ((h >> CLASS_SHIFT) as usize, h & IDX_MASK)
}

fn handle(class: usize, idx: u32) -> Handle {
    ((class as u32) << CLASS_SHIFT) | idx
}

impl Arena {
    fn class(&self, c: usize) -> Option<&Class> {
        let p = usize::from(*self.pos.get(c)?);
        self.classes.get(p.checked_sub(1)?)
    }
    fn class_mut(&mut self, c: usize) -> Option<&mut Class> {
        let p = usize::from(*self.pos.get(c)?);
        self.classes.get_mut(p.checked_sub(1)?)
    }
    fn class_or_new(&mut self, c: usize) -> Option<&mut Class> {
        if self.pos.get(c).copied() == Some(0) {
            self.classes.push(Class::new(c));
            // At most 254 classes, so the position fits a byte.
            let p = u8::try_from(self.classes.len()).ok()?;
            *self.pos.get_mut(c)? = p;
        }
        self.class_mut(c)
    }

    /// Stores an item buffer. None when neither a class nor the big table has room.
    pub(crate) fn put(&mut self, data: Box<[u8]>) -> Option<Handle> {
        if let Some(c) = class_of(data.len()) {
            if let Some(cl) = self.class_or_new(c) {
                if let Some(idx) = cl.take() {
                    if let Some(chunk) = cl.chunk_mut(idx) {
                        if let Some(dst) = chunk.get_mut(..data.len()) {
                            dst.copy_from_slice(&data);
                            return Some(handle(c, idx));
                        }
                    }
                }
            }
        }
        let idx = match self.big_free.pop() {
            Some(i) => {
                *self.big.get_mut(i as usize)? = data;
                i
            }
            None if self.big.len() < IDX_MASK as usize => {
                self.big.push(data);
                (self.big.len() - 1) as u32
            }
            None => return None,
        };
        Some(handle(BIG, idx))
    }

    /// The buffer of `h`, exactly as long as the item.
    pub(crate) fn get(&self, h: Handle) -> &[u8] {
        let (c, idx) = split(h);
        if c == BIG {
            return self.big.get(idx as usize).map_or(&[], |b| b);
        }
        match self.class(c).and_then(|cl| cl.chunk(idx)) {
            Some(chunk) => chunk.get(..item::stored_len(chunk)).unwrap_or(chunk),
            None => &[],
        }
    }

    pub(crate) fn get_mut(&mut self, h: Handle) -> &mut [u8] {
        let (c, idx) = split(h);
        if c == BIG {
            return self.big.get_mut(idx as usize).map_or(&mut [], |b| b);
        }
        match self.class_mut(c).and_then(|cl| cl.chunk_mut(idx)) {
            Some(chunk) => {
                let n = item::stored_len(chunk).min(chunk.len());
                &mut chunk[..n]
            }
            None => &mut [],
        }
    }

    /// Releases a buffer. Returns its class when the class now holds enough free chunks
    /// that it should be compacted (see [`Arena::begin_drain`]).
    pub(crate) fn free(&mut self, h: Handle) -> Option<usize> {
        let (c, idx) = split(h);
        if c == BIG {
            if let Some(b) = self.big.get_mut(idx as usize) {
                *b = Box::default();
                self.big_free.push(idx);
            }
            return None;
        }
        let cl = self.class_mut(c)?;
        cl.free.push(idx);
        cl.live = cl.live.saturating_sub(1);
        // Two pages' worth of free chunks, and an eighth of the live ones: then a drain
        // gives back at least a page, and a class that merely churns is left alone.
        let f = cl.free.len();
        (f >= 2 * cl.per_page() && f * 8 >= cl.live as usize).then_some(c)
    }

    /// Starts handing a class's highest pages back: all but about one page of its free
    /// chunks. Returns the first chunk index that is going away; every live handle of the
    /// class at or above it must be moved with [`Arena::relocate`] before
    /// [`Arena::end_drain`]. There are always enough free chunks below it for them.
    pub(crate) fn begin_drain(&mut self, c: usize) -> Option<u32> {
        let cl = self.class_mut(c)?;
        let per = cl.per_page();
        let k = (cl.free.len() / per).checked_sub(1).filter(|&k| k > 0)?;
        let keep = cl.pages.len().checked_sub(k)?;
        let cut = (keep * per) as u32;
        cl.free.retain(|&i| i < cut);
        Some(cut)
    }

    /// Whether `h` is a chunk of class `c` that a drain up to `cut` must move.
    pub(crate) fn in_drain(h: Handle, c: usize, cut: u32) -> bool {
        let (hc, idx) = split(h);
        h != NO_HANDLE && hc == c && idx >= cut
    }

    /// Moves a chunk that a drain is taking away into a free chunk below the cut.
    pub(crate) fn relocate(&mut self, h: Handle) -> Handle {
        let (c, idx) = split(h);
        let Some(cl) = self.class_mut(c) else {
            return h;
        };
        let Some(to) = cl.free.pop() else {
            return h;
        };
        let mut tmp = [0u8; MAX_CLASSED];
        let size = cl.size;
        let (Some(src), Some(buf)) = (cl.chunk(idx), tmp.get_mut(..size)) else {
            cl.free.push(to);
            return h;
        };
        buf.copy_from_slice(src);
        match cl.chunk_mut(to) {
            Some(dst) => {
                dst.copy_from_slice(buf);
                handle(c, to)
            }
            None => {
                cl.free.push(to);
                h
            }
        }
    }

    /// Drops the pages at and above `cut` once nothing lives there.
    pub(crate) fn end_drain(&mut self, c: usize, cut: u32) {
        if let Some(cl) = self.class_mut(c) {
            let keep = (cut as usize) >> cl.shift;
            cl.pages.truncate(keep);
            cl.pages.shrink_to_fit();
            if cl.free.capacity() > 4 * cl.free.len().max(cl.per_page()) {
                cl.free.shrink_to_fit();
            }
        }
    }

    /// Heap bytes of the arena's own bookkeeping and of chunks not in use (for stats).
    pub(crate) fn overhead_bytes(&self) -> usize {
        let classes: usize = self
            .classes
            .iter()
            .map(|c| c.free.len() * c.size + c.free.capacity() * 4 + c.pages.capacity() * 16)
            .sum();
        classes + self.big.capacity() * BIG_ENTRY + self.big_free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(len: usize, fill: u8) -> Box<[u8]> {
        // A minimal item: its header's length word, then filler.
        let mut v = vec![fill; len];
        if let Some(w) = v.get_mut(..4) {
            w.copy_from_slice(&(len as u32).to_le_bytes());
        }
        v.into_boxed_slice()
    }

    #[test]
    fn costs_round_to_the_grain() {
        assert_eq!(buffer_cost(148), 148);
        assert_eq!(buffer_cost(149), 152);
        assert_eq!(buffer_cost(MAX_CLASSED), MAX_CLASSED);
        assert_eq!(
            buffer_cost(MAX_CLASSED + 1),
            malloc_cost(MAX_CLASSED + 1) + BIG_ENTRY
        );
        assert_eq!(malloc_cost(1), 32);
        assert_eq!(malloc_cost(152), 160);
        assert_eq!(malloc_cost(153), 176);
    }

    #[test]
    fn put_get_free_reuse() {
        let mut a = Arena::default();
        let h1 = a.put(buf(150, 1));
        let h2 = a.put(buf(150, 2));
        let h3 = a.put(buf(5000, 3));
        let (Some(h1), Some(h2), Some(h3)) = (h1, h2, h3) else {
            panic!("no room")
        };
        assert_eq!(a.get(h1).len(), 150);
        assert_eq!(a.get(h1)[10], 1);
        assert_eq!(a.get(h2)[149], 2);
        assert_eq!(a.get(h3).len(), 5000);
        a.get_mut(h2)[20] = 9;
        assert_eq!(a.get(h2)[20], 9);
        assert_eq!(a.free(h1), None);
        assert_eq!(a.put(buf(149, 4)), Some(h1), "a freed chunk is reused");
        assert_eq!(a.free(h3), None);
        assert_eq!(a.put(buf(6000, 5)), Some(h3), "a freed big entry is reused");
    }

    #[test]
    fn a_drain_moves_live_chunks_below_the_cut_and_drops_pages() {
        let mut a = Arena::default();
        let mut hs: Vec<Handle> = (0..400)
            .map(|i| a.put(buf(100, (i % 250) as u8 + 1)))
            .collect::<Option<_>>()
            .unwrap_or_default();
        assert_eq!(hs.len(), 400);
        // Free all but every tenth: the class asks to be drained.
        let mut asked = None;
        let mut kept = Vec::new();
        for (i, h) in hs.drain(..).enumerate() {
            if i % 10 == 0 {
                kept.push((h, (i % 250) as u8 + 1));
            } else if let Some(c) = a.free(h) {
                asked = Some(c);
            }
        }
        let Some(c) = asked else {
            panic!("no drain asked for")
        };
        let pages_before = a.class(c).map_or(0, |cl| cl.pages.len());
        let Some(cut) = a.begin_drain(c) else {
            panic!("nothing to drain")
        };
        for (h, _) in kept.iter_mut() {
            if Arena::in_drain(*h, c, cut) {
                *h = a.relocate(*h);
                assert!(!Arena::in_drain(*h, c, cut));
            }
        }
        a.end_drain(c, cut);
        let pages_after = a.class(c).map_or(0, |cl| cl.pages.len());
        assert!(pages_after < pages_before, "{pages_after} < {pages_before}");
        for (h, fill) in &kept {
            assert_eq!(a.get(*h).len(), 100);
            assert_eq!(a.get(*h)[50], *fill);
        }
    }
}
