//! Memory for items too large for a size class (over 1 KiB): one process-wide heap in an
//! address range of its own, on transparent huge pages, with the system allocator behind it
//! when the range cannot be had.
//!
//! Such an item is an allocation of its own, so tens of megabytes of them span thousands of
//! 4 KiB pages, and a lookup that reads one's key misses the TLB as well as the cache: a
//! page walk, which under virtualisation is itself several misses. The system heap cannot
//! be given huge pages for these alone (it also holds connection buffers and logs, and on
//! huge pages its sparse parts cost whole 2 MiB pages each). Here the large items are packed
//! by an allocator of their own (talc: boundary tags and size bins, coalescing free
//! neighbours like malloc) on memory this module reserves, makes usable a step at a time,
//! and gives back when the top of the heap empties. Small items stay in the system heap:
//! the arena packs dozens to a page already, and huge pages would round their memory up.

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, OnceLock};

use talc::base::Talc;
use talc::source::Manual;
use talc::DefaultBinning;

/// Alignment of every buffer: what malloc gives, and enough for the 16-byte loads of
/// `item::copy_value`.
const ALIGN: usize = 16;
/// Huge page size on x86-64 and arm64 (with 4 KiB base pages).
const HUGE: usize = 2 << 20;
/// Address space is made usable this much at a time: a few system calls to fill a large
/// cache, and untouched memory costs nothing but address space.
const STEP: usize = 32 << 20;
/// Address space to reserve, tried in order: it costs no memory, but a limit on it
/// (`ulimit -v`) rules out the larger ones (see [`reservable`]).
const RESERVE: [usize; 4] = [1 << 40, 1 << 36, 1 << 32, 1 << 28];

/// Bytes the heap takes for a buffer of `n` bytes: talc's 8-byte tag, 32-byte units.
pub(crate) fn heap_cost(n: usize) -> usize {
    (n + 8 + 31) & !31
}

struct Inner {
    talc: Talc<Manual, DefaultBinning>,
    /// The heap's end as talc knows it; None until the first step is claimed.
    end: Option<NonNull<u8>>,
    /// Bytes from the start of the range that are readable and writable.
    usable: usize,
    /// Bytes freed since the last look at whether to trim.
    freed: usize,
}

/// A reserved address range and the allocator working in its usable front part.
struct Heap {
    base: usize,
    size: usize,
    inner: Mutex<Inner>,
    /// The whole mapping, alignment slack included.
    map: (usize, usize),
}

// SAFETY: `end` points into the range this heap owns; it is only used under the mutex.
unsafe impl Send for Inner {}

