//! `voltlens bench`: throughput and memory figures that the issues ask for. Benchmarks, not
//! tests: they print numbers and assert nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::ingest::{ingest, synthesize, IngestOptions};
use crate::data::synth::SynthConfig;
use crate::{Error, Result};

/// One measured figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

fn figure(name: &str, value: f64, unit: &str) -> Figure {
    Figure { name: name.to_owned(), value, unit: unit.to_owned() }
}

/// Peak resident memory of this process so far (MB), from /proc (Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Writes a BatteryArchive-style CSV of `rows` rows of a 5 Ah cell cycling at 1C, streamed.
pub fn write_synthetic_csv(path: &Path, rows: usize) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let io = |e| Error::io(path, e);
    writeln!(w, "Date_Time,Test_Time (s),Cycle_Index,Current (A),Voltage (V),Charge_Capacity (Ah),Discharge_Capacity (Ah),Cell_Temperature (C)").map_err(io)?;
    let period = 720; // rows per half cycle at 5 s: one hour
    let (mut qc, mut qd) = (0.0f64, 0.0f64);
    for r in 0..rows {
        let t = r as f64 * 5.0;
        let half = r / period;
        let k = (r % period) as f64 / period as f64;
        let (i, v) = if half % 2 == 0 { (-5.0, 4.1 - 0.9 * k) } else { (5.0, 3.2 + 0.9 * k) };
        if i > 0.0 { qc += i * 5.0 / 3600.0 } else { qd -= i * 5.0 / 3600.0 }
        writeln!(w, ",{t:.1},{},{i:.4},{v:.5},{qc:.5},{qd:.5},25.0", half / 2 + 1).map_err(io)?;
    }
    w.flush().map_err(io)
}

fn time_ingest(name: &str, inputs: &[PathBuf], rows_hint: Option<u64>, out: &Path, opts: &IngestOptions) -> Result<Vec<Figure>> {
    let t0 = Instant::now();
    let cells = ingest(inputs, out, opts)?;
    let seconds = t0.elapsed().as_secs_f64();
    let rows = rows_hint.unwrap_or_else(|| cells.iter().map(|c| c.rows).sum());
    Ok(vec![figure(&format!("ingest {name}"), rows as f64 / seconds, "rows/s"), figure(&format!("ingest {name} time"), seconds, "s")])
}

/// Data-layer figures: ingest throughput on a real Maccor file and on a large synthetic CSV,
/// peak memory of the latter, and synth throughput.
/// `work_dir` is scratch, removed afterwards; a non-empty folder VoltLens did not write is refused.
pub fn bench_data(maccor: Option<&Path>, csv_rows: usize, work_dir: &Path) -> Result<Vec<Figure>> {
    crate::io::fresh_owned_dir(work_dir)?;
    let figures = data_figures(maccor, csv_rows, work_dir);
    std::fs::remove_dir_all(work_dir).map_err(|e| Error::io(work_dir, e))?;
    figures
}

fn data_figures(maccor: Option<&Path>, csv_rows: usize, work_dir: &Path) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let csv = work_dir.join("bench-cell_timeseries.csv");
    write_synthetic_csv(&csv, csv_rows)?;
    let before = peak_rss_mb().unwrap_or(f64::NAN);
    let opts = IngestOptions { nominal_capacity_ah: Some(5.0), ..IngestOptions::default() };
    figures.extend(time_ingest(&format!("{csv_rows}-row CSV"), &[csv.clone()], Some(csv_rows as u64), &work_dir.join("csv-out"), &opts)?);
    figures.push(figure("peak RSS before CSV ingest", before, "MB"));
    figures.push(figure("peak RSS after CSV ingest", peak_rss_mb().unwrap_or(f64::NAN), "MB"));
    std::fs::remove_file(&csv).map_err(|e| Error::io(&csv, e))?;
    if let Some(maccor) = maccor {
        // Repeat the small file so the timing is not dominated by start-up.
        let mut best = Vec::new();
        for _ in 0..3 {
            best.push(time_ingest("Maccor", &[maccor.to_path_buf()], None, &work_dir.join("maccor-out"), &IngestOptions::default())?);
        }
        best.sort_by(|a, b| a[0].value.total_cmp(&b[0].value));
        figures.extend(best.swap_remove(1));
    }
    let cfg = SynthConfig { cells: 8, ..SynthConfig::default() };
    let t0 = Instant::now();
    let cells = synthesize(&cfg, &work_dir.join("synth-out"))?;
    let rows: u64 = cells.iter().map(|c| c.rows).sum();
    figures.push(figure("synth + derive + write (8 cells)", rows as f64 / t0.elapsed().as_secs_f64(), "rows/s"));
    Ok(figures)
}

pub fn print(figures: &[Figure]) {
    for f in figures {
        println!("{:<45} {:>14.1} {}", f.name, f.value, f.unit);
    }
}
