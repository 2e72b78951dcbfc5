//! Plain-old-data element types that travel as raw bytes, and the reduction operations on them.

use std::mem::{size_of, ManuallyDrop};

mod sealed {
    pub trait Sealed {}
}

/// The element type a message holds, carried in its envelope so that a receive of another
/// type fails with [`Error::TypeMismatch`](crate::Error::TypeMismatch) instead of reading garbage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `u8`
    U8 = 1,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// A serde value encoded with postcard (`send_obj`).
    Object = 0x20,
}

impl Kind {
    /// The Rust name of the element type.
    pub fn name(self) -> &'static str {
        match self {
            Kind::U8 => "u8",
            Kind::U16 => "u16",
            Kind::U32 => "u32",
            Kind::U64 => "u64",
            Kind::I8 => "i8",
            Kind::I16 => "i16",
            Kind::I32 => "i32",
            Kind::I64 => "i64",
            Kind::F32 => "f32",
            Kind::F64 => "f64",
            Kind::Object => "a serialized object",
        }
    }

    pub(crate) fn from_u8(b: u8) -> Option<Kind> {
        const ALL: [Kind; 11] = [
            Kind::U8,
            Kind::U16,
            Kind::U32,
            Kind::U64,
            Kind::I8,
            Kind::I16,
            Kind::I32,
            Kind::I64,
            Kind::F32,
            Kind::F64,
            Kind::Object,
        ];
        ALL.into_iter().find(|k| *k as u8 == b)
    }
}

/// A predefined reduction operation (MPI_SUM, MPI_PROD, ...).
///
/// Integer `Sum` and `Prod` wrap on overflow (MPI leaves overflow undefined; wrapping keeps the
/// result deterministic). The logical and bitwise operations apply to integers only; logical
/// ones treat non-zero as true and yield 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sum.
    Sum,
    /// Product.
    Prod,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Logical and (integers).
    LAnd,
    /// Logical or (integers).
    LOr,
    /// Logical exclusive or (integers).
    LXor,
    /// Bitwise and (integers).
    BAnd,
    /// Bitwise or (integers).
    BOr,
    /// Bitwise exclusive or (integers).
    BXor,
}

/// An element type that is sent as its raw bytes, without serialization: `u8`..`u64`,
/// `i8`..`i64`, `f32`, `f64`. Sealed: the byte-level reinterpretation is only sound for these.
pub trait Pod: sealed::Sealed + Copy + PartialEq + std::fmt::Debug + Send + 'static {
    /// The element type's tag in message envelopes.
    const KIND: Kind;

    /// `a op b`, or `None` when `op` does not apply to this type.
    fn apply(op: Op, a: Self, b: Self) -> Option<Self>;
}

macro_rules! pod_int {
    ($($t:ty => $k:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Pod for $t {
            const KIND: Kind = Kind::$k;
            fn apply(op: Op, a: Self, b: Self) -> Option<Self> {
                Some(match op {
                    Op::Sum => a.wrapping_add(b),
                    Op::Prod => a.wrapping_mul(b),
                    Op::Min => a.min(b),
                    Op::Max => a.max(b),
                    Op::LAnd => <$t>::from((a != 0) && (b != 0)),
                    Op::LOr => <$t>::from((a != 0) || (b != 0)),
                    Op::LXor => <$t>::from((a != 0) != (b != 0)),
                    Op::BAnd => a & b,
                    Op::BOr => a | b,
                    Op::BXor => a ^ b,
                })
            }
        }
    )*};
}

macro_rules! pod_float {
    ($($t:ty => $k:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Pod for $t {
            const KIND: Kind = Kind::$k;
            fn apply(op: Op, a: Self, b: Self) -> Option<Self> {
                match op {
                    Op::Sum => Some(a + b),
                    Op::Prod => Some(a * b),
                    Op::Min => Some(a.min(b)),
                    Op::Max => Some(a.max(b)),
                    _ => None,
                }
            }
        }
    )*};
}