impl Heap {
    /// Reserves `size` bytes (plus alignment slack) of address space, none of it usable yet.
    fn reserve(size: usize) -> Option<Heap> {
        let len = size.checked_add(HUGE)?;
        // SAFETY: a fresh anonymous mapping with no access touches nothing of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // Huge pages start on 2 MiB boundaries; the slack before the first one stays unused.
        let base = (p as usize).checked_add(HUGE - 1)? & !(HUGE - 1);
        Some(Heap {
            base,
            size,
            inner: Mutex::new(Inner {
                talc: Talc::new(Manual),
                end: None,
                usable: 0,
                freed: 0,
            }),
            map: (p as usize, len),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The allocator's state is consistent between calls; a panic elsewhere while the
        // lock was held cannot have left it half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contains(&self, p: *const u8) -> bool {
        (p as usize).wrapping_sub(self.base) < self.size
    }

    /// Makes the next step of the range usable and gives it to the allocator. False when
    /// the range is used up or the system refuses the memory.
    fn grow(&self, inner: &mut Inner) -> bool {
        let step = STEP.min(self.size - inner.usable);
        if step == 0 {
            return false;
        }
        let start = (self.base + inner.usable) as *mut libc::c_void;
        // SAFETY: `start..start + step` lies inside the reservation and holds nothing yet.
        if unsafe { libc::mprotect(start, step, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
            return false;
        }
        // Without transparent huge pages this fails and the heap works on small pages.
        // SAFETY: advice about memory this heap owns.
        unsafe { libc::madvise(start, step, libc::MADV_HUGEPAGE) };
        inner.usable += step;
        let new_end = (self.base + inner.usable) as *mut u8;
        // SAFETY: the memory handed over is usable and nothing else touches it; `end` is
        // the heap end talc last returned.
        inner.end = unsafe {
            match inner.end {
                None => inner.talc.claim(self.base as *mut u8, inner.usable),
                Some(end) => Some(inner.talc.extend(end, new_end)),
            }
        };
        inner.end.is_some()
    }

    fn allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        let mut inner = self.lock();
        loop {
            // SAFETY: callers never ask for zero bytes.
            if let Some(p) = unsafe { inner.talc.allocate(layout) } {
                return Some(p);
            }
            if !self.grow(&mut inner) {
                return None;
            }
        }
    }

    /// # Safety
    /// `p` came from [`Heap::allocate`] with `layout` and is not used afterwards.
    unsafe fn deallocate(&self, p: NonNull<u8>, layout: Layout) {
        let mut inner = self.lock();
        // SAFETY: as the caller promises.
        unsafe { inner.talc.deallocate(p.as_ptr(), layout) };
        // Looking at the top costs a cache miss: once per step's worth of frees is enough.
        inner.freed += layout.size();
        if inner.freed >= STEP {
            inner.freed = 0;
            self.trim(&mut inner);
        }
    }

    /// Gives memory back to the system when two steps or more above the highest buffer are
    /// free (a flush, a cache that shrank), keeping one step for what comes next, as malloc
    /// trims the top of its heap.
    fn trim(&self, inner: &mut Inner) {
        let Some(end) = inner.end else {
            return;
        };
        // SAFETY: `end` is the heap end talc last returned.
        let top = unsafe { inner.talc.reserved(end) }.up_to.as_ptr() as usize;
        // Never below the first step: talc's own bookkeeping sits at the base.
        let keep = (top - self.base).next_multiple_of(STEP).max(STEP) + STEP;
        if keep + STEP > inner.usable {
            return;
        }
        // SAFETY: `end` is current and everything above `keep` is free.
        match unsafe { inner.talc.truncate(end, (self.base + keep) as *mut u8) } {
            Some(e) if e.as_ptr() as usize == self.base + keep => inner.end = Some(e),
            // Not what was asked (cannot happen with free memory above `keep`): keep it all.
            Some(e) => {
                inner.end = Some(e);
                return;
            }
            None => return,
        }
        let start = (self.base + keep) as *mut libc::c_void;
        let len = inner.usable - keep;
        // SAFETY: talc no longer owns `start..start + len`, and nothing else uses it.
        unsafe {
            libc::madvise(start, len, libc::MADV_DONTNEED);
            libc::mprotect(start, len, libc::PROT_NONE);
        }
        inner.usable = keep;
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        // Only a test's own heap is ever dropped, after its buffers.
        // SAFETY: the mapping is this heap's and nothing in it is used any more.
        unsafe { libc::munmap(self.map.0 as *mut libc::c_void, self.map.1) };
    }
}

/// Address space the heap may take: all it asks for, unless the process has a limit on its
/// address space (`ulimit -v`), of which it takes at most a quarter.
fn reservable() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return usize::MAX;
    }
    usize::try_from(lim.rlim_cur / 4).unwrap_or(usize::MAX)
}

/// The process's item heap; None when no address range could be reserved.
fn heap() -> Option<&'static Heap> {
    static HEAP: OnceLock<Option<Heap>> = OnceLock::new();
    HEAP.get_or_init(|| {
        let most = reservable();
        RESERVE
            .iter()
            .filter(|&&s| s <= most)
            .find_map(|&s| Heap::reserve(s))
    })
    .as_ref()
}

/// Whether item buffers come from the item heap (else from the system allocator).
pub(crate) fn available() -> bool {
    heap().is_some()
}

/// The item heap as an allocator, falling back to the system allocator.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ItemAlloc;

// SAFETY: memory comes from the item heap or from `Global`, and each block goes back to the
// one it came from (decided by address); blocks stay valid until deallocated.
unsafe impl Allocator for ItemAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() > 0 {
            if let Some(p) = heap().and_then(|h| h.allocate(layout)) {
                return Ok(NonNull::slice_from_raw_parts(p, layout.size()));
            }
        }
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        match heap() {
            // SAFETY: the block came from this heap (by address) with this layout.
            Some(h) if layout.size() > 0 && h.contains(ptr.as_ptr()) => unsafe {
                h.deallocate(ptr, layout)
            },
            // SAFETY: otherwise it came from `Global` with this layout.
            _ => unsafe { Global.deallocate(ptr, layout) },
        }
    }
}

/// An owned, zero-initialised byte buffer from [`ItemAlloc`] (or from the system allocator,
/// which `ItemAlloc` gives back to by address): what `Box<[u8]>` is, for item memory.
pub(crate) struct Buf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Buf owns its bytes exclusively, like Box<[u8]>; the heap it returns them to is
// behind a mutex.
unsafe impl Send for Buf {}
// SAFETY: shared access only reads the bytes.
unsafe impl Sync for Buf {}

impl Default for Buf {
    fn default() -> Self {
        Buf {
            ptr: NonNull::dangling(),
            len: 0,
        }
    }
}

impl Buf {
    /// `len` zero bytes in the item heap.
    pub(crate) fn zeroed(len: usize) -> Buf {
        Self::fill(&ItemAlloc, len, None)
    }

    /// `len` zero bytes from the system allocator: for a page of small items, dozens of them
    /// a page already, where the heap's huge pages would not save a TLB miss per item but
    /// would round the memory up coarsely.
    pub(crate) fn system_zeroed(len: usize) -> Buf {
        Self::fill(&Global, len, None)
    }

