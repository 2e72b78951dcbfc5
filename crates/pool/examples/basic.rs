//! The lesson's first pool, as `basic.py` has it; prints `5` then `[2, 3, 4]`.

use std::io::Write;

use hpcbox_pool::Pool;

fn addit(x: i64) -> i64 {
    x + 1
}

/// Writes what `basic.py` prints (kept apart from `main` so a test can check the exact text).
pub fn run(out: &mut dyn Write) -> Result<(), Box<dyn std::error::Error>> {
    writeln!(out, "{}", addit(4))?;
    let p = Pool::new(2)?; // with Pool(2) as p:
    writeln!(out, "{:?}", p.map(addit, vec![1, 2, 3])?)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(&mut std::io::stdout())
}
