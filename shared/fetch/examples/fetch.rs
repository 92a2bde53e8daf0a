//! Fetches models by name (default: every known model) into the cache and prints their paths.
//!
//! `cargo run --release -p hlm-fetch --example fetch -- [NAME | PATH | URL]...`

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<String> = if args.is_empty() {
        hlm_fetch::MODELS
            .iter()
            .map(|m| m.name.to_string())
            .collect()
    } else {
        args
    };
    let mut failed = false;
    for name in names {
        let t = Instant::now();
        let mut last_stage = String::new();
        let r = hlm_fetch::resolve(&name, &mut |p| {
            // One line per stage change, plus the byte counts while unpacking.
            if p.stage != last_stage || p.done == p.total {
                eprintln!("  {} ({} / {} MB)", p.stage, p.done >> 20, p.total >> 20);
                last_stage = p.stage;
            }
        });
        match r {
            Ok(path) => println!(
                "{name}: {} ({:.1} s)",
                path.display(),
                t.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("{name}: error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
