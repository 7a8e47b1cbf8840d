//! The memory limit: estimates of what a plan, a run or a training needs, checked before
//! anything that large is allocated, so that an absurd size is an error naming the quantity,
//! the estimate and the limit instead of an abort on a failed allocation. The limit defaults to
//! 80 % of the machine's memory and can be set per process (`--max-memory`).

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Set the memory limit of this process in bytes (0: the default, 80 % of the machine's).
pub fn set_memory_limit(bytes: u64) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The memory limit in bytes.
pub fn memory_limit() -> u64 {
    match LIMIT.load(Ordering::Relaxed) {
        0 => machine_memory() / 5 * 4,
        n => n,
    }
}

/// The machine's memory (`MemTotal` of /proc/meminfo; 8 GiB where that cannot be read), read
/// once per process: every run and training batch checks its estimates against it.
pub fn machine_memory() -> u64 {
    static TOTAL: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| proc_bytes("/proc/meminfo", "MemTotal:").unwrap_or(8 << 30))
}

/// The most memory this process has held so far (its resident high-water mark, Linux's
/// `VmHWM`), if the system says.
pub fn peak_resident() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmHWM:")
}

/// The bytes of the line `key` of a `/proc` file that gives sizes in kB (`MemTotal:  24 kB`).
fn proc_bytes(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// An error if `bytes` (what `quantity` needs) exceed the limit.
pub fn check(quantity: impl FnOnce() -> String, bytes: u64) -> Result<()> {
    check_within(quantity, bytes, memory_limit())
}

/// Bytes a compiled synapse takes when a network runs: its program's synapse and fixed-point
/// weight (12), the same again where a wave or a system run is fused into one program (12),
/// and a backend's copy of the weight (at most 4; more for a wide dense layer of an odd number
/// of neurons, its blocks padded to 16, 64 or 128). Which model weight a synapse realises is
/// kept as runs, not per synapse. The network's own weights (f32) come on top.
pub const COMPILED_BYTES_PER_SYNAPSE: u64 = 28;

/// An error if `bytes` (what `quantity` needs) exceed `limit` (a share of the process's).
pub fn check_within(quantity: impl FnOnce() -> String, bytes: u64, limit: u64) -> Result<()> {
    if bytes > limit {
        return Err(Error::Memory {
            quantity: quantity(),
            needed: bytes,
            limit,
        });
    }
    Ok(())
}

/// `a · b · ...` in bytes, saturating (an estimate that overflows is over any limit).
pub fn product(factors: &[u64]) -> u64 {
    factors.iter().fold(1u64, |a, &b| a.saturating_mul(b))
}

/// Parse a size like `512M`, `16G`, `1.5T` or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((t, ""), |k| t.split_at(k));
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(Error::option(
                "--max-memory",
                text,
                "a size such as 512M, 16G or 1T",
            ))
        }
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok((v * scale as f64) as u64),
        _ => Err(Error::option(
            "--max-memory",
            text,
            "a positive size such as 512M, 16G or 1T",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_limits_name_the_quantity() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("16GiB").unwrap(), 16 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("-1G").is_err() && parse_size("12Q").is_err());
        assert!(machine_memory() > 1 << 20);
        // This test's own process holds its code and the test harness at least.
        if cfg!(target_os = "linux") {
            let peak = peak_resident().expect("Linux says");
            assert!(peak > 1 << 20 && peak < machine_memory(), "{peak}");
        }
        let e = check(|| "the spikes".into(), u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the spikes") && e.contains("memory limit"),
            "{e}"
        );
    }
}