pod_int!(u8 => U8, u16 => U16, u32 => U32, u64 => U64, i8 => I8, i16 => I16, i32 => I32, i64 => I64);
pod_float!(f32 => F32, f64 => F64);

/// Whether `op` applies to `T` (checked before any communication, on every rank alike).
pub(crate) fn op_applies<T: Pod>(op: Op) -> bool {
    // Every type is Pod-sealed and supports its ops uniformly, so one probe tells.
    T::apply(op, zero::<T>(), zero::<T>()).is_some()
}

fn zero<T: Pod>() -> T {
    // SAFETY: every Pod type is a primitive number for which all-zero bytes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// The bytes of a slice of plain-old-data elements.
pub(crate) fn as_bytes<T: Pod>(s: &[T]) -> &[u8] {
    // SAFETY: Pod types are primitive numbers without padding; any initialized value is
    // valid as bytes, and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// The bytes of a mutable slice of plain-old-data elements (every bit pattern written there
/// is a valid element).
pub(crate) fn as_bytes_mut<T: Pod>(s: &mut [T]) -> &mut [u8] {
    // SAFETY: as in as_bytes; and any bytes written make valid Pod values.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// Elements from received bytes; `None` if the length is not a whole number of elements.
/// Byte-sized types reuse the allocation; wider ones are copied into an aligned vector.
pub(crate) fn from_bytes<T: Pod>(bytes: Vec<u8>) -> Option<Vec<T>> {
    let size = size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    if size == 1 {
        let mut b = ManuallyDrop::new(bytes);
        // SAFETY: T is u8 or i8: same size and alignment as u8, every bit pattern valid, so
        // the allocation's layout matches Vec<T>'s exactly.
        return Some(unsafe {
            Vec::from_raw_parts(b.as_mut_ptr().cast::<T>(), b.len(), b.capacity())
        });
    }
    let n = bytes.len() / size;
    let mut v = Vec::<T>::with_capacity(n);
    // SAFETY: v has room for n elements (n * size bytes); the source holds exactly that many
    // bytes, and every bit pattern is a valid value of a Pod type.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), n * size);
        v.set_len(n);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn f64_bytes_round_trip(v in proptest::collection::vec(any::<f64>(), 0..64)) {
            let back: Vec<f64> = from_bytes(as_bytes(&v).to_vec()).unwrap();
            prop_assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn i8_bytes_round_trip(v in proptest::collection::vec(any::<i8>(), 0..64)) {
            let back: Vec<i8> = from_bytes(as_bytes(&v).to_vec()).unwrap();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn u16_round_trip(v in proptest::collection::vec(any::<u16>(), 0..64)) {
            let back: Vec<u16> = from_bytes(as_bytes(&v).to_vec()).unwrap();
            prop_assert_eq!(back, v);
        }
    }

    #[test]
    fn ragged_byte_count_is_refused() {
        assert!(from_bytes::<u32>(vec![0; 7]).is_none());
        assert!(from_bytes::<u32>(vec![0; 8]).is_some());
    }

    #[test]
    fn float_ops_refuse_bitwise() {
        assert!(!op_applies::<f64>(Op::BAnd));
        assert!(!op_applies::<f32>(Op::LOr));
        assert!(op_applies::<f64>(Op::Max));
        assert!(op_applies::<u8>(Op::BXor));
    }

    #[test]
    fn integer_ops() {
        assert_eq!(i32::apply(Op::Sum, i32::MAX, 1), Some(i32::MIN));
        assert_eq!(u8::apply(Op::LAnd, 3, 0), Some(0));
        assert_eq!(u8::apply(Op::LOr, 3, 0), Some(1));
        assert_eq!(u8::apply(Op::LXor, 3, 5), Some(0));
        assert_eq!(u64::apply(Op::BOr, 0b01, 0b10), Some(0b11));
        assert_eq!(i64::apply(Op::Min, -3, 2), Some(-3));
    }

    #[test]
    fn kind_codes_round_trip() {
        for k in [Kind::U8, Kind::I64, Kind::F32, Kind::Object] {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        assert_eq!(Kind::from_u8(0), None);
    }
}
