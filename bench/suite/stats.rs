//! The arithmetic of the report: medians over runs and the cost slope.

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when there are none. NaNs sort last and are best kept out.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The least-squares slope of `y` over `x`; `None` with fewer than two
/// distinct `x`.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<_> = [1.0, 4.0, 16.0, 64.0]
            .iter()
            .map(|&x| (x, 50.0 + 10.0 * x))
            .collect();
        assert!((slope(&line).unwrap() - 10.0).abs() < 1e-9);
        let noisy = [(1.0, 61.0), (4.0, 89.0), (16.0, 211.0), (64.0, 689.0)];
        let s = slope(&noisy).unwrap();
        assert!((9.5..10.5).contains(&s), "{s}");
        assert_eq!(slope(&[(2.0, 1.0), (2.0, 5.0)]), None);
        assert_eq!(slope(&[]), None);
    }
}
