//! Shared buffers that spare the caller's thread from copying items: the input of a map is
//! split into chunks without copying ([`Slice`]), and results are written by the workers (or by
//! the decoder) straight into the final vector ([`OutBuf`]). Where a result fits exactly where
//! its item was, that vector is the input's own allocation (`split_for_map`).

use std::mem::ManuallyDrop;
use std::sync::Arc;

/// The allocation of a `Vec<T>` whose items are owned by the [`Slice`]s cut from it.
pub struct SharedIn<T> {
    ptr: *mut T,
    cap: usize,
    /// Whether dropping this frees the allocation: not when a map's [`OutBuf`] took it over.
    frees: bool,
}

// SAFETY: the buffer only hands out disjoint slices, each moved to one thread; items are Send.
unsafe impl<T: Send> Send for SharedIn<T> {}
// SAFETY: through `&SharedIn` no item is reachable; only `Slice` (one per range) touches them.
unsafe impl<T: Send> Sync for SharedIn<T> {}

impl<T> Drop for SharedIn<T> {
    fn drop(&mut self) {
        if self.frees {
            // SAFETY: ptr and cap come from a Vec<T>; length 0 frees the memory only: every
            // item was moved out or dropped by the slice that owned it.
            unsafe { drop(Vec::from_raw_parts(self.ptr, 0, self.cap)) };
        }
    }
}

/// Splits `items` into consecutive slices of at most `size` items (size ≥ 1).
pub(crate) fn split<T>(items: Vec<T>, size: usize) -> Vec<Slice<T>> {
    let mut items = ManuallyDrop::new(items);
    let (ptr, len, cap) = (items.as_mut_ptr(), items.len(), items.capacity());
    slices(
        SharedIn {
            ptr,
            cap,
            frees: true,
        },
        len,
        size,
    )
}

/// Whether a map from `T` to `R` may write its results over its items: same size and
/// alignment, not zero-sized, and nothing to drop (so an item left unread, or a result written
/// over an item, needs no care).
fn results_fit_over_items<T, R>() -> bool {
    use std::mem::{align_of, needs_drop, size_of};
    size_of::<T>() == size_of::<R>()
        && align_of::<T>() == align_of::<R>()
        && size_of::<T>() > 0
        && !needs_drop::<T>()
        && !needs_drop::<R>()
}

/// Splits `items` as [`split`] does, with the vector a map over them fills: the items' own
/// allocation where [`results_fit_over_items`], as `vec.into_iter().map(f).collect()` reuses
/// it (no allocation, no fresh pages to fault in, nothing to free), else a new one.
///
/// Over its items is safe because each chunk's results go only over that chunk's own items,
/// and every way of running a chunk has read an item before its result is written: a thread
/// worker reads item `i` before it writes result `i`; a process worker's chunk is encoded, or
/// copied into a lane or out of this process, before it runs.
pub(crate) fn split_for_map<T, R>(items: Vec<T>, size: usize) -> (Vec<Slice<T>>, Arc<OutBuf<R>>) {
    if !results_fit_over_items::<T, R>() {
        let out = OutBuf::new(items.len());
        return (split(items, size), out);
    }
    let mut items = ManuallyDrop::new(items);
    let (ptr, len, cap) = (items.as_mut_ptr(), items.len(), items.capacity());
    let out = Arc::new(OutBuf {
        ptr: ptr.cast::<R>(),
        cap,
    });
    let shared = SharedIn {
        ptr,
        cap,
        frees: false,
    };
    (slices(shared, len, size), out)
}

/// Cuts the `len` items of `shared` into slices of at most `size` items (size ≥ 1).
fn slices<T>(shared: SharedIn<T>, len: usize, size: usize) -> Vec<Slice<T>> {
    let buf = Arc::new(shared);
    let size = size.max(1);
    (0..len)
        .step_by(size)
        .map(|start| Slice {
            buf: buf.clone(),
            next: start,
            end: (start + size).min(len),
        })
        .collect()
}

/// A run of items of a shared buffer, owned: iterating moves them out, dropping drops the rest.
pub struct Slice<T> {
    buf: Arc<SharedIn<T>>,
    next: usize,
    end: usize,
}

