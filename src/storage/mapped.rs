//! An allocator for the arrays that grow with a shard (its slot array and hash index):
//! large ones are memory mappings of their own, grown with `mremap`.
//!
//! A mapping occupies memory only in the pages its contents have touched, growing it moves
//! page tables instead of copying, and the old array leaves no hole behind. Grown by copying
//! in a heap, a million items' worth of arrays left megabytes of freed space that only later
//! items could take.

use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};

/// Arrays from this size on are mappings; smaller ones come from the system allocator.
const MAP_MIN: usize = 64 * 1024;
const PAGE: usize = 4096;

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MapAlloc;

/// A vector whose large buffers are mappings of their own.
pub(crate) type MapVec<T> = allocator_api2::vec::Vec<T, MapAlloc>;

/// An empty [`MapVec`].
pub(crate) fn map_vec<T>() -> MapVec<T> {
    MapVec::new_in(MapAlloc)
}

/// Memory that a buffer of `capacity` bytes, `used` of them written, occupies: a mapping
/// only its touched pages.
pub(crate) fn resident(used: usize, capacity: usize) -> usize {
    if capacity >= MAP_MIN {
        used.next_multiple_of(PAGE)
    } else {
        capacity
    }
}

fn mapped(layout: Layout) -> bool {
    // Page alignment is all a mapping gives.
    layout.size() >= MAP_MIN && layout.align() <= PAGE
}

fn map_len(size: usize) -> usize {
    size.next_multiple_of(PAGE)
}

// SAFETY: a block is a mapping exactly when its layout says so (`mapped`), which callers
// pass back unchanged; mappings are private, readable and writable, and stay valid until
// unmapped.
unsafe impl Allocator for MapAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !mapped(layout) {
            return Global.allocate(layout);
        }
        // SAFETY: a fresh anonymous mapping touches nothing of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len(layout.size()),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(AllocError);
        }
        let p = NonNull::new(p.cast::<u8>()).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if mapped(layout) {
            // A fresh mapping reads as zeros already.
            return self.allocate(layout);
        }
        Global.allocate_zeroed(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if mapped(layout) {
            // SAFETY: the block is a mapping of this length made by `allocate` or `grow`.
            unsafe { libc::munmap(ptr.as_ptr().cast(), map_len(layout.size())) };
        } else {
            // SAFETY: otherwise it came from `Global` with this layout.
            unsafe { Global.deallocate(ptr, layout) }
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if mapped(old) && mapped(new) {
            // SAFETY: `ptr` is a mapping of the old length; the kernel moves it if it must.
            let p = unsafe {
                libc::mremap(
                    ptr.as_ptr().cast(),
                    map_len(old.size()),
                    map_len(new.size()),
                    libc::MREMAP_MAYMOVE,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(AllocError);
            }
            let p = NonNull::new(p.cast::<u8>()).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(p, new.size()));
        }
        if !mapped(old) && !mapped(new) {
            // SAFETY: the block came from `Global` with `old`, as `new` will.
            return unsafe { Global.grow(ptr, old, new) };
        }
        let fresh = self.allocate(new)?;
        // SAFETY: both blocks are valid for the old size and distinct; the old one is
        // given back once its bytes are copied.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.as_ptr(), fresh.cast::<u8>().as_ptr(), old.size());
            self.deallocate(ptr, old);
        }
        Ok(fresh)
    }

    // `shrink` is the trait's own: a new block and a copy (shrinking is rare here).
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_keeps_its_contents_across_the_mapping_threshold() {
        let mut v: MapVec<u32> = map_vec();
        for i in 0..100_000u32 {
            v.push(i);
        }
        assert!(v.capacity() * 4 >= MAP_MIN, "the last buffer is a mapping");
        assert!(v.iter().enumerate().all(|(i, &x)| x as usize == i));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(&v[..], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        for i in 10..50_000u32 {
            v.push(i);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x as usize == i));
    }

    #[test]
    fn zeroed_arrays_read_as_zeros_on_both_sides_of_the_threshold() {
        for n in [16usize, MAP_MIN / 8, MAP_MIN, 3 * MAP_MIN] {
            let v = allocator_api2::vec::from_elem_in(0u64, n, MapAlloc);
            assert!(v.iter().all(|&x| x == 0), "{n} elements");
            let w = allocator_api2::vec::from_elem_in(7u64, n, MapAlloc);
            assert!(w.iter().all(|&x| x == 7), "{n} elements");
        }
    }
}
