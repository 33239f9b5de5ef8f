//! A bounded fuzz run of every target, part of `cargo xtask test`: a fixed seed, twenty
//! thousand inputs each, and no panic allowed. (`cargo xtask fuzz` runs longer.)
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

#[test]
fn every_parser_survives_a_smoke_run() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let targets = ferrohsm_fuzz::targets(&runtime).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for target in &targets {
        let mut rng = ferrohsm_fuzz::Rng::new(0x5eed ^ target.name.len() as u64);
        if let Some(finding) = ferrohsm_fuzz::fuzz(target, &mut rng, 20_000) {
            let path = ferrohsm_fuzz::save(&root, &finding).unwrap();
            panic!("{}: {} (input saved at {})", finding.target, finding.message, path.display());
        }
    }
    assert_eq!(targets.len(), 6);
}

/// The mutation engine really mutates: from one seed it reaches many distinct inputs,
/// including ones with multi-byte characters.
#[test]
fn mutations_are_varied() {
    let mut rng = ferrohsm_fuzz::Rng::new(42);
    let seed = b"version = 1\nquorum = \"1h\"\n";
    let inputs: std::collections::HashSet<Vec<u8>> =
        (0..500).map(|_| ferrohsm_fuzz::mutate(&mut rng, seed, b"other")).collect();
    assert!(inputs.len() > 400, "{}", inputs.len());
    assert!(inputs.iter().any(|i| i.windows(2).any(|w| w == "é".as_bytes())));
}

/// A target that panics is caught and reported with its input (the harness can fail).
#[test]
fn a_panicking_target_is_reported() {
    let target = ferrohsm_fuzz::Target {
        name: "bomb",
        seeds: vec![b"ok".to_vec()],
        run: Box::new(|input| {
            if input.contains(&b'!') {
                panic!("boom");
            }
        }),
    };
    let mut rng = ferrohsm_fuzz::Rng::new(7);
    std::panic::set_hook(Box::new(|_| {}));
    let finding = ferrohsm_fuzz::fuzz(&target, &mut rng, 100_000);
    let _ = std::panic::take_hook();
    let finding = finding.unwrap();
    assert_eq!(finding.message, "boom");
    assert!(finding.input.contains(&b'!'));
}
