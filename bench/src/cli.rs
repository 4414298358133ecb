//! Modes and arguments: `BENCH_QUICK`, `--name value`, the build being measured.

use std::path::{Path, PathBuf};

/// `BENCH_QUICK=1`: the reduced run (under two minutes in all).
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `--name VALUE` from the command line, parsed; `default` when absent.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == format!("--{name}"))
        .map(|w| {
            w[1].parse()
                .unwrap_or_else(|_| panic!("--{name} {}: not a valid value", w[1]))
        })
        .unwrap_or(default)
}

/// The command that produced a figure, as someone would type it again.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let bin = args
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map_or(a.clone(), |f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let quick = if quick() { "BENCH_QUICK=1 " } else { "" };
    let build = match build_profile().as_str() {
        "release" => "--release".to_owned(),
        "bench-quick" => "--profile bench-quick --no-default-features".to_owned(),
        other => format!("--profile {other}"),
    };
    format!(
        "{quick}cargo run {build} -p bench --bin {bin}{}{}",
        if rest.is_empty() { "" } else { " -- " },
        rest.join(" ")
    )
}

/// The directory the running bench binary was built into: `release` for `make bench`,
/// `bench-quick` for `BENCH_QUICK=1 make bench`. The server under test is its sibling.
pub(crate) fn build_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| integration_tests::target_dir().join("release"))
}

/// The Cargo profile the bench binary (and so the server beside it) was built with.
pub fn build_profile() -> String {
    build_dir()
        .file_name()
        .map_or_else(|| "release".into(), |n| n.to_string_lossy().into_owned())
}
