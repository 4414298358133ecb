//! Statistics, figures and the raw result files `bench/report.py` reads.

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::{Value, json};

use crate::{build_profile, command_line, quick, rfc3339};

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    assert!(!sorted.is_empty(), "percentile of nothing");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sort_f64(v: &mut [f64]) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
}

/// One measured figure, with its bar and verdict (`pass: None` when there is no bar).
pub struct Figure {
    pub id: &'static str,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    pub bar: String,
    pub pass: Option<bool>,
}

impl Figure {
    pub fn new(id: &'static str, label: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            id,
            label: label.into(),
            value,
            unit,
            bar: String::new(),
            pass: None,
        }
    }

    /// Passes when `value >= min`.
    pub fn at_least(mut self, min: f64) -> Self {
        self.bar = format!("≥ {}", fmt_num(min));
        self.pass = Some(self.value >= min);
        self
    }

    /// Passes when `value <= max`.
    pub fn at_most(mut self, max: f64) -> Self {
        self.bar = format!("≤ {}", fmt_num(max));
        self.pass = Some(self.value <= max);
        self
    }

    /// A yes/no check (value 1 or 0).
    pub fn check(id: &'static str, label: impl Into<String>, ok: bool) -> Self {
        Self {
            id,
            label: label.into(),
            value: if ok { 1.0 } else { 0.0 },
            unit: "bool",
            bar: "yes".into(),
            pass: Some(ok),
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "figure": self.label, "value": self.value, "unit": self.unit,
            "bar": self.bar, "pass": self.pass,
        })
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Where results go: `$BENCH_RESULTS`, else `bench/results`.
pub fn results_dir() -> PathBuf {
    std::env::var_os("BENCH_RESULTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
        PathBuf::from,
    )
}

/// The commit being measured, and whether the work tree differs from it (the results being
/// written aside): recorded with each benchmark's figures, since a report may be rebuilt later.
fn measured_commit() -> (Option<String>, Option<bool>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"]);
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "..",
        ":!results",
    ])
    .map(|changes| !changes.is_empty());
    (head, dirty)
}

/// Writes `results/raw/<name>.json` (figures, parameters, series for the plots), prints
/// the figures, and fails if a yes/no check failed.
pub fn write_results(
    name: &str,
    params: Value,
    figures: &[Figure],
    series: Value,
) -> anyhow::Result<()> {
    let dir = results_dir().join("raw");
    std::fs::create_dir_all(&dir)?;
    let (commit, dirty) = measured_commit();
    let doc = json!({
        "benchmark": name,
        "command": command_line(),
        "quick": quick(),
        "profile": build_profile(),
        "commit": commit,
        "dirty": dirty,
        "finished_at": rfc3339(Utc::now()),
        "params": params,
        "figures": figures.iter().map(Figure::json).collect::<Vec<_>>(),
        "series": series,
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    for f in figures {
        let verdict = match f.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "",
        };
        println!(
            "{name:>10}  {:<58} {:>12.3} {:<6} {:<10} {verdict}",
            f.label, f.value, f.unit, f.bar
        );
    }
    println!("{name:>10}  wrote {}", path.display());
    // A missed bar is a result; a failed correctness check (lost or duplicated deliveries,
    // a 201 not on disk) is an error.
    let broken: Vec<&str> = figures
        .iter()
        .filter(|f| f.unit == "bool" && f.pass == Some(false))
        .map(|f| f.id)
        .collect();
    anyhow::ensure!(broken.is_empty(), "{name}: checks failed: {broken:?}");
    Ok(())
}
