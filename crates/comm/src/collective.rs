//! Collective operations. Every rank of the communicator calls them in the same order.
//!
//! They travel in the communicator's collective context (`ctx + 1`), apart from user
//! messages. Reductions combine in one order fixed by the communicator's size alone, never
//! by arrival order or buffer length, so float results are bit-identical from run to run, on
//! every rank, and between `reduce` and `allreduce`; user operations need only be associative
//! (not commutative), the lower ranks' values always the left operand. The order: with `p`
//! the largest power of two not above the size and `e = size - p`, ranks `2i` and `2i + 1`
//! (`i < e`) combine first, then the `p` partial results (those pairs, then the other ranks
//! alone, in rank order) combine as a balanced binary tree: `((v0 v1) (v2 v3)) ...`.

use crate::blocked::{self, Call};
use crate::comm::{unpack, Communicator};
use crate::engine::Message;
use crate::pod::{as_bytes, op_applies, Pod};
use crate::{Error, Op, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::Cell;

const T_BARRIER: i32 = 1;
const T_BCAST: i32 = 2;
const T_REDUCE: i32 = 3;
const T_ALLREDUCE: i32 = 4;
const T_GATHER: i32 = 5;
const T_SCATTER: i32 = 6;
const T_ALLTOALL: i32 = 7;

/// Allreduce of at least this many bytes scatters the combining over the ranks (recursive
/// halving, then recursive doubling to share the pieces: Rabenseifner's algorithm) instead of
/// exchanging and combining whole buffers at every step.
const SCATTER_REDUCE_BYTES: usize = 64 << 10;

/// How the ranks of a communicator of `size` pair up for a reduction (see the module's
/// documentation): `p` virtual ranks, a power of two; the first `extra` of them stand for
/// two ranks each.
#[derive(Clone, Copy, Debug)]
struct Fold {
    p: usize,
    extra: usize,
}

impl Fold {
    fn new(size: usize) -> Fold {
        let p = if size.is_power_of_two() {
            size
        } else {
            size.next_power_of_two() / 2
        };
        Fold { p, extra: size - p }
    }

    /// The rank that holds virtual rank `v`'s partial result.
    fn real(self, v: usize) -> usize {
        if v < self.extra {
            2 * v
        } else {
            v + self.extra
        }
    }

    /// This rank's part: `Virtual(v)`, or `Folded(into)` when it hands its values to rank
    /// `into` (its pair's lower rank) and takes no further part.
    fn role(self, r: usize) -> Role {
        match r {
            r if r < 2 * self.extra && r % 2 == 1 => Role::Folded(r - 1),
            r if r < 2 * self.extra => Role::Virtual(r / 2),
            r => Role::Virtual(r - self.extra),
        }
    }
}

/// A rank's part in a reduction over a [`Fold`].
#[derive(Clone, Copy, Debug)]
enum Role {
    Virtual(usize),
    Folded(usize),
}

/// Evaluates `$body` with `$f` bound to the element function of `$op` on `$t`, a closure
/// written out for each operation: the loops that combine buffers then compile to
/// straight-line, vectorized code for either operand order (with `op` read inside the loop,
/// one of the two orders ran three times slower).
macro_rules! with_op {
    ($op:expr, $t:ty, |$f:ident| $body:expr) => {{
        macro_rules! each {
            ($o:expr) => {{
                let $f = move |a: $t, b: $t| <$t as Pod>::apply($o, a, b).unwrap_or(a);
                $body
            }};
        }
        match $op {
            Op::Sum => each!(Op::Sum),
            Op::Prod => each!(Op::Prod),
            Op::Min => each!(Op::Min),
            Op::Max => each!(Op::Max),
            Op::LAnd => each!(Op::LAnd),
            Op::LOr => each!(Op::LOr),
            Op::LXor => each!(Op::LXor),
            Op::BAnd => each!(Op::BAnd),
            Op::BOr => each!(Op::BOr),
            Op::BXor => each!(Op::BXor),
        }
    }};
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finalizer
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Communicator {
    fn cctx(&self) -> u64 {
        self.ctx + 1
    }

    fn csend<T: Pod>(&self, dest: usize, tag: i32, data: &[T]) -> Result<()> {
        self.send_raw(self.cctx(), dest, tag, T::KIND, as_bytes(data))
    }

    fn crecv_msg(&self, source: usize, tag: i32) -> Result<Message> {
        let m = self.matcher(self.cctx(), source, tag)?;
        self.engine.borrow_mut().recv(m)
    }

    fn crecv<T: Pod>(&self, source: usize, tag: i32) -> Result<Vec<T>> {
        Ok(unpack(self.crecv_msg(source, tag)?)?.0)
    }

    /// Sends `data` to `peer` and receives exactly `buf.len()` elements from it into `buf`,
    /// directly (see [`Communicator::exchange_into`]).
    fn cswap<T: Pod>(&self, peer: usize, tag: i32, data: &[T], buf: &mut [T]) -> Result<()> {
        self.exchange_exact(Some((peer, data)), peer, tag, buf)
    }

    /// Receives exactly `buf.len()` elements from `peer` into `buf`.
    fn crecv_exact<T: Pod>(&self, peer: usize, tag: i32, buf: &mut [T]) -> Result<()> {
        self.exchange_exact(None, peer, tag, buf)
    }

    fn exchange_exact<T: Pod>(
        &self,
        send: Option<(usize, &[T])>,
        peer: usize,
        tag: i32,
        buf: &mut [T],
    ) -> Result<()> {
        let st = self.exchange_into(self.cctx(), send, peer, tag, buf)?;
        if st.count::<T>() != buf.len() {
            return Err(Error::InvalidArgument(format!(
                "reduction over buffers of different lengths ({} and {})",
                buf.len(),
                st.count::<T>()
            )));
        }
        Ok(())
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.size() {
            return Err(Error::RankOutOfRange {
                rank: root,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// Blocks until every rank has called it (MPI_Barrier). Dissemination algorithm:
    /// ⌈log2 size⌉ rounds of empty messages.
    pub fn barrier(&self) -> Result<()> {
        let _call = blocked::enter(Call::new("barrier"));
        let (n, r) = (self.size(), self.rank());
        let mut k = 1;
        while k < n {
            let (to, from) = ((r + k) % n, (r + n - k) % n);
            self.exchange_into::<u8, u8>(self.cctx(), Some((to, &[])), from, T_BARRIER, &mut [])?;
            k <<= 1;
        }
        Ok(())
    }

    /// Broadcasts `data` from `root` to every rank (MPI_Bcast): on return every rank's
    /// `data` equals root's. Binomial tree.
    pub fn bcast<T: Pod>(&self, root: usize, data: &mut Vec<T>) -> Result<()> {
        let _call = blocked::enter(Call::new("bcast").with_peer("root", root));
        self.check_root(root)?;
        let (n, r) = (self.size(), self.rank());
        let vr = (r + n - root) % n;
        let mut mask = 1;
        while mask < n {
            if vr & mask != 0 {
                *data = self.crecv((vr - mask + root) % n, T_BCAST)?;
                break;
            }
            mask <<= 1;
        }
        mask >>= 1;
        while mask > 0 {
            if vr + mask < n {
                self.csend((vr + mask + root) % n, T_BCAST, data)?;
            }
            mask >>= 1;
        }
        Ok(())
    }

    /// Broadcasts a serde value from `root`: root passes `Some(value)`, the others `None`,
    /// and every rank gets the value.
    pub fn bcast_obj<S: Serialize + DeserializeOwned>(
        &self,
        root: usize,
        value: Option<S>,
    ) -> Result<S> {
        let _call = blocked::enter(Call::new("bcast").with_peer("root", root));
        let mut bytes = match (self.rank() == root, value) {
            (true, Some(v)) => postcard::to_stdvec(&v)?,
            (true, None) => {
                return Err(Error::InvalidArgument(
                    "bcast_obj: the root must pass Some(value)".into(),
                ))
            }
            (false, _) => Vec::new(),
        };
        self.bcast(root, &mut bytes)?;
        Ok(postcard::from_bytes(&bytes)?)
    }

    /// The first step of every reduction: a rank that folds sends its values to its pair's
    /// lower rank and gets `None`; the others get their virtual rank, `acc` combined with the
    /// folded partner's values where they have one.
    fn fold_in<T: Pod>(
        &self,
        fold: Fold,
        acc: &mut [T],
        f: &impl Fn(T, T) -> T,
    ) -> Result<Option<usize>> {
        let r = self.rank();
        match fold.role(r) {
            Role::Folded(into) => {
                self.csend(into, T_REDUCE, acc)?;
                Ok(None)
            }
            Role::Virtual(v) => {
                if v < fold.extra {
                    self.with_scratch(acc.len(), |theirs: &mut [T]| {
                        self.crecv_exact(r + 1, T_REDUCE, theirs)?;
                        combine_ordered(acc, theirs, false, f);
                        Ok(())
                    })?;
                }
                Ok(Some(v))
            }
        }
    }

    /// Combines `data` element-wise over ranks with `f` into rank 0, in the order of the
    /// module's documentation (a binomial tree over the virtual ranks).
    fn reduce_to_zero<T: Pod>(&self, data: &[T], f: &impl Fn(T, T) -> T) -> Result<Option<Vec<T>>> {
        let fold = Fold::new(self.size());
        let mut acc = data.to_vec();
        let Some(v) = self.fold_in(fold, &mut acc, f)? else {
            return Ok(None);
        };
        let mut mask = 1;
        while mask < fold.p {
            if v & mask != 0 {
                self.csend(fold.real(v - mask), T_REDUCE, &acc)?;
                return Ok(None);
            }
            let theirs: Vec<T> = self.crecv(fold.real(v + mask), T_REDUCE)?;
            combine(&mut acc, &theirs, f)?;
            mask <<= 1;
        }
        Ok(Some(acc))
    }

    /// Combines `data` element-wise over all ranks with `f` (associative, not necessarily
    /// commutative: the result is `x0 f x1 f ... f x(n-1)` in rank order), delivered at
    /// `root`: `Some(result)` there, `None` elsewhere (MPI_Reduce with a user operation).
    pub fn reduce_with<T: Pod, F: Fn(T, T) -> T>(
        &self,
        root: usize,
        data: &[T],
        f: F,
    ) -> Result<Option<Vec<T>>> {
        let _call = blocked::enter(Call::new("reduce").with_peer("root", root));
        self.check_root(root)?;
        let at_zero = self.reduce_to_zero(data, &f)?;
        if root == 0 {
            return Ok(at_zero);
        }
        match (self.rank(), at_zero) {
            (0, Some(v)) => {
                self.csend(root, T_REDUCE, &v)?;
                Ok(None)
            }
            (r, _) if r == root => Ok(Some(self.crecv(0, T_REDUCE)?)),
            _ => Ok(None),
        }
    }

    /// [`reduce_with`](Communicator::reduce_with) with a predefined operation (MPI_Reduce).
    ///
    /// ```
    /// use hpcbox_comm::Op;
    /// let world = hpcbox_comm::init()?;
    /// assert_eq!(world.reduce(0, &[3i64, 4], Op::Sum)?, Some(vec![3, 4]));
    /// # Ok::<(), hpcbox_comm::Error>(())
    /// ```
    pub fn reduce<T: Pod>(&self, root: usize, data: &[T], op: Op) -> Result<Option<Vec<T>>> {
        let _call = blocked::enter(Call::new("reduce").with_peer("root", root));
        check_op::<T>(op)?;
        with_op!(op, T, |f| self.reduce_with(root, data, f))
    }

    /// Combines `data` element-wise over all ranks with `f`; every rank gets the same
    /// result, bit for bit (MPI_Allreduce with a user operation). Recursive doubling when the
    /// size is a power of two, else reduce to rank 0 and broadcast; both combine in the same
    /// order as [`reduce_with`](Communicator::reduce_with).
    pub fn allreduce_with<T: Pod, F: Fn(T, T) -> T>(&self, data: &[T], f: F) -> Result<Vec<T>> {
        let _call = blocked::enter(Call::new("allreduce"));
        let mut acc = data.to_vec();
        self.allreduce_in_place(&mut acc, &f)?;
        Ok(acc)
    }

    /// [`allreduce`](Communicator::allreduce) into `out`, which must be as long as `data`
    /// (MPI_Allreduce with a receive buffer): nothing is allocated for the result.
    pub fn allreduce_into<T: Pod>(&self, data: &[T], out: &mut [T], op: Op) -> Result<()> {
        let _call = blocked::enter(Call::new("allreduce"));
        check_op::<T>(op)?;
        if out.len() != data.len() {
            return Err(Error::InvalidArgument(format!(
                "allreduce_into: {} elements in, room for {}",
                data.len(),
                out.len()
            )));
        }
        let fold = Fold::new(self.size());
        if fold.extra == 0 && fold.p > 1 && std::mem::size_of_val(out) >= SCATTER_REDUCE_BYTES {
            // The first step reads this rank's values from `data`: no copy into `out` first.
            return with_op!(op, T, |f| self.allreduce_scattered(
                fold,
                self.rank(),
                Some(data),
                out,
                &f
            ));
        }
        out.copy_from_slice(data);
        with_op!(op, T, |f| self.allreduce_in_place(out, &f))
    }

    /// Combines `acc` (this rank's values) with every rank's, in place: fold, then recursive
    /// doubling over the virtual ranks (or, for large buffers, recursive halving and
    /// doubling), then the folded ranks get the result from their pair's lower rank.
    fn allreduce_in_place<T: Pod>(&self, acc: &mut [T], f: &impl Fn(T, T) -> T) -> Result<()> {
        let fold = Fold::new(self.size());
        match self.fold_in(fold, acc, f)? {
            None => {
                let Role::Folded(from) = fold.role(self.rank()) else {
                    unreachable!("only a folded rank has no virtual rank")
                };
                return self.crecv_exact(from, T_ALLREDUCE, acc);
            }
            Some(v) if std::mem::size_of_val(acc) >= SCATTER_REDUCE_BYTES => {
                self.allreduce_scattered(fold, v, None, acc, f)?;
            }
            Some(v) => self.allreduce_doubling(fold, v, acc, f)?,
        }
        if self.rank() < 2 * fold.extra {
            self.csend(self.rank() + 1, T_ALLREDUCE, acc)?;
        }
        Ok(())
    }

    /// Recursive doubling over the virtual ranks: at each step partners swap their whole
    /// partial results and both combine them.
    fn allreduce_doubling<T: Pod>(
        &self,
        fold: Fold,
        v: usize,
        acc: &mut [T],
        f: &impl Fn(T, T) -> T,
    ) -> Result<()> {
        self.with_scratch(acc.len(), |theirs: &mut [T]| {
            let mut mask = 1;
            while mask < fold.p {
                let partner = v ^ mask;
                self.cswap(fold.real(partner), T_ALLREDUCE, acc, theirs)?;
                combine_ordered(acc, theirs, partner < v, f);
                mask <<= 1;
            }
            Ok(())
        })
    }

    /// Rabenseifner's allreduce over the virtual ranks. Recursive halving: at each step the
    /// partners split the range they share, each keeps one half, sends the other and combines
    /// the partner's copy of its half into its own (the same pairs as recursive doubling, so
    /// the same order); at the end each holds one piece of the result. Recursive doubling in
    /// reverse then swaps pieces until every rank has all of them. With `first`, `acc` holds
    /// nothing yet and this rank's values are read from `first` (there must be at least two
    /// virtual ranks, so that a first step fills `acc`).
    fn allreduce_scattered<T: Pod>(
        &self,
        fold: Fold,
        v: usize,
        first: Option<&[T]>,
        acc: &mut [T],
        f: &impl Fn(T, T) -> T,
    ) -> Result<()> {
        let mut splits = Vec::new();
        let (mut lo, mut hi) = (0, acc.len());
        let mut mask = 1;
        while mask < fold.p {
            let (partner, mid) = (v ^ mask, lo + (hi - lo) / 2);
            let keep_low = v & mask == 0;
            let (low, high) = acc[lo..hi].split_at_mut(mid - lo);
            let (kept, sent) = if keep_low { (low, high) } else { (high, low) };
            let kept_range = if keep_low { lo..mid } else { mid..hi };
            self.with_scratch(kept.len(), |theirs: &mut [T]| {
                match first.filter(|_| mask == 1) {
                    Some(data) => {
                        let sent_range = if keep_low { mid..hi } else { lo..mid };
                        self.cswap(fold.real(partner), T_ALLREDUCE, &data[sent_range], theirs)?;
                        combine_into(kept, &data[kept_range], theirs, partner < v, f);
                    }
                    None => {
                        self.cswap(fold.real(partner), T_ALLREDUCE, sent, theirs)?;
                        combine_ordered(kept, theirs, partner < v, f);
                    }
                }
                Ok(())
            })?;
            splits.push((lo, mid, hi, keep_low));
            (lo, hi) = if keep_low { (lo, mid) } else { (mid, hi) };
            mask <<= 1;
        }
        while let Some((lo, mid, hi, keep_low)) = splits.pop() {
            mask >>= 1;
            let (low, high) = acc[lo..hi].split_at_mut(mid - lo);
            let (mine, theirs) = if keep_low { (low, high) } else { (high, low) };
            self.cswap(fold.real(v ^ mask), T_ALLREDUCE, mine, theirs)?;
        }
        Ok(())
    }

    /// Runs `body` on `len` elements of this rank's reusable working space.
    fn with_scratch<T: Pod, R>(
        &self,
        len: usize,
        body: impl FnOnce(&mut [T]) -> Result<R>,
    ) -> Result<R> {
        let mut words = std::mem::take(&mut self.engine.borrow_mut().scratch);
        let need = (len * std::mem::size_of::<T>()).div_ceil(8);
        if words.len() < need {
            words.resize(need, 0);
        }
        // SAFETY: the words are initialized, 8-byte aligned (every Pod type's alignment divides
        // 8) and hold at least `len` elements' bytes; any bytes are a valid Pod value.
        let slice = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<T>(), len) };
        let result = body(slice);
        self.engine.borrow_mut().scratch = words;
        result
    }

    /// [`allreduce_with`](Communicator::allreduce_with) with a predefined operation
    /// (MPI_Allreduce).
    pub fn allreduce<T: Pod>(&self, data: &[T], op: Op) -> Result<Vec<T>> {
        let _call = blocked::enter(Call::new("allreduce"));
        check_op::<T>(op)?;
        with_op!(op, T, |f| self.allreduce_with(data, f))
    }

    /// Collects every rank's `data`, of any lengths, at `root`: `Some(parts)` indexed by rank
    /// there, `None` elsewhere (MPI_Gatherv).
    pub fn gatherv<T: Pod>(&self, root: usize, data: &[T]) -> Result<Option<Vec<Vec<T>>>> {
        let _call = blocked::enter(Call::new("gather").with_peer("root", root));
        self.check_root(root)?;
        if self.rank() != root {
            self.csend(root, T_GATHER, data)?;
            return Ok(None);
        }
        let parts = (0..self.size())
            .map(|s| {
                if s == root {
                    Ok(data.to_vec())
                } else {
                    self.crecv(s, T_GATHER)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(parts))
    }

    /// Collects every rank's `data` (all of one length) at `root`, concatenated in rank order
    /// (MPI_Gather).
    pub fn gather<T: Pod>(&self, root: usize, data: &[T]) -> Result<Option<Vec<T>>> {
        let _call = blocked::enter(Call::new("gather").with_peer("root", root));
        match self.gatherv(root, data)? {
            None => Ok(None),
            Some(parts) => Ok(Some(flatten_uniform(parts, "gather")?)),
        }
    }

    /// Collects a serde value from every rank at `root`, indexed by rank.
    pub fn gather_obj<S: Serialize + DeserializeOwned>(
        &self,
        root: usize,
        value: &S,
    ) -> Result<Option<Vec<S>>> {
        let _call = blocked::enter(Call::new("gather").with_peer("root", root));
        let bytes = postcard::to_stdvec(value)?;
        match self.gatherv(root, &bytes)? {
            None => Ok(None),
            Some(parts) => Ok(Some(decode_all(&parts)?)),
        }
    }

    /// Every rank gets every rank's `data`, of any lengths, indexed by rank (MPI_Allgatherv).
    pub fn allgatherv<T: Pod>(&self, data: &[T]) -> Result<Vec<Vec<T>>> {
        let _call = blocked::enter(Call::new("allgather"));
        let parts = self.gatherv(0, data)?;
        let mut counts: Vec<u64> = parts.iter().flatten().map(|p| p.len() as u64).collect();
        let mut flat: Vec<T> = parts.into_iter().flatten().flatten().collect();
        self.bcast(0, &mut counts)?;
        self.bcast(0, &mut flat)?;
        let mut out = Vec::with_capacity(counts.len());
        let mut rest = flat.as_slice();
        for c in counts {
            let (head, tail) = rest.split_at((c as usize).min(rest.len()));
            out.push(head.to_vec());
            rest = tail;
        }
        Ok(out)
    }

    /// Every rank gets every rank's `data` (all of one length), concatenated in rank order
    /// (MPI_Allgather).
    pub fn allgather<T: Pod>(&self, data: &[T]) -> Result<Vec<T>> {
        let _call = blocked::enter(Call::new("allgather"));
        flatten_uniform(self.allgatherv(data)?, "allgather")
    }

    /// Every rank gets every rank's serde value, indexed by rank.
    pub fn allgather_obj<S: Serialize + DeserializeOwned>(&self, value: &S) -> Result<Vec<S>> {
        let _call = blocked::enter(Call::new("allgather"));
        let bytes = postcard::to_stdvec(value)?;
        decode_all(&self.allgatherv(&bytes)?)
    }

    /// Root sends part `i` of `parts` to rank `i`; every rank returns its part (MPI_Scatterv).
    /// Root passes `Some(parts)` with one part per rank, the others `None`.
    pub fn scatterv<T: Pod>(&self, root: usize, parts: Option<&[Vec<T>]>) -> Result<Vec<T>> {
        let _call = blocked::enter(Call::new("scatter").with_peer("root", root));
        self.check_root(root)?;
        if self.rank() != root {
            return self.crecv(root, T_SCATTER);
        }
        let parts = parts
            .ok_or_else(|| Error::InvalidArgument("scatter: the root must pass its data".into()))?;
        if parts.len() != self.size() {
            return Err(Error::InvalidArgument(format!(
                "scatterv: {} parts for {} ranks",
                parts.len(),
                self.size()
            )));
        }
        for (dest, part) in parts.iter().enumerate().filter(|(d, _)| *d != root) {
            self.csend(dest, T_SCATTER, part)?;
        }
        Ok(parts[root].clone())
    }

    /// Root splits `data` into `size` equal consecutive blocks and sends block `i` to rank
    /// `i` (MPI_Scatter). Root passes `Some(data)`, the others `None`.
    pub fn scatter<T: Pod>(&self, root: usize, data: Option<&[T]>) -> Result<Vec<T>> {
        let _call = blocked::enter(Call::new("scatter").with_peer("root", root));
        if self.rank() != root {
            return self.scatterv(root, None);
        }
        let data = data
            .ok_or_else(|| Error::InvalidArgument("scatter: the root must pass its data".into()))?;
        let n = self.size();
        if !data.len().is_multiple_of(n) {
            return Err(Error::InvalidArgument(format!(
                "scatter: {} elements do not split evenly over {n} ranks",
                data.len()
            )));
        }
        let block = data.len() / n;
        let parts: Vec<Vec<T>> = (0..n)
            .map(|j| data[j * block..(j + 1) * block].to_vec())
            .collect();
        self.scatterv(root, Some(&parts))
    }

    /// Every rank sends part `j` of `parts` to rank `j` and gets, at index `i`, what rank
    /// `i` sent it (MPI_Alltoallv). Pairwise exchange in `size` steps.
    pub fn alltoallv<T: Pod>(&self, parts: &[Vec<T>]) -> Result<Vec<Vec<T>>> {
        let _call = blocked::enter(Call::new("alltoall"));
        let (n, r) = (self.size(), self.rank());
        if parts.len() != n {
            return Err(Error::InvalidArgument(format!(
                "alltoall: {} parts for {n} ranks",
                parts.len()
            )));
        }
        let mut out = vec![Vec::new(); n];
        out[r] = parts[r].clone();
        for k in 1..n {
            let (dest, src) = ((r + k) % n, (r + n - k) % n);
            self.csend(dest, T_ALLTOALL, &parts[dest])?;
            out[src] = self.crecv(src, T_ALLTOALL)?;
        }
        Ok(out)
    }

    /// Every rank splits `data` into `size` equal blocks, sends block `j` to rank `j`, and
    /// returns the blocks it got, concatenated in rank order (MPI_Alltoall).
    pub fn alltoall<T: Pod>(&self, data: &[T]) -> Result<Vec<T>> {
        let _call = blocked::enter(Call::new("alltoall"));
        let n = self.size();
        if !data.len().is_multiple_of(n) {
            return Err(Error::InvalidArgument(format!(
                "alltoall: {} elements do not split evenly over {n} ranks",
                data.len()
            )));
        }
        let block = data.len() / n;
        let parts: Vec<Vec<T>> = (0..n)
            .map(|j| data[j * block..(j + 1) * block].to_vec())
            .collect();
        Ok(self.alltoallv(&parts)?.into_iter().flatten().collect())
    }

    /// Partitions the communicator by `color` (MPI_Comm_split): ranks with the same color form
    /// a new communicator, ordered by `key`, then by old rank. `None` (MPI_UNDEFINED) takes
    /// part but gets no communicator.
    pub fn split(&self, color: Option<u32>, key: i32) -> Result<Option<Communicator>> {
        let _call = blocked::enter(Call::new("split"));
        let seq = self.derived.get() + 1;
        self.derived.set(seq);
        let me = [color.map_or(-1, i64::from), i64::from(key)];
        let all = self.allgatherv(&me)?;
        let Some(color) = color else {
            return Ok(None);
        };
        let mut members: Vec<(i64, usize)> = all
            .iter()
            .enumerate()
            .filter(|(_, ck)| ck.first() == Some(&i64::from(color)))
            .map(|(old, ck)| (ck.get(1).copied().unwrap_or(0), old))
            .collect();
        members.sort_unstable();
        let rank = members
            .iter()
            .position(|&(_, old)| old == self.rank())
            .unwrap_or(0);
        let group = members
            .iter()
            .map(|&(_, old)| self.world_rank(old).map(|w| w as u32))
            .collect::<Result<Vec<u32>>>()?;
        Ok(Some(Communicator {
            engine: self.engine.clone(),
            ctx: mix(self.ctx ^ mix(seq)) & !1,
            rank,
            group: group.into(),
            derived: Cell::new(0),
        }))
    }

    /// A communicator with the same ranks and a context of its own (MPI_Comm_dup).
    pub fn dup(&self) -> Result<Communicator> {
        let _call = blocked::enter(Call::new("dup"));
        self.split(Some(0), 0)?
            .ok_or_else(|| Error::InvalidArgument("dup produced no communicator".into()))
    }
}

fn check_op<T: Pod>(op: Op) -> Result<()> {
    if !op_applies::<T>(op) {
        return Err(Error::InvalidOp {
            op,
            ty: T::KIND.name(),
        });
    }
    Ok(())
}

/// `left[i] = f(left[i], right[i])`; lengths must agree.
fn combine<T: Pod>(left: &mut [T], right: &[T], f: &impl Fn(T, T) -> T) -> Result<()> {
    if left.len() != right.len() {
        return Err(Error::InvalidArgument(format!(
            "reduction over buffers of different lengths ({} and {})",
            left.len(),
            right.len()
        )));
    }
    for (a, &b) in left.iter_mut().zip(right) {
        *a = f(*a, b);
    }
    Ok(())
}

/// `acc[i] = f(acc[i], theirs[i])`, or `f(theirs[i], acc[i])` when `theirs_first` (the
/// partner's elements come from lower ranks). The lengths are equal.
fn combine_ordered<T: Pod>(
    acc: &mut [T],
    theirs: &[T],
    theirs_first: bool,
    f: &impl Fn(T, T) -> T,
) {
    for (a, &b) in acc.iter_mut().zip(theirs) {
        *a = if theirs_first { f(b, *a) } else { f(*a, b) };
    }
}

/// `dst[i] = f(mine[i], theirs[i])`, or `f(theirs[i], mine[i])` when `theirs_first`. The
/// lengths are equal.
fn combine_into<T: Pod>(
    dst: &mut [T],
    mine: &[T],
    theirs: &[T],
    theirs_first: bool,
    f: &impl Fn(T, T) -> T,
) {
    for ((d, &a), &b) in dst.iter_mut().zip(mine).zip(theirs) {
        *d = if theirs_first { f(b, a) } else { f(a, b) };
    }
}

fn flatten_uniform<T: Pod>(parts: Vec<Vec<T>>, what: &str) -> Result<Vec<T>> {
    let first = parts.first().map_or(0, Vec::len);
    if let Some((r, p)) = parts.iter().enumerate().find(|(_, p)| p.len() != first) {
        return Err(Error::InvalidArgument(format!(
            "{what}: rank {r} gave {} elements, rank 0 gave {first}",
            p.len()
        )));
    }
    Ok(parts.into_iter().flatten().collect())
}

fn decode_all<S: DeserializeOwned>(parts: &[Vec<u8>]) -> Result<Vec<S>> {
    parts
        .iter()
        .map(|p| postcard::from_bytes(p).map_err(Error::from))
        .collect()
}
