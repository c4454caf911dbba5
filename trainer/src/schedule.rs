//! Schedules over the run: the "poly" learning rate lr (1 - t/N)^0.9 (paper Sec. 4.1.2),
//! the contrastive weight mu(t) = mu_max exp(-5 (1 - t/t_max)^0.5) of Eq. 9 (paper
//! Sec. 4.1.2, a sigmoid-shaped ramp-up), and the EMA coefficient
//! alpha(t) = min(1 - 1/(t+1), alpha_max) of Eq. 2 / Eq. 10. `t` is the 0-based index of
//! the iteration being run and N the number of iterations. An optional linear warm-up
//! (DAFormer) scales the rate over the first W iterations.

/// Poly learning rate at iteration `t` of `total`.
pub(crate) fn poly_lr(base: f64, t: u64, total: u64, power: f64) -> f64 {
    let frac = 1.0 - (t as f64 / total.max(1) as f64).min(1.0);
    base * frac.powf(power)
}

/// The linear warm-up's factor of the rate at iteration `t` (DAFormer, mmcv's `linear`
/// warm-up): 1 - (1 - t / W)(1 - ratio) for t < W, 1 after; W = 0 is no warm-up.
pub(crate) fn warmup_factor(t: u64, warmup_iters: u64, ratio: f64) -> f64 {
    if t >= warmup_iters {
        return 1.0;
    }
    1.0 - (1.0 - t as f64 / warmup_iters as f64) * (1.0 - ratio)
}

/// mu(t) = mu_max exp(-5 (1 - t/t_max)^0.5), clamped to mu_max after t_max.
pub fn mu(mu_max: f64, t: u64, t_max: u64) -> f64 {
    let r = (t as f64 / t_max.max(1) as f64).min(1.0);
    mu_max * (-5.0 * (1.0 - r).sqrt()).exp()
}

/// mu(t) under `schedule`: the paper's ramp-up, or mu_max throughout.
pub(crate) fn mu_at(schedule: crate::config::MuSchedule, mu_max: f64, t: u64, t_max: u64) -> f64 {
    match schedule {
        crate::config::MuSchedule::Paper => mu(mu_max, t, t_max),
        crate::config::MuSchedule::Constant => mu_max,
    }
}

/// alpha(t) = min(1 - 1/(t+1), alpha_max): 0 at t = 0, so the first update copies.
pub(crate) fn ema_alpha(t: u64, alpha_max: f64) -> f64 {
    (1.0 - 1.0 / (t as f64 + 1.0)).min(alpha_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn poly_at_known_points() {
        // Hand-computed: 2.5e-4 * 0.5^0.9 = 2.5e-4 * 0.535886731... = 1.33971683e-4.
        assert!(close(poly_lr(2.5e-4, 0, 100, 0.9), 2.5e-4));
        assert!((poly_lr(2.5e-4, 50, 100, 0.9) - 1.339_716_83e-4).abs() < 1e-12);
        // 0.75^0.9 = 0.7718895...: 1e-2 * 0.7718895 at t = N/4.
        assert!((poly_lr(1e-2, 25, 100, 0.9) - 7.718_895e-3).abs() < 1e-9);
        assert_eq!(poly_lr(2.5e-4, 100, 100, 0.9), 0.0);
    }

    #[test]
    fn mu_at_known_points() {
        // t = 0: 0.01 e^-5 = 6.737947e-5; t = t_max: 0.01; t = 3/4 t_max: 0.01 e^-2.5.
        assert!((mu(0.01, 0, 1000) - 6.737_946_999e-5).abs() < 1e-13);
        assert!(close(mu(0.01, 1000, 1000), 0.01));
        assert!((mu(0.01, 750, 1000) - 8.208_499_862e-4).abs() < 1e-12);
    }

    #[test]
    fn alpha_at_known_points() {
        assert_eq!(ema_alpha(0, 0.99), 0.0);
        assert_eq!(ema_alpha(1, 0.99), 0.5);
        assert!(close(ema_alpha(9, 0.99), 0.9));
        assert_eq!(ema_alpha(1000, 0.99), 0.99);
    }

    #[test]
    fn warmup_is_linear_from_the_ratio_to_one() {
        // W = 4, ratio 0.2: t = 0 -> 0.2, t = 2 -> 1 - 0.5 * 0.8 = 0.6, t >= 4 -> 1.
        assert!(close(warmup_factor(0, 4, 0.2), 0.2));
        assert!(close(warmup_factor(2, 4, 0.2), 0.6));
        assert!(close(warmup_factor(4, 4, 0.2), 1.0));
        assert!(close(warmup_factor(9, 0, 0.2), 1.0));
    }
}
