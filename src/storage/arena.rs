//! A shard's memory for item buffers: size classes 4 bytes apart, carved out of pages of
//! about 4 KiB, so an item costs its length rounded up to 4 bytes. malloc would add an
//! 8-byte header and round to 16 (a 148-byte item takes 160 there). An item too large for
//! a class is a page of its own (an allocation in the large-item heap, `heap.rs`).
//! Everything here runs under the shard's lock.

use super::heap::{self, heap_cost, Buf};
use super::item::{self, NewItem};

/// Class sizes step by this many bytes.
const GRAIN: usize = 4;
/// Largest item kept in a class.
const MAX_CLASSED: usize = 254 * GRAIN;
/// A handle is a page number and a chunk number in the page.
const CHUNK_BITS: u32 = 8;
const CHUNK_MASK: u32 = (1 << CHUNK_BITS) - 1;
/// Page numbers: one fewer than 24 bits allow, so no handle is `NO_HANDLE`. As many as a
/// shard has slots, so even a shard of nothing but big items (one page each) runs out of
/// slots first, give or take the few pages of free chunks its classes may hold.
const MAX_PAGES: usize = (1 << (32 - CHUNK_BITS)) - 1;
/// The handle of no buffer (a free slot).
pub(crate) const NO_HANDLE: u32 = u32::MAX;
/// A page holds at least this many bytes of chunks (a power-of-two count of them, at most
/// 256: an item is never under 16 bytes, its header).
const PAGE_TARGET: usize = 4096;
/// Page-table bytes that a big item needs besides its allocation.
const PAGE_ENTRY: usize = std::mem::size_of::<Page>();
/// The class of a page holding one big item.
const BIG: u8 = 0;

/// Where an item's buffer lives: page number in the top 22 bits, chunk number below.
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

fn class_of(len: usize) -> Option<u8> {
    if len > 0 && len <= MAX_CLASSED {
        u8::try_from(len.div_ceil(GRAIN)).ok()
    } else {
        None
    }
}

/// Bytes an item buffer of `len` bytes takes: its chunk, or its allocation plus its page
/// table entry.
pub(crate) fn buffer_cost(len: usize) -> usize {
    match class_of(len) {
        Some(c) => usize::from(c) * GRAIN,
        None if heap::available() => heap_cost(len) + PAGE_ENTRY,
        None => malloc_cost(len) + PAGE_ENTRY,
    }
}

fn handle(page: usize, chunk: usize) -> Handle {
    ((page as u32) << CHUNK_BITS) | (chunk as u32 & CHUNK_MASK)
}

fn split(h: Handle) -> (usize, usize) {
    ((h >> CHUNK_BITS) as usize, (h & CHUNK_MASK) as usize)
}

/// A page: chunks of one class, or one big item. Finding an item's bytes takes this one
/// lookup, which matters: every key comparison of a hash lookup starts with it.
#[derive(Default)]
struct Page {
    buf: Buf,
    class: u8,
    /// Being emptied by a drain (see [`Arena::begin_drain`]).
    draining: bool,
}

impl Page {
    fn chunk_range(&self, chunk: usize) -> (usize, usize) {
        let size = usize::from(self.class) * GRAIN;
        (chunk * size, chunk * size + size)
    }
}

struct Class {
    class: u8,
    /// log2 of the chunks per page.
    shift: u32,
    /// This class's pages, in the order they were added.
    pages: Vec<u32>,
    /// Free chunks; a new page pushes all of its own.
    free: Vec<Handle>,
    live: u32,
}

