//! What `course bench` prints: a row per case, each ratio with how far it
//! moved from round to round (in a last column), and the state of the
//! machine it ran on.
//!
//! A median hides how much the rounds disagreed. On a shared machine one
//! round can come out at half another, and a reader comparing two tables
//! needs to know whether a difference is larger than that: so each ratio
//! shows its range too, and the table says how busy the machine was.

/// One line of the table: a case, what the solution measured, what its peer
/// measured, and the goal.
pub struct Row {
    pub case: String,
    pub solution: String,
    pub peer: String,
    pub ratio: Option<Ratio>,
    pub goal: &'static str,
}

/// How one contender compares with another, above 1 where the first does
/// better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// The first's median over the second's median.
    pub of_medians: f64,
    /// The lowest and highest ratio of one round: round i of the first
    /// over round i of the second, which ran right after it.
    pub lowest: f64,
    pub highest: f64,
    /// How many rounds of both there were: not the same for every case.
    pub rounds: usize,
}

impl Ratio {
    /// `first[i] / second[i]`, round by round, and the ratio of their
    /// medians. For a delay or a CPU time, where lower is better, pass the
    /// peer first. `None` without a round of both.
    pub fn of(first: &[f64], second: &[f64]) -> Option<Ratio> {
        let rounds: Vec<f64> = first.iter().zip(second).map(|(a, b)| a / b).collect();
        let lowest = rounds.iter().copied().reduce(f64::min)?;
        let highest = rounds.iter().copied().reduce(f64::max)?;
        Some(Ratio {
            of_medians: super::median(first.to_vec()) / super::median(second.to_vec()),
            lowest,
            highest,
            rounds: rounds.len(),
        })
    }

    /// The ratio of the medians, `0.72`: a number alone, for a script
    /// that reads the table.
    fn shown(&self) -> String {
        format!("{:.2}", self.of_medians)
    }

    /// How many rounds, and their range: `5: 0.45 to 1.05`, or one number
    /// where they agreed.
    fn range(&self) -> String {
        let (lowest, highest) = (
            format!("{:.2}", self.lowest),
            format!("{:.2}", self.highest),
        );
        if lowest == highest {
            format!("{}: {lowest}", self.rounds)
        } else {
            format!("{}: {lowest} to {highest}", self.rounds)
        }
    }
}

/// How busy the machine was: what its CPUs were doing in the second before
/// the bench began, and the CPU time its host took back during it (steal,
/// on a virtual machine), from Linux's `/proc`. Not the load average: that
/// is a mean over the last minute, so a bench started right after another
/// would read the first one's load as the machine's.
pub struct Machine {
    busy_before: Option<f64>,
    cpu_before: Option<CpuTimes>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTimes {
    total: u64,
    /// Time the CPUs had nothing to run: idle, or waiting for a disk.
    idle: u64,
    steal: u64,
}

impl CpuTimes {
    /// The share of the time from `self` to `later` that the CPUs were
    /// running something (the host's steal included: nobody here could use
    /// it), from 0 to 1. `None` if no time was counted in between.
    fn busy_until(self, later: CpuTimes) -> Option<f64> {
        let idle = later.idle.saturating_sub(self.idle);
        Some(1.0 - idle as f64 / self.ticks_until(later)?)
    }

    /// The share of the time from `self` to `later` that the host took.
    fn stolen_until(self, later: CpuTimes) -> Option<f64> {
        let steal = later.steal.saturating_sub(self.steal);
        Some(steal as f64 / self.ticks_until(later)?)
    }

    fn ticks_until(self, later: CpuTimes) -> Option<f64> {
        let ticks = later.total.saturating_sub(self.total);
        (ticks > 0).then_some(ticks as f64)
    }
}

impl Machine {
    /// Watch the CPUs for `how_long`, before anything of the bench runs,
    /// and note the state at the start of the run.
    pub fn watch(how_long: std::time::Duration) -> Machine {
        let first = cpu_times();
        std::thread::sleep(how_long);
        let cpu_before = cpu_times();
        Machine {
            busy_before: first.zip(cpu_before).and_then(|(a, b)| a.busy_until(b)),
            cpu_before,
        }
    }

    /// One line on the run: CPUs, how busy they were before it, and the
    /// share of CPU time stolen during it, as far as it can be read.
    fn summary(&self) -> String {
        self.summary_at(cpu_times())
    }

