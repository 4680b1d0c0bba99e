//! Where a build's time goes: Helix's phases of a job beside the same
//! steps done by hand, as a table of medians.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use helix_build::job::{Phase, PhaseName};

/// Steps done by hand, each timed and named as the Helix phase it
/// matches (`git clone` is a checkout), and how long they all took.
#[derive(Debug, Clone)]
pub struct ByHand {
    started: Instant,
    pub steps: Vec<(PhaseName, Duration)>,
    pub total: Duration,
}

impl ByHand {
    /// Starts the clock, once the machine is [`super::settle`]d.
    pub fn start() -> Self {
        super::settle();
        ByHand {
            started: Instant::now(),
            steps: Vec::new(),
            total: Duration::ZERO,
        }
    }

    /// Times `step` as phase `name`.
    pub fn step<T>(&mut self, name: PhaseName, step: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let done = step();
        self.steps.push((name, started.elapsed()));
        done
    }

    /// [`ByHand::step`] of a future.
    pub async fn step_async<T>(&mut self, name: PhaseName, step: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let done = step.await;
        self.steps.push((name, started.elapsed()));
        done
    }

    /// Ends the timing: the whole run, steps and all between them.
    pub fn finish(mut self) -> Self {
        self.total = self.started.elapsed();
        self
    }
}

/// Prints, for `builder` in `scenario`, the median of each Helix phase
/// over the jobs `helix` (their phases) beside the median of the same
/// step done by hand in `hand`, called `hand_name`.
pub fn print_phase_table(
    scenario: &str,
    builder: &str,
    helix: &[Vec<Phase>],
    hand_name: &str,
    hand: &[ByHand],
) {
    let mut by_phase: BTreeMap<PhaseName, Vec<u64>> = BTreeMap::new();
    for phases in helix {
        for phase in phases {
            by_phase.entry(phase.name).or_default().push(phase.ms);
        }
    }
    let mut by_hand: BTreeMap<PhaseName, Vec<u64>> = BTreeMap::new();
    for run in hand {
        for (name, took) in &run.steps {
            by_hand
                .entry(*name)
                .or_default()
                .push(took.as_millis() as u64);
        }
    }
    let median = |samples: Option<&Vec<u64>>| {
        samples
            .filter(|s| !s.is_empty())
            .map_or("-".to_string(), |samples| {
                let mut samples = samples.clone();
                samples.sort();
                samples[samples.len() / 2].to_string()
            })
    };
    println!("{scenario}, {builder}: phases, medians in ms (Helix | {hand_name} by hand)");
    for name in PhaseName::ALL {
        if by_phase.contains_key(&name) || by_hand.contains_key(&name) {
            println!(
                "  {:<15} {:>7} | {:>7}",
                name.as_str(),
                median(by_phase.get(&name)),
                median(by_hand.get(&name))
            );
        }
    }
    let runs: Vec<u64> = helix
        .iter()
        .map(|phases| {
            phases
                .iter()
                .filter(|p| p.name != PhaseName::QueueWait)
                .map(|p| p.ms)
                .sum()
        })
        .collect();
    let totals: Vec<u64> = hand.iter().map(|h| h.total.as_millis() as u64).collect();
    println!(
        "  {:<15} {:>7} | {:>7}",
        "run (no queue)",
        median(Some(&runs)),
        median(Some(&totals))
    );
}