impl Class {
    fn new(class: u8) -> Class {
        let size = usize::from(class) * GRAIN;
        let per_page = PAGE_TARGET
            .div_ceil(size)
            .next_power_of_two()
            .min(1 << CHUNK_BITS);
        Class {
            class,
            shift: per_page.trailing_zeros(),
            pages: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
    fn per_page(&self) -> usize {
        1 << self.shift
    }
    fn size(&self) -> usize {
        usize::from(self.class) * GRAIN
    }
}

/// A shard's item buffers.
pub(crate) struct Arena {
    pages: Vec<Page>,
    /// Page numbers not in use.
    free_pages: Vec<u32>,
    /// Class number to its position in `classes` plus one (0: not in use yet). Classes are
    /// made on first use: most shards see only a few sizes.
    pos: [u8; 256],
    classes: Vec<Class>,
}

impl Default for Arena {
    fn default() -> Self {
        Arena {
            pages: Vec::new(),
            free_pages: Vec::new(),
            pos: [0; 256],
            classes: Vec::new(),
        }
    }
}

impl Arena {
    fn class_mut(&mut self, c: u8) -> Option<&mut Class> {
        let p = usize::from(*self.pos.get(usize::from(c))?);
        self.classes.get_mut(p.checked_sub(1)?)
    }

    /// A page number for a new page. None when the shard's page numbers are all in use.
    fn new_page(&mut self, page: Page) -> Option<usize> {
        if let Some(n) = self.free_pages.pop() {
            *self.pages.get_mut(n as usize)? = page;
            return Some(n as usize);
        }
        if self.pages.len() >= MAX_PAGES {
            return None;
        }
        self.pages.push(page);
        Some(self.pages.len() - 1)
    }

    /// A free chunk of class `c`, adding a page when the class has none.
    fn take(&mut self, c: u8) -> Option<Handle> {
        if self.pos.get(usize::from(c)).copied() == Some(0) {
            self.classes.push(Class::new(c));
            // At most 254 classes, so the position fits a byte.
            let p = u8::try_from(self.classes.len()).ok()?;
            *self.pos.get_mut(usize::from(c))? = p;
        }
        let (per, size, empty) = {
            let cl = self.class_mut(c)?;
            (cl.per_page(), cl.size(), cl.free.is_empty())
        };
        if empty {
            let page = Page {
                buf: Buf::system_zeroed(per * size),
                class: c,
                draining: false,
            };
            let n = self.new_page(page)?;
            let cl = self.class_mut(c)?;
            cl.pages.push(n as u32);
            // Lowest chunk on top, so a page fills front to back.
            cl.free.extend((0..per).rev().map(|j| handle(n, j)));
        }
        let cl = self.class_mut(c)?;
        let h = cl.free.pop()?;
        cl.live += 1;
        Some(h)
    }

    /// Stores an item. None when the shard has no page number left for it.
    pub(crate) fn put<'a>(&mut self, item: impl Into<NewItem<'a>>) -> Option<Handle> {
        let item = item.into();
        let len = item.len();
        if let Some(c) = class_of(len) {
            if let Some(h) = self.take(c) {
                item.write(self.chunk_mut(h)?.get_mut(..len)?);
                return Some(h);
            }
        }
        let n = self.new_page(Page {
            buf: item.into_buf(),
            class: BIG,
            draining: false,
        })?;
        Some(handle(n, 0))
    }

    fn chunk_mut(&mut self, h: Handle) -> Option<&mut [u8]> {
        let (n, j) = split(h);
        let page = self.pages.get_mut(n)?;
        if page.class == BIG {
            return Some(&mut page.buf);
        }
        let (a, b) = page.chunk_range(j);
        page.buf.get_mut(a..b)
    }

    /// Puts `item` where `h`'s buffer is when it belongs there (the same class, or both
    /// big), which saves a free and an allocation on the common overwrite of a key with a
    /// value of similar size; a big item of the same length is written over the old one.
    /// Gives `item` back otherwise. A draft's parts must not lie in `h`'s buffer.
    pub(crate) fn overwrite<'a>(
        &mut self,
        h: Handle,
        item: impl Into<NewItem<'a>>,
    ) -> Result<(), NewItem<'a>> {
        let item = item.into();
        let (n, j) = split(h);
        let Some(page) = self.pages.get_mut(n) else {
            return Err(item);
        };
        let len = item.len();
        match class_of(len) {
            None if page.class == BIG && page.buf.len() == len => {
                item.write(&mut page.buf);
                Ok(())
            }
            None if page.class == BIG => {
                page.buf = item.into_buf();
                Ok(())
            }
            Some(c) if c == page.class => {
                let (a, _) = page.chunk_range(j);
                match page.buf.get_mut(a..a + len) {
                    Some(dst) => {
                        item.write(dst);
                        Ok(())
                    }
                    None => Err(item),
                }
            }
            _ => Err(item),
        }
    }

    /// The buffer of `h`, exactly as long as the item.
    pub(crate) fn get(&self, h: Handle) -> &[u8] {
        match self.locate(h) {
            Some((buf, true)) => buf,
            Some((chunk, false)) => chunk.get(..item::stored_len(chunk)).unwrap_or(chunk),
            None => &[],
        }
    }

    /// The chunk (or big buffer) that `h` names, without reading the item in it: for a
    /// prefetch, which must not wait for the very line it is about to ask for.
    pub(crate) fn chunk(&self, h: Handle) -> &[u8] {
        self.locate(h).map_or(&[], |(c, _)| c)
    }

    /// `h`'s chunk, or its big buffer (then true).
    fn locate(&self, h: Handle) -> Option<(&[u8], bool)> {
        let (n, j) = split(h);
        let page = self.pages.get(n)?;
        if page.class == BIG {
            return Some((&page.buf, true));
        }
        let (a, b) = page.chunk_range(j);
        Some((page.buf.get(a..b)?, false))
    }

    pub(crate) fn get_mut(&mut self, h: Handle) -> &mut [u8] {
        match self.chunk_mut(h) {
            Some(chunk) => {
                let n = item::stored_len(chunk).min(chunk.len());
                &mut chunk[..n]
            }
            None => &mut [],
        }
    }

    /// Releases a buffer. Returns its class when the class now holds enough free chunks
    /// that it should be compacted (see [`Arena::begin_drain`]); a compaction visits every
    /// one of the shard's `slots`.
    pub(crate) fn free(&mut self, h: Handle, slots: usize) -> Option<u8> {
        let (n, _) = split(h);
        let page = self.pages.get_mut(n)?;
        if page.class == BIG {
            *page = Page::default();
            self.free_pages.push(n as u32);
            return None;
        }
        let c = page.class;
        let cl = self.class_mut(c)?;
        cl.free.push(h);
        cl.live = cl.live.saturating_sub(1);
        // Two pages' worth of free chunks, an eighth of the live ones, and a byte for each
        // slot the compaction will visit: then a drain gives back at least a page, a class
        // that merely churns is left alone, and a small class in a large shard does not
        // pay a pass over the shard for every few items it frees.
        let f = cl.free.len();
        let due = f >= 2 * cl.per_page() && f * 8 >= cl.live as usize && f * cl.size() >= slots;
        due.then_some(c)
    }

    /// Starts handing back a class's newest pages: all but about one page's worth of its
    /// free chunks. Every live handle for which [`Arena::in_drain`] is true must then be
    /// moved with [`Arena::relocate`] before [`Arena::end_drain`]; there are always enough
    /// free chunks outside the drained pages for them. False when there is nothing to do.
    pub(crate) fn begin_drain(&mut self, c: u8) -> bool {
        let Some(cl) = self.class_mut(c) else {
            return false;
        };
        let per = cl.per_page();
        let Some(k) = (cl.free.len() / per).checked_sub(1).filter(|&k| k > 0) else {
            return false;
        };
        let Some(keep) = cl.pages.len().checked_sub(k) else {
            return false;
        };
        let drained: Vec<u32> = cl
            .pages
            .get(keep..)
            .map(<[u32]>::to_vec)
            .unwrap_or_default();
        for &n in &drained {
            if let Some(p) = self.pages.get_mut(n as usize) {
                p.draining = true;
            }
        }
        let pages = &self.pages;
        let Some(cl) = self
            .pos
            .get(usize::from(c))
            .and_then(|&p| usize::from(p).checked_sub(1))
            .and_then(|p| self.classes.get_mut(p))
        else {
            return false;
        };
        cl.free
            .retain(|&h| pages.get(split(h).0).is_some_and(|p| !p.draining));
        true
    }

    /// Whether `h` lies in a page a drain is emptying.
    pub(crate) fn in_drain(&self, h: Handle) -> bool {
        h != NO_HANDLE && self.pages.get(split(h).0).is_some_and(|p| p.draining)
    }

    /// Moves a chunk out of a page a drain is emptying. Returns its new handle.
    pub(crate) fn relocate(&mut self, h: Handle) -> Handle {
        let Some(c) = self.pages.get(split(h).0).map(|p| p.class) else {
            return h;
        };
        let Some(to) = self.class_mut(c).and_then(|cl| cl.free.pop()) else {
            return h;
        };
        let mut tmp = [0u8; MAX_CLASSED];
        let copied = match (self.chunk_mut(h), tmp.get_mut(..usize::from(c) * GRAIN)) {
            (Some(src), Some(buf)) if src.len() == buf.len() => {
                buf.copy_from_slice(src);
                Some(buf.len())
            }
            _ => None,
        };
        match (copied, self.chunk_mut(to)) {
            (Some(len), Some(dst)) if dst.len() == len => {
                dst.copy_from_slice(&tmp[..len]);
                to
            }
            _ => {
                if let Some(cl) = self.class_mut(c) {
                    cl.free.push(to);
                }
                h
            }
        }
    }

    /// Frees the pages a drain emptied.
    pub(crate) fn end_drain(&mut self, c: u8) {
        let Some(cl) = self.class_mut(c) else {
            return;
        };
        let pages = std::mem::take(&mut cl.pages);
        let mut kept = Vec::with_capacity(pages.len());
        for n in pages {
            match self.pages.get_mut(n as usize) {
                Some(p) if p.draining => {
                    *p = Page::default();
                    self.free_pages.push(n);
                }
                _ => kept.push(n),
            }
        }
        if let Some(cl) = self.class_mut(c) {
            cl.pages = kept;
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
            .map(|c| c.free.len() * c.size() + c.free.capacity() * 4 + c.pages.capacity() * 4)
            .sum();
        classes + self.pages.capacity() * PAGE_ENTRY + self.free_pages.capacity() * 4
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
        // A big item costs what its allocator takes (8-byte tag, 32-byte units in the item
        // heap) plus its page entry.
        let big = MAX_CLASSED + 1;
        let taken = if heap::available() {
            1056
        } else {
            malloc_cost(big)
        };
        assert_eq!(buffer_cost(big), taken + PAGE_ENTRY);
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
        assert!(a.overwrite(h2, buf(151, 6)).is_ok(), "same class: in place");
        assert_eq!((a.get(h2).len(), a.get(h2)[20]), (151, 6));
        assert!(a.overwrite(h2, buf(100, 6)).is_err(), "another class");
        assert!(
            a.overwrite(h3, buf(5001, 3)).is_ok(),
            "big to big: in place"
        );
        assert_eq!(a.get(h3).len(), 5001);
        let at = a.get(h3).as_ptr();
        assert!(a.overwrite(h3, buf(5001, 8)).is_ok());
        assert_eq!(
            (a.get(h3).as_ptr(), a.get(h3)[4000]),
            (at, 8),
            "big of the same length: written over, no new allocation"
        );
        assert_eq!(a.free(h1, 0), None);
        assert_eq!(a.put(buf(149, 4)), Some(h1), "a freed chunk is reused");
        assert_eq!(a.free(h3, 0), None);
        assert_eq!(a.put(buf(6000, 5)), Some(h3), "a freed big entry is reused");
    }

    #[test]
    fn a_drain_moves_live_chunks_out_and_frees_pages() {
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
            } else if let Some(c) = a.free(h, 0) {
                asked = Some(c);
            }
        }
        let Some(c) = asked else {
            panic!("no drain asked for")
        };
        let live_pages = |a: &Arena| a.pages.iter().filter(|p| !p.buf.is_empty()).count();
        let pages_before = live_pages(&a);
        assert!(a.begin_drain(c), "nothing to drain");
        for (h, _) in kept.iter_mut() {
            if a.in_drain(*h) {
                *h = a.relocate(*h);
                assert!(!a.in_drain(*h));
            }
        }
        a.end_drain(c);
        let pages_after = live_pages(&a);
        assert!(pages_after < pages_before, "{pages_after} < {pages_before}");
        for (h, fill) in &kept {
            assert_eq!(a.get(*h).len(), 100);
            assert_eq!(a.get(*h)[50], *fill);
        }
    }

    #[test]
    fn a_small_class_in_a_large_shard_does_not_ask_for_a_pass_every_few_frees() {
        // 16 items of about 1 KB set and deleted over and over: the class frees two pages'
        // worth at a time. In a shard of a million slots, a pass per cycle would cost about
        // a millisecond per 16 deletes; it is not asked for until the free chunks outweigh
        // a byte per slot. In a small shard the same churn is compacted.
        for (slots, want_drain) in [(1_000_000usize, false), (100, true)] {
            let mut a = Arena::default();
            let mut asked = false;
            for _ in 0..50 {
                let hs: Vec<Handle> = (0..16).filter_map(|_| a.put(buf(950, 1))).collect();
                for h in hs {
                    asked |= a.free(h, slots).is_some();
                }
            }
            assert_eq!(asked, want_drain, "shard of {slots} slots");
        }
    }
}
