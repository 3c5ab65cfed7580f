//! Test data that is random, and yet reproducible: every run prints its seed
//! on failure, and `COURSE_SEED=N` replays exactly the same data.

use std::time::{SystemTime, UNIX_EPOCH};

/// The run's seed: `COURSE_SEED` if set, otherwise taken from the clock.
pub fn run_seed() -> Result<u64, String> {
    match std::env::var("COURSE_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("COURSE_SEED={text:?} is not a whole number")),
        Err(_) => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)),
    }
}

/// A small, fast generator (SplitMix64). Not for secrets: for test data only.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator for one stage of a run: each stage gets its own stream,
    /// so running one stage alone gives it the same data as the full run.
    pub fn for_stage(seed: u64, stage: usize) -> Rng {
        let mut rng = Rng(seed ^ (stage as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `range` (start inclusive, end exclusive).
    pub fn below(&mut self, end: usize) -> usize {
        (self.next_u64() % end.max(1) as u64) as usize
    }

    pub fn between(&mut self, start: usize, end: usize) -> usize {
        start + self.below(end - start)
    }

    /// `count` bytes of any value.
    pub fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next_u64() as u8).collect()
    }

    /// A word of lowercase letters, `len` long.
    pub fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }

    /// A line of printable words, without its newline.
    pub fn sentence(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| {
                let len = self.between(1, 9);
                self.word(len)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Pick one of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data() {
        assert_eq!(
            Rng::for_stage(42, 3).bytes(64),
            Rng::for_stage(42, 3).bytes(64)
        );
        assert_ne!(
            Rng::for_stage(42, 3).bytes(64),
            Rng::for_stage(42, 4).bytes(64)
        );
    }

    #[test]
    fn words_are_lowercase_letters() {
        let word = Rng::for_stage(1, 1).word(50);
        assert!(word.bytes().all(|b| b.is_ascii_lowercase()));
    }
}
