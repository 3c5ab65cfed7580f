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
        })
    }

    /// The ratio of the medians, `0.72`: a number alone, for a script
    /// that reads the table.
    fn shown(&self) -> String {
        format!("{:.2}", self.of_medians)
    }

    /// The range of the rounds, `0.45 to 1.05`, or one number where they
    /// agreed.
    fn range(&self) -> String {
        let (lowest, highest) = (
            format!("{:.2}", self.lowest),
            format!("{:.2}", self.highest),
        );
        if lowest == highest {
            lowest
        } else {
            format!("{lowest} to {highest}")
        }
    }
}

/// How busy the machine was: its load average and the CPU time its host
/// took back (steal, on a virtual machine), from Linux's `/proc`.
pub struct Machine {
    load_before: Option<f64>,
    cpu_before: Option<CpuTimes>,
}

#[derive(Clone, Copy)]
struct CpuTimes {
    total: u64,
    steal: u64,
}

impl Machine {
    /// Note the state at the start of the run.
    pub fn now() -> Machine {
        Machine {
            load_before: load_average(),
            cpu_before: cpu_times(),
        }
    }

    /// One line on the run: CPUs, load average at its start and end, and
    /// the share of CPU time stolen meanwhile, as far as it can be read.
    fn summary(&self) -> String {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let mut parts = vec![format!("{cpus} CPUs")];
        if let (Some(before), Some(after)) = (self.load_before, load_average()) {
            parts.push(format!(
                "load average {before:.2} at the start, {after:.2} at the end"
            ));
        }
        if let (Some(before), Some(after)) = (self.cpu_before, cpu_times()) {
            let total = after.total.saturating_sub(before.total).max(1);
            let steal = after.steal.saturating_sub(before.steal);
            parts.push(format!(
                "{:.1}% of CPU time taken by the host (steal)",
                100.0 * steal as f64 / total as f64
            ));
        }
        parts.join("; ")
    }
}

/// The one-minute load average.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// All CPU time and stolen CPU time so far, from `/proc/stat`'s `cpu` line:
/// user nice system idle iowait irq softirq steal, in clock ticks.
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
        steal: ticks[7],
    })
}

pub fn print_table(rows: &[Row], rounds: u32, machine: &Machine) {
    println!();
    println!(
        "Medians of {rounds} alternating runs; ratio = solution / peer (higher is better); \
         rounds = the lowest and highest ratio of one round."
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
                highest: 2.0
            }
        );
        assert_eq!(ratio.shown(), "1.50");
        assert_eq!(ratio.range(), "0.50 to 2.00");
    }

    #[test]
    fn rounds_that_agree_show_one_number() {
        let ratio = Ratio::of(&[2.0, 2.0], &[1.0, 1.0]).unwrap();
        assert_eq!(ratio.range(), "2.00");
    }

    #[test]
    fn no_round_of_the_peer_is_no_ratio() {
        assert_eq!(Ratio::of(&[2.0], &[]), None);
    }

    #[test]
    fn this_machine_has_a_summary() {
        let summary = Machine::now().summary();
        assert!(summary.contains("CPUs"), "{summary}");
        if cfg!(target_os = "linux") {
            assert!(summary.contains("load average"), "{summary}");
            assert!(summary.contains("steal"), "{summary}");
        }
    }
}
