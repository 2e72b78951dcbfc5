//! The lesson's Monte Carlo estimate of pi, as a reproducible computation that any number of
//! workers can share.
//!
//! The samples are cut into chunks of [`CHUNK`]; chunk `i` draws from its own random stream,
//! seeded from the seed and `i`. Whoever counts a chunk (one loop, a pool worker, a rank) counts
//! the same points, so the estimate depends only on the seed and the number of samples, never
//! on how many workers shared the work.
//!
//! ```
//! use hpcbox_lesson::{chunks, count_chunk, estimate};
//! let (seed, samples) = (7, 3_000_000);
//! let serial: u64 = chunks(samples).map(|c| count_chunk(seed, c, samples)).sum();
//! let odd_even: u64 = chunks(samples).filter(|c| c % 2 == 0).map(|c| count_chunk(seed, c, samples)).sum::<u64>()
//!     + chunks(samples).filter(|c| c % 2 == 1).map(|c| count_chunk(seed, c, samples)).sum::<u64>();
//! assert_eq!(serial, odd_even);
//! assert!((estimate(serial, samples) - std::f64::consts::PI).abs() < 0.01);
//! ```

pub mod computepi;
pub mod scaling;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Samples per chunk: large enough that a chunk is worth sending to a worker, small enough that
/// many workers share the work evenly.
pub const CHUNK: u64 = 1 << 22;

/// The chunk indices of a run of `samples` samples.
pub fn chunks(samples: u64) -> std::ops::Range<u64> {
    0..samples.div_ceil(CHUNK)
}

/// How many samples chunk `chunk` of a run of `samples` holds (the last may be short).
pub fn chunk_len(chunk: u64, samples: u64) -> u64 {
    samples.saturating_sub(chunk * CHUNK).min(CHUNK)
}

/// How many of chunk `chunk`'s points fall inside the quarter circle.
///
/// Each draw of 64 random bits gives one point: two 31-bit coordinates, tested exactly in
/// integers (`x² + y² < 2⁶²`), with no floating point and no allocation in the loop.
pub fn count_chunk(seed: u64, chunk: u64, samples: u64) -> u64 {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(stream_seed(seed, chunk));
    let mut inside = 0;
    for _ in 0..chunk_len(chunk, samples) {
        let bits = rng.next_u64();
        let x = bits >> 33;
        let y = (bits & 0xffff_ffff) >> 1;
        inside += u64::from(x * x + y * y < 1 << 62);
    }
    inside
}

/// The seed of chunk `chunk`'s stream: distinct for every (seed, chunk) pair.
fn stream_seed(seed: u64, chunk: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ chunk.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// The estimate of pi from `inside` of `samples` points.
pub fn estimate(inside: u64, samples: u64) -> f64 {
    4.0 * inside as f64 / samples.max(1) as f64
}

/// The standard error of the estimate for `samples` points: `4·sqrt(p(1-p)/n)`, p = pi/4.
pub fn standard_error(samples: u64) -> f64 {
    let p = std::f64::consts::FRAC_PI_4;
    4.0 * (p * (1.0 - p) / samples.max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_samples_exactly() {
        for samples in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 3] {
            let total: u64 = chunks(samples).map(|c| chunk_len(c, samples)).sum();
            assert_eq!(total, samples);
        }
    }

    #[test]
    fn the_estimate_is_within_its_error_and_reproducible() {
        let samples = 2 * CHUNK;
        let inside: u64 = chunks(samples).map(|c| count_chunk(1, c, samples)).sum();
        let pi = estimate(inside, samples);
        assert!(
            (pi - std::f64::consts::PI).abs() < 5.0 * standard_error(samples),
            "{pi}"
        );
        let again: u64 = chunks(samples)
            .rev()
            .map(|c| count_chunk(1, c, samples))
            .sum();
        assert_eq!(inside, again);
        let other_seed: u64 = chunks(samples).map(|c| count_chunk(2, c, samples)).sum();
        assert_ne!(inside, other_seed);
    }
}