impl<T> Slice<T> {
    /// The items not yet moved out.
    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: [next, end) are initialized items owned by this slice alone.
        unsafe { std::slice::from_raw_parts(self.buf.ptr.add(self.next), self.end - self.next) }
    }

    /// The address of the first item not yet moved out.
    pub(crate) fn as_ptr(&self) -> *const T {
        // SAFETY: next ≤ end, within the allocation.
        unsafe { self.buf.ptr.add(self.next) }
    }

    /// Counts the first `n` items as moved out (the caller read them with `as_ptr`).
    ///
    /// # Safety
    /// `n` must not exceed the items left, and the caller must have taken ownership of them.
    pub(crate) unsafe fn forget_front(&mut self, n: usize) {
        self.next += n;
    }
}

impl<T> Iterator for Slice<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next == self.end {
            return None;
        }
        // SAFETY: the item at `next` is initialized and owned by this slice; advancing `next`
        // hands its ownership to the caller.
        let item = unsafe { self.buf.ptr.add(self.next).read() };
        self.next += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl<T> ExactSizeIterator for Slice<T> {}

impl<T> Drop for Slice<T> {
    fn drop(&mut self) {
        if !std::mem::needs_drop::<T>() {
            // Nothing to drop, and nothing to touch: a map's results may own this memory now.
            return;
        }
        let rest = std::ptr::slice_from_raw_parts_mut(
            // SAFETY: in bounds of the allocation (next ≤ end ≤ len).
            unsafe { self.buf.ptr.add(self.next) },
            self.end - self.next,
        );
        self.next = self.end;
        // SAFETY: the items not moved out are still owned here; they are dropped once.
        unsafe { std::ptr::drop_in_place(rest) };
    }
}

/// Asks for transparent huge pages under a large fresh buffer (Linux, where THP is in
/// `madvise` mode): the workers fill it a chunk at a time, and one fault per 2 MiB instead of
/// one per 4 KiB page is most of what filling a fresh result vector costs. Only advice: any
/// failure leaves ordinary pages.
fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    const HUGE: usize = 2 << 20;
    #[cfg(target_os = "linux")]
    if bytes >= 2 * HUGE {
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: advice on whole 2 MiB pages inside this process's own fresh allocation;
            // MADV_HUGEPAGE changes no contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// The uninitialized result vector of a map: each chunk's results are written at the chunk's
/// place, by whoever produces them, and the caller takes the whole vector at the end.
pub struct OutBuf<R> {
    ptr: *mut R,
    cap: usize,
}

// SAFETY: writers own disjoint ranges (one per chunk); values are Send.
unsafe impl<R: Send> Send for OutBuf<R> {}
// SAFETY: as above; no shared access to values happens through `&OutBuf`.
unsafe impl<R: Send> Sync for OutBuf<R> {}

impl<R> OutBuf<R> {
    pub(crate) fn new(n: usize) -> Arc<Self> {
        let mut v = ManuallyDrop::new(Vec::<R>::with_capacity(n));
        advise_huge_pages(
            v.as_mut_ptr().cast(),
            std::mem::size_of::<R>() * v.capacity(),
        );
        Arc::new(OutBuf {
            ptr: v.as_mut_ptr(),
            cap: v.capacity(),
        })
    }

    /// Moves `values` to positions `first..`.
    ///
    /// # Safety
    /// The range must be within the buffer, uninitialized, and written by no one else.
    pub(crate) unsafe fn write(&self, first: usize, mut values: Vec<R>) {
        // SAFETY: by the contract; the values are moved bitwise, then forgotten by `set_len`.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(first), values.len());
            values.set_len(0);
        }
    }

    /// Copies `bytes` (the raw bytes of `len` values) to positions `first..`.
    ///
    /// # Safety
    /// As [`OutBuf::write`], and `bytes` must hold valid values of `R` (plain numbers).
    pub(crate) unsafe fn write_bytes(&self, first: usize, bytes: &[u8]) {
        // SAFETY: by the contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.add(first).cast::<u8>(),
                bytes.len(),
            );
        }
    }

    /// The address of position `i`, to write a value there.
    ///
    /// # Safety
    /// `i` must be within the buffer, and the caller must own that position.
    pub(crate) unsafe fn slot(&self, i: usize) -> *mut R {
        // SAFETY: by the contract.
        unsafe { self.ptr.add(i) }
    }

    /// Moves the values written at `first..first + len` back out, into a vector.
    ///
    /// # Safety
    /// They must have been written by the caller, who owns the range.
    pub(crate) unsafe fn take_back(&self, first: usize, len: usize) -> Vec<R> {
        let mut v = Vec::with_capacity(len);
        // SAFETY: by the contract; the values are moved bitwise and the range is uninitialized
        // again afterwards.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(first), v.as_mut_ptr(), len);
            v.set_len(len);
        }
        v
    }

    /// Drops the values written at `first..first + len`.
    ///
    /// # Safety
    /// They must have been written, and not be dropped or taken again.
    pub(crate) unsafe fn drop_range(&self, first: usize, len: usize) {
        // SAFETY: by the contract.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.ptr.add(first), len));
        }
    }

    /// The vector of the first `len` values.
    ///
    /// # Safety
    /// All `len` values must have been written, and no one may write any more.
    pub(crate) unsafe fn into_vec(this: Arc<Self>, len: usize) -> Vec<R> {
        match Arc::try_unwrap(this) {
            Ok(buf) => {
                let buf = ManuallyDrop::new(buf);
                // SAFETY: ptr/cap come from a Vec<R>; the first len values are initialized.
                unsafe { Vec::from_raw_parts(buf.ptr, len, buf.cap) }
            }
            Err(shared) => {
                // Someone still holds the buffer (but writes no more): move the values out.
                let mut v = Vec::with_capacity(len);
                // SAFETY: the values are initialized; the buffer never drops its values.
                unsafe {
                    std::ptr::copy_nonoverlapping(shared.ptr, v.as_mut_ptr(), len);
                    v.set_len(len);
                }
                v
            }
        }
    }
}

