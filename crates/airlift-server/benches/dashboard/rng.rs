//! The bench's random choices, seeded, so that every run seeds the same
//! fleet shape and picks the same pages: rand's `SmallRng` with the two
//! calls the bench makes.

use rand::rngs::SmallRng;
use rand::{Rng as _, RngCore, SeedableRng};

pub struct Rng(SmallRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SmallRng::seed_from_u64(seed))
    }

    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.0.gen_range(0..bound)
    }
}