    /// A copy of `src`, in the item heap (written once, not zeroed first).
    pub(crate) fn copy_of(src: &[u8]) -> Buf {
        Self::fill(&ItemAlloc, src.len(), Some(src))
    }

    /// `len` bytes from `a`: a copy of `src` when given (then exactly `len` long), else zeros.
    fn fill(a: &impl Allocator, len: usize, src: Option<&[u8]>) -> Buf {
        let Ok(layout) = Layout::from_size_align(len, ALIGN) else {
            return Buf::default();
        };
        if len == 0 {
            return Buf::default();
        }
        let got = match src {
            Some(src) => a.allocate(layout).inspect(|p| {
                // SAFETY: `p` is `len` fresh writable bytes, distinct from `src` (also `len`
                // long); every byte is written before the Buf exists.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p.cast().as_ptr(), len) };
            }),
            None => a.allocate_zeroed(layout),
        };
        match got {
            Ok(p) => Buf { ptr: p.cast(), len },
            Err(_) => std::alloc::handle_alloc_error(layout),
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        if let Ok(layout) = Layout::from_size_align(self.len, ALIGN) {
            // SAFETY: the buffer came from `ItemAlloc` with this layout and is going away.
            unsafe { ItemAlloc.deallocate(self.ptr, layout) };
        }
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised bytes (dangling and 0 when empty).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and the buffer is owned exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(n: usize) -> Layout {
        Layout::from_size_align(n, ALIGN).unwrap_or(Layout::new::<u8>())
    }

    #[test]
    fn a_heap_grows_step_by_step_to_its_reservation_and_reuses_what_is_freed() {
        let Some(h) = Heap::reserve(3 * STEP) else {
            return; // no address space to reserve here: nothing to test
        };
        let mut got = Vec::new();
        while let Some(p) = h.allocate(layout(100_000)) {
            assert!(h.contains(p.as_ptr()));
            // SAFETY: 100,000 bytes just allocated.
            unsafe { p.as_ptr().write_bytes(got.len() as u8, 100_000) };
            got.push(p);
            assert!(
                got.len() <= 3 * STEP / 100_000,
                "more than the reservation holds"
            );
        }
        assert!(
            got.len() >= 3 * STEP / 100_000 - 2,
            "stopped early at {}",
            got.len()
        );
        assert_eq!(h.lock().usable, 3 * STEP);
        for (i, p) in got.iter().enumerate() {
            // SAFETY: each block is 100,000 bytes, still allocated.
            let b = unsafe { std::slice::from_raw_parts(p.as_ptr(), 100_000) };
            assert!(b.iter().all(|&x| x == i as u8), "block {i} was overwritten");
        }
        for p in got.drain(..) {
            // SAFETY: allocated above with this layout, not used again.
            unsafe { h.deallocate(p, layout(100_000)) };
        }
        let mut inner = h.lock();
        h.trim(&mut inner);
        assert_eq!(
            inner.usable,
            2 * STEP,
            "an emptied heap keeps one step spare"
        );
        drop(inner);
        // Freed neighbours coalesce: one block of most of the reservation fits again.
        let big = layout(2 * STEP);
        let p = h.allocate(big).map(|p| p.as_ptr() as usize);
        assert!(p.is_some(), "freed memory did not coalesce");
        assert!(!h.contains((h.base + h.size) as *const u8));
    }

    #[test]
    fn buffers_come_zeroed_from_either_allocator_and_go_back_to_theirs() {
        for n in [1usize, 1017, 5000, 300_000] {
            let mut a = Buf::zeroed(n);
            let mut b = Buf::system_zeroed(n);
            assert_eq!((a.len(), b.len()), (n, n));
            assert!(a.iter().chain(b.iter()).all(|&x| x == 0));
            a.fill(1);
            b.fill(2);
            if let Some(h) = heap() {
                assert!(h.contains(a.as_ptr()), "{n}: not in the item heap");
                assert!(!h.contains(b.as_ptr()));
            }
            assert_eq!(&*Buf::copy_of(&a), &*a);
        }
        assert!(Buf::zeroed(0).is_empty());
    }

    #[test]
    fn costs_are_what_the_allocator_takes() {
        let Some(h) = Heap::reserve(STEP) else {
            return;
        };
        for n in [1usize, 24, 25, 1017, 4150] {
            let a = h.allocate(layout(n)).map(|p| p.as_ptr() as usize);
            let b = h.allocate(layout(n)).map(|p| p.as_ptr() as usize);
            let (Some(a), Some(b)) = (a, b) else {
                panic!("{n}: no memory");
            };
            assert_eq!(b - a, heap_cost(n), "{n} bytes");
        }
        assert_eq!(heap_cost(1), 32);
        assert_eq!(heap_cost(24), 32);
        assert_eq!(heap_cost(25), 64);
        assert_eq!(heap_cost(4150), 4160);
    }
}