impl<R> Drop for OutBuf<R> {
    fn drop(&mut self) {
        // SAFETY: frees the allocation only; values are dropped by their owners (drop_range)
        // or moved out (into_vec).
        unsafe { drop(Vec::from_raw_parts(self.ptr, 0, self.cap)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_move_each_item_once() {
        let items: Vec<String> = (0..7).map(|i| i.to_string()).collect();
        let mut slices = split(items, 3);
        assert_eq!(slices.len(), 3);
        assert_eq!(slices[0].as_slice(), ["0", "1", "2"]);
        assert_eq!(slices[2].as_slice(), ["6"]);
        let first: Vec<String> = slices.remove(0).collect();
        assert_eq!(first, ["0", "1", "2"]);
        let mut second = slices.remove(0);
        assert_eq!(second.next().as_deref(), Some("3"));
        drop(second); // drops "4" and "5"
        drop(slices);
        assert!(split(Vec::<u8>::new(), 4).is_empty());
        let zst: Vec<()> = split(vec![(); 5], 2).into_iter().flatten().collect();
        assert_eq!(zst.len(), 5);
    }

    #[test]
    fn out_buffer_collects_chunks() {
        let out = OutBuf::<String>::new(4);
        // SAFETY: disjoint ranges, each written once, all written before into_vec.
        let v = unsafe {
            out.write(2, vec!["c".into(), "d".into()]);
            out.write(0, vec!["a".into(), "b".into()]);
            OutBuf::into_vec(out, 4)
        };
        assert_eq!(v, ["a", "b", "c", "d"]);
        let out = OutBuf::<String>::new(3);
        // SAFETY: the written range is dropped once; the rest was never written.
        unsafe {
            out.write(1, vec!["x".into()]);
            out.drop_range(1, 1);
        }
        let held = out.clone();
        // SAFETY: both values written; `held` writes nothing.
        let v = unsafe {
            out.write_bytes(0, &[]);
            held.write(0, vec!["p".into(), "q".into()]);
            OutBuf::into_vec(out, 2)
        };
        assert_eq!(v, ["p", "q"]);
        drop(held);
    }
}
