//! A seeded synthetic workload: job sizes mostly small and powers of two, exponential run times
//! with over-estimated walltime requests, Poisson arrivals tuned to a target load.

use super::{SimJob, Workload};

/// SplitMix64: a small, fast, well-mixed generator; the same seed gives the same sequence.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with mean `mean`.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -(1.0 - self.unit()).ln() * mean
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    /// Number of jobs.
    pub jobs: usize,
    /// Seed of the generator.
    pub seed: u64,
    /// Largest job, in processors (sizes are 1 or powers of two up to this).
    pub max_procs: u32,
    /// Mean run time in seconds.
    pub mean_run_time: f64,
    /// Offered load: processor-seconds asked per processor-second of the cluster (0.9 is busy).
    pub load: f64,
    /// Processors of the cluster the load is computed for.
    pub cluster_procs: u64,
    /// Distinct users.
    pub users: u32,
}

impl Synthetic {
    /// `jobs` jobs for a cluster of `cluster_procs` processors at load 0.9, seed 1.
    pub fn new(jobs: usize, cluster_procs: u64) -> Self {
        Synthetic {
            jobs,
            seed: 1,
            max_procs: 64,
            mean_run_time: 1800.0,
            load: 0.9,
            cluster_procs,
            users: 64,
        }
    }

    /// Generates the workload.
    ///
    /// ```
    /// use hpcbox_sched::sim::Synthetic;
    /// let a = Synthetic::new(100, 256).generate();
    /// let b = Synthetic::new(100, 256).generate();
    /// assert_eq!(a, b);
    /// assert_eq!(a.jobs.len(), 100);
    /// ```
    pub fn generate(&self) -> Workload {
        let mut rng = SplitMix64::new(self.seed);
        let max_log = 31 - self.max_procs.max(1).leading_zeros();
        let mut jobs = Vec::with_capacity(self.jobs);
        let mut work = 0.0f64;
        for i in 0..self.jobs {
            let procs = if max_log == 0 || rng.unit() < 0.4 {
                1
            } else {
                1u32 << (1 + (rng.next_u64() % u64::from(max_log)) as u32)
            };
            let run = rng
                .exponential(self.mean_run_time)
                .clamp(1.0, 20.0 * self.mean_run_time) as u64;
            let over = 1.0 + 2.0 * rng.unit();
            let requested = ((run as f64 * over / 60.0).ceil() as u64).max(1) * 60;
            work += f64::from(procs) * run as f64;
            jobs.push(SimJob {
                id: i as u64 + 1,
                submit: 0,
                run_time: run,
                procs,
                requested_time: Some(requested),
                user: (rng.next_u64() % u64::from(self.users.max(1))) as u32,
            });
        }
        let capacity = self.cluster_procs.max(1) as f64 * self.load.max(1e-6);
        let mean_gap = work / capacity / self.jobs.max(1) as f64;
        let mut t = 0.0f64;
        for job in &mut jobs {
            t += rng.exponential(mean_gap);
            job.submit = t as u64;
        }
        Workload::new(jobs, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference outputs of SplitMix64 seeded with 1234567.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn seeds_differ_and_sizes_stay_in_bounds() {
        let a = Synthetic::new(500, 512).generate();
        let mut s = Synthetic::new(500, 512);
        s.seed = 2;
        let b = s.generate();
        assert_ne!(a, b);
        assert!(a.jobs.iter().all(|j| j.procs >= 1 && j.procs <= 64));
        assert!(a
            .jobs
            .iter()
            .all(|j| j.requested_time.unwrap() >= j.run_time));
        assert!(a.jobs.windows(2).all(|w| w[0].submit <= w[1].submit));
    }
}
