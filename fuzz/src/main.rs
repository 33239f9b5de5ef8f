//! `ferrohsm-fuzz [SECONDS] [TARGET]`: fuzzes every target (or one) for a while with a fresh
//! seed, printing progress; a panic is saved under `target/fuzz/crashes` and ends the run
//! with exit code 1. `cargo xtask fuzz` runs it in release.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose().context("SECONDS")?.unwrap_or(60);
    let only = args.next();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let targets = ferrohsm_fuzz::targets(&runtime)?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let root = std::env::current_dir()?;
    let chosen: Vec<_> =
        targets.iter().filter(|t| only.as_deref().is_none_or(|o| o == t.name)).collect();
    if chosen.is_empty() {
        bail!("no target named {only:?}");
    }
    // Silence the default panic output; findings are reported below.
    std::panic::set_hook(Box::new(|_| {}));
    let share = Duration::from_secs(seconds) / chosen.len() as u32;
    println!("seed {seed}; {} targets, {share:?} each", chosen.len());
    for target in chosen {
        let mut rng = ferrohsm_fuzz::Rng::new(seed ^ target.name.len() as u64);
        let start = Instant::now();
        let mut runs = 0usize;
        while start.elapsed() < share {
            if let Some(finding) = ferrohsm_fuzz::fuzz(target, &mut rng, 1000) {
                let path = ferrohsm_fuzz::save(&root, &finding)?;
                bail!(
                    "{}: panic ({}) on the input saved at {}",
                    finding.target,
                    finding.message,
                    path.display()
                );
            }
            runs += 1000;
        }
        println!("{:16} {runs:>9} inputs, no panic", target.name);
    }
    Ok(())
}