    /// The summary, with the CPU times at the end of the run given.
    fn summary_at(&self, now: Option<CpuTimes>) -> String {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let mut parts = vec![format!("{cpus} CPUs")];
        if let Some(busy) = self.busy_before {
            parts.push(format!(
                "{:.0}% busy with other work just before the bench",
                100.0 * busy
            ));
        }
        let stolen =
            (self.cpu_before.zip(now)).and_then(|(before, after)| before.stolen_until(after));
        if let Some(stolen) = stolen {
            parts.push(format!(
                "{:.1}% of CPU time taken by the host (steal) during it",
                100.0 * stolen
            ));
        }
        parts.join("; ")
    }
}

/// All CPU time so far, from `/proc/stat`'s `cpu` line: user nice system
/// idle iowait irq softirq steal, in clock ticks.
fn cpu_times() -> Option<CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    (ticks.len() == 8).then(|| CpuTimes {
        total: ticks.iter().sum(),
        idle: ticks[3] + ticks[4],
        steal: ticks[7],
    })
}

pub fn print_table(rows: &[Row], rounds: u32, machine: &Machine) {
    println!();
    println!(
        "Medians of {rounds} alternating runs, more where the last column says so; ratio = \
         solution / peer (higher is better); rounds = how many, and the lowest and highest \
         ratio of one."
    );
    println!("Machine: {}.", machine.summary());
    println!();
    // The range comes last: the columns before it stay where they were.
    println!("| case | solution | peer | ratio | goal | rounds |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let (ratio, range) = row.ratio.map_or((String::new(), String::new()), |ratio| {
            (ratio.shown(), ratio.range())
        });
        println!(
            "| {} | {} | {} | {ratio} | {} | {range} |",
            row.case, row.solution, row.peer, row.goal
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_has_its_median_and_the_range_of_its_rounds() {
        let ratio = Ratio::of(&[2.0, 3.0, 4.0], &[4.0, 2.0, 2.0]).unwrap();
        assert_eq!(
            ratio,
            Ratio {
                of_medians: 3.0 / 2.0,
                lowest: 0.5,
                highest: 2.0,
                rounds: 3
            }
        );
        assert_eq!(ratio.shown(), "1.50");
        assert_eq!(ratio.range(), "3: 0.50 to 2.00");
    }

    #[test]
    fn rounds_that_agree_show_one_number() {
        let ratio = Ratio::of(&[2.0, 2.0], &[1.0, 1.0]).unwrap();
        assert_eq!(ratio.range(), "2: 2.00");
    }

    #[test]
    fn no_round_of_the_peer_is_no_ratio() {
        assert_eq!(Ratio::of(&[2.0], &[]), None);
    }

    /// The CPU counters at some start, for the tests that count from it.
    const BEFORE: CpuTimes = CpuTimes {
        total: 1000,
        idle: 600,
        steal: 10,
    };

    #[test]
    fn this_machine_is_watched() {
        let machine = Machine::watch(std::time::Duration::from_millis(50));
        if cfg!(target_os = "linux") {
            assert!(machine.busy_before.is_some());
            assert!(machine.cpu_before.is_some());
        }
    }

    #[test]
    fn the_summary_says_how_busy_and_how_much_was_stolen() {
        let before = BEFORE;
        let after = CpuTimes {
            total: 3000,
            idle: 2000,
            steal: 30,
        };
        let machine = Machine {
            busy_before: Some(0.034),
            cpu_before: Some(before),
        };
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        assert_eq!(
            machine.summary_at(Some(after)),
            format!(
                "{cpus} CPUs; 3% busy with other work just before the bench; \
                 1.0% of CPU time taken by the host (steal) during it"
            )
        );
        // Where /proc cannot be read, the line says only what it knows.
        let blind = Machine {
            busy_before: None,
            cpu_before: None,
        };
        assert_eq!(blind.summary_at(None), format!("{cpus} CPUs"));
    }

    #[test]
    fn busy_and_stolen_are_shares_of_the_time_between() {
        let before = BEFORE;
        // 200 ticks went by: 50 idle, 20 stolen, 130 running something.
        let after = CpuTimes {
            total: 1200,
            idle: 650,
            steal: 30,
        };
        assert_eq!(before.busy_until(after), Some(0.75));
        assert_eq!(before.stolen_until(after), Some(0.1));
        // No tick between the two: no share to tell.
        assert_eq!(before.busy_until(before), None);
        assert_eq!(before.stolen_until(before), None);
    }
}
