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
use rand_xoshiro::SplitMix64;

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

/// Random streams interleaved in a chunk: sample `k` of a chunk comes from stream `k % LANES`.
/// Eight independent generators let the CPU run eight dependency chains at once (and, with
/// AVX2, in two vector registers), where one generator waits on itself every step.
pub const LANES: usize = 8;

/// How many of chunk `chunk`'s points fall inside the quarter circle.
///
/// Each draw of 64 random bits gives one point: two 31-bit coordinates, tested exactly in
/// integers (`x² + y² < 2⁶²`), with no floating point and no allocation in the loop. The
/// chunk's [`LANES`] streams start from independent states drawn from the chunk's seed. The
/// count is the same whichever code path (AVX2 or portable) runs it.
pub fn count_chunk(seed: u64, chunk: u64, samples: u64) -> u64 {
    let mut lanes = lane_states(stream_seed(seed, chunk));
    let len = chunk_len(chunk, samples);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { count_lanes_avx2(&mut lanes, len) };
    }
    count_lanes(&mut lanes, len)
}

/// The [`LANES`] generator states of a chunk whose stream is seeded with `seed`, struct of
/// arrays (`states[w][l]` is word `w` of lane `l`): four SplitMix64 outputs per lane, as
/// xoshiro's authors advise seeding it.
fn lane_states(seed: u64) -> [[u64; LANES]; 4] {
    let mut splitmix = SplitMix64::seed_from_u64(seed);
    let mut states = [[0u64; LANES]; 4];
    for lane in 0..LANES {
        for word in &mut states {
            word[lane] = splitmix.next_u64();
        }
    }
    states
}

/// [`count_lanes`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn count_lanes_avx2(lanes: &mut [[u64; LANES]; 4], len: u64) -> u64 {
    count_lanes(lanes, len)
}

/// Counts the points of `len` samples drawn round-robin from the lanes: whole rounds, then
/// the first `len % LANES` lanes once more.
#[inline(always)]
fn count_lanes(lanes: &mut [[u64; LANES]; 4], len: u64) -> u64 {
    let mut inside = [0u64; LANES];
    for _ in 0..len / LANES as u64 {
        for (lane, count) in inside.iter_mut().enumerate() {
            *count += u64::from(in_circle(next_bits(lanes, lane)));
        }
    }
    let tail = (len % LANES as u64) as usize;
    for (lane, count) in inside.iter_mut().enumerate().take(tail) {
        *count += u64::from(in_circle(next_bits(lanes, lane)));
    }
    inside.iter().sum()
}

/// One xoshiro256++ step of lane `lane` (the generator of `rand_xoshiro`, written over the
/// struct-of-arrays state so the lanes vectorize).
#[inline(always)]
fn next_bits(s: &mut [[u64; LANES]; 4], lane: usize) -> u64 {
    let (s0, s1, s2, s3) = (s[0][lane], s[1][lane], s[2][lane], s[3][lane]);
    let result = s0.wrapping_add(s3).rotate_left(23).wrapping_add(s0);
    let t = s1 << 17;
    let s2 = s2 ^ s0;
    let s3 = s3 ^ s1;
    s[1][lane] = s1 ^ s2;
    s[0][lane] = s0 ^ s3;
    s[2][lane] = s2 ^ t;
    s[3][lane] = s3.rotate_left(45);
    result
}

/// Whether the point of 64 random bits lies inside the quarter circle: two 31-bit coordinates,
/// squared as 32-bit numbers widened (one vector multiply per lane pair).
#[inline(always)]
fn in_circle(bits: u64) -> bool {
    let x = u64::from((bits >> 33) as u32);
    let y = u64::from((bits as u32) >> 1);
    x * x + y * y < 1 << 62
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
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn chunks_cover_the_samples_exactly() {
        for samples in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 3] {
            let total: u64 = chunks(samples).map(|c| chunk_len(c, samples)).sum();
            assert_eq!(total, samples);
        }
    }

    #[test]
    fn each_lane_is_rand_xoshiros_generator() {
        let mut lanes = lane_states(42);
        let mut splitmix = SplitMix64::seed_from_u64(42);
        for lane in 0..LANES {
            let mut seed = [0u8; 32];
            for word in seed.chunks_exact_mut(8) {
                word.copy_from_slice(&splitmix.next_u64().to_le_bytes());
            }
            let mut reference = Xoshiro256PlusPlus::from_seed(seed);
            for _ in 0..3 {
                assert_eq!(
                    next_bits(&mut lanes, lane),
                    reference.next_u64(),
                    "lane {lane}"
                );
            }
        }
    }

    #[test]
    fn every_code_path_counts_the_same() {
        for len in [0, 1, 7, 8, 9, 1000, 4099] {
            let mut generic = lane_states(5);
            let portable = count_lanes(&mut generic, len);
            assert_eq!(count_chunk(3, 0, len), {
                let mut again = lane_states(stream_seed(3, 0));
                count_lanes(&mut again, len)
            });
            let mut scalar = lane_states(5);
            let mut by_hand = 0;
            for k in 0..len {
                by_hand += u64::from(in_circle(next_bits(
                    &mut scalar,
                    (k % LANES as u64) as usize,
                )));
            }
            assert_eq!(portable, by_hand, "len {len}");
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
