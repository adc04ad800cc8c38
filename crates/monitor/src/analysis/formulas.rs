//! The analysis formulas, as pure functions (docs/analysis.md explains each
//! one and why it was chosen).

use std::collections::BTreeMap;

use orchex_core::Hotspot;

pub use orchex_core::analysis::{HALF_COMPLEXITY_INDENT, Indentation, SPACES_PER_LEVEL};

/// Weights of complexity, chaos and hotspot concentration in the health
/// score; they add up to 1.
pub const HEALTH_WEIGHTS: (f64, f64, f64) = (0.5, 0.3, 0.2);

fn lines_f64(n: u64) -> f64 {
    // Precision loss above 2^53 lines is irrelevant here.
    #[allow(clippy::cast_precision_loss)]
    let value = n as f64;
    value
}

/// Repository complexity: the line-weighted mean of the file scores,
/// `Σ n_f c_f / Σ n_f` (0 without code).
pub fn repository_complexity<'a>(files: impl IntoIterator<Item = &'a Indentation>) -> f64 {
    let (weighted, lines) = files
        .into_iter()
        .fold((0.0, 0.0), |(weighted, lines), file| {
            let n = lines_f64(file.lines);
            (weighted + n * file.complexity(), lines + n)
        });
    if lines == 0.0 { 0.0 } else { weighted / lines }
}

/// Normalised change entropy (Hassan, 2009): with `k_f` the commits that
/// touched file `f` in the window, `p_f = k_f / Σ k`,
/// `H = −Σ p_f log2 p_f`, and the score `H / log2 N`, where `N` is the
/// number of files in the repository (at least the number of distinct
/// changed files). 0 when fewer than two files or no change.
///
/// ```
/// use std::collections::BTreeMap;
/// use orchex_monitor::analysis::formulas::change_entropy;
/// let even: BTreeMap<String, u64> = ["a", "b", "c", "d"].map(|f| (f.to_owned(), 3)).into();
/// assert!((change_entropy(&even, 4) - 1.0).abs() < 1e-12);
/// assert!((change_entropy(&even, 16) - 0.5).abs() < 1e-12);
/// let one: BTreeMap<String, u64> = [("a".to_owned(), 9)].into();
/// assert_eq!(change_entropy(&one, 16), 0.0);
/// ```
pub fn change_entropy(per_file: &BTreeMap<String, u64>, n_files: u64) -> f64 {
    let total: u64 = per_file.values().sum();
    let n = n_files.max(per_file.len() as u64);
    if total == 0 || n < 2 {
        return 0.0;
    }
    let total = lines_f64(total);
    let entropy: f64 = per_file
        .values()
        .filter(|&&k| k > 0)
        .map(|&k| {
            let p = lines_f64(k) / total;
            -p * p.log2()
        })
        .sum();
    (entropy / lines_f64(n).log2()).clamp(0.0, 1.0)
}

/// Hotspots: every measured file changed in the window, scored
/// `(k_f / k_max) × (I_f / I_max)` (change frequency times total
/// indentation, both relative to the largest candidate), highest first,
/// ties by path, at most `top_n`.
pub fn hotspots(
    per_file: &BTreeMap<String, u64>,
    measured: &BTreeMap<String, Indentation>,
    top_n: usize,
) -> Vec<Hotspot> {
    let candidates: Vec<(&String, u64, &Indentation)> = per_file
        .iter()
        .filter(|&(_, &k)| k > 0)
        .filter_map(|(path, &k)| measured.get(path).map(|m| (path, k, m)))
        .collect();
    let k_max = candidates.iter().map(|c| c.1).max().unwrap_or(0);
    let i_max = candidates.iter().map(|c| c.2.total).fold(0.0, f64::max);
    if k_max == 0 {
        return Vec::new();
    }
    let mut spots: Vec<Hotspot> = candidates
        .into_iter()
        .map(|(path, k, m)| Hotspot {
            path: path.clone(),
            changes: k,
            complexity: m.complexity(),
            score: if i_max > 0.0 {
                lines_f64(k) / lines_f64(k_max) * (m.total / i_max)
            } else {
                0.0
            },
        })
        .collect();
    spots.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.path.cmp(&b.path))
    });
    spots.truncate(top_n);
    spots
}

/// Hotspot concentration: the complexity-weighted share of all changes in
/// the window that landed in the hotspots, `Σ_{hotspots} k_f c_f / Σ k`.
pub fn hotspot_concentration(per_file: &BTreeMap<String, u64>, spots: &[Hotspot]) -> f64 {
    let total: u64 = per_file.values().sum();
    if total == 0 {
        return 0.0;
    }
    let weighted: f64 = spots
        .iter()
        .map(|spot| lines_f64(spot.changes) * spot.complexity)
        .sum();
    (weighted / lines_f64(total)).clamp(0.0, 1.0)
}

/// Health: `1 − (0.5 complexity + 0.3 chaos + 0.2 concentration)`,
/// clamped to [0, 1]; 1 is best.
///
/// ```
/// use orchex_monitor::analysis::formulas::health;
/// assert_eq!(health(0.0, 0.0, 0.0), 1.0);
/// assert!((health(0.5, 0.5, 0.5) - 0.5).abs() < 1e-12);
/// ```
pub fn health(complexity: f64, chaos: f64, concentration: f64) -> f64 {
    let (wc, wx, ws) = HEALTH_WEIGHTS;
    (1.0 - (wc * complexity + wx * chaos + ws * concentration)).clamp(0.0, 1.0)
}

#[cfg(test)]
#[allow(clippy::float_cmp)]
mod tests {
    use super::*;

    #[test]
    fn file_complexity_is_half_at_one_level() {
        let m = Indentation::measure(b"    a\n    b\n");
        assert!((m.complexity() - 0.5).abs() < 1e-12);
        assert_eq!(Indentation::measure(b"a\nb\n").complexity(), 0.0);
        assert_eq!(Indentation::measure(b"\n \n").lines, 0);
    }

    #[test]
    fn repository_complexity_weights_by_lines() {
        let flat = Indentation {
            lines: 3,
            total: 0.0,
            max: 0.0,
        };
        let nested = Indentation {
            lines: 1,
            total: 1.0,
            max: 1.0,
        };
        // (3 * 0 + 1 * 0.5) / 4
        assert!((repository_complexity([&flat, &nested]) - 0.125).abs() < 1e-12);
        assert_eq!(repository_complexity([]), 0.0);
    }

    #[test]
    fn entropy_of_an_uneven_distribution() {
        let per_file: BTreeMap<String, u64> = [("a".to_owned(), 3), ("b".to_owned(), 1)].into();
        let h = -(0.75f64 * 0.75f64.log2() + 0.25 * 0.25f64.log2());
        assert!((change_entropy(&per_file, 2) - h).abs() < 1e-12);
        assert!((change_entropy(&per_file, 4) - h / 2.0).abs() < 1e-12);
    }

    #[test]
    fn hotspots_rank_by_frequency_times_indentation() {
        let per_file: BTreeMap<String, u64> = [
            ("hot.rs".to_owned(), 10),
            ("cold.rs".to_owned(), 1),
            ("flat.rs".to_owned(), 10),
            ("deleted.rs".to_owned(), 50),
        ]
        .into();
        let measured: BTreeMap<String, Indentation> = [
            (
                "hot.rs".to_owned(),
                Indentation {
                    lines: 10,
                    total: 20.0,
                    max: 3.0,
                },
            ),
            (
                "cold.rs".to_owned(),
                Indentation {
                    lines: 10,
                    total: 20.0,
                    max: 3.0,
                },
            ),
            (
                "flat.rs".to_owned(),
                Indentation {
                    lines: 10,
                    total: 0.0,
                    max: 0.0,
                },
            ),
        ]
        .into();
        let spots = hotspots(&per_file, &measured, 2);
        assert_eq!(spots.len(), 2);
        assert_eq!(spots[0].path, "hot.rs");
        assert!((spots[0].score - 1.0).abs() < 1e-12);
        assert_eq!(spots[1].path, "cold.rs");
        assert!((spots[1].score - 0.1).abs() < 1e-12);
        // Concentration: (10 * 2/3 + 1 * 2/3) / 71
        let c = hotspot_concentration(&per_file, &spots);
        assert!((c - (11.0 * (2.0 / 3.0)) / 71.0).abs() < 1e-12);
    }
}
