//! L_cont (paper Eq. 4-8) against a brute-force, loop-by-loop f64 implementation written
//! straight from the equations: every sampling strategy on and off, with and without
//! the memory bank, several chunk sizes; and its gradient against central finite
//! differences of the brute force (through the L2 normalisation of the projector).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rccr_models::projector::l2_normalize;
use rccr_trainer::contrastive::{
    contrastive_loss, random_keep, ContrastiveInputs, ContrastiveLoss,
};
use tch::{Kind, Tensor};

const B: usize = 2;
const H: usize = 3;
const W: usize = 4;
const K: usize = 5;
const N: usize = B * H * W;

/// Raw (unnormalised) data of one problem, in plain Vecs.
#[derive(Clone)]
struct Problem {
    /// B x K x H x W, row-major.
    cut: Vec<f64>,
    t: Vec<f64>,
    cut_lab: Vec<i64>,
    t_lab: Vec<i64>,
    anchors: Vec<bool>,
    bank: Vec<(Vec<f64>, i64)>,
}

fn vec_at(data: &[f64], loc: usize) -> Vec<f64> {
    let (b, rest) = (loc / (H * W), loc % (H * W));
    let (i, j) = (rest / W, rest % W);
    (0..K)
        .map(|k| data[((b * K + k) * H + i) * W + j])
        .collect()
}

fn cos(u: &[f64], v: &[f64]) -> f64 {
    let dot: f64 = u.iter().zip(v).map(|(a, b)| a * b).sum();
    let nu = u.iter().map(|a| a * a).sum::<f64>().sqrt();
    let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    dot / (nu * nv)
}

/// Eq. 4-8, one anchor at a time.
fn brute(p: &Problem, keep: Option<&[i64]>, category: bool, bank: bool, tau: f64) -> f64 {
    let mut total = 0.0;
    let mut count = 0;
    for a in 0..N {
        if !p.anchors[a] {
            continue; // Phi = 0
        }
        let u = vec_at(&p.cut, a);
        let pos = (cos(&u, &vec_at(&p.t, a)) / tau).exp();
        let mut delta = 0.0;
        for j in 0..2 * N {
            if let Some(k) = keep {
                if !k.contains(&(j as i64)) {
                    continue; // NS(R)
                }
            }
            let (loc, data, labels) = if j < N {
                (j, &p.cut, &p.cut_lab)
            } else {
                (j - N, &p.t, &p.t_lab)
            };
            if loc == a {
                continue; // Omega
            }
            if category && labels[loc] == p.cut_lab[a] {
                continue; // NS(C)
            }
            delta += (cos(&u, &vec_at(data, loc)) / tau).exp();
        }
        if bank {
            for (v, l) in &p.bank {
                if category && *l == p.cut_lab[a] {
                    continue;
                }
                delta += (cos(&u, v) / tau).exp();
            }
        }
        total += -(pos / (pos + delta)).ln();
        count += 1;
    }
    total / count as f64
}

fn problem(seed: u64) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut g = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let cut = g(N * K);
    let t = g(N * K);
    let bank_vecs: Vec<Vec<f64>> = (0..10).map(|_| g(K)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    let lab = |rng: &mut ChaCha8Rng| {
        if rng.gen_bool(0.1) {
            255
        } else {
            rng.gen_range(0..4)
        }
    };
    let cut_lab: Vec<i64> = (0..N).map(|_| lab(&mut rng)).collect();
    let t_lab: Vec<i64> = (0..N).map(|_| rng.gen_range(0..4)).collect();
    let anchors: Vec<bool> = (0..N).map(|_| rng.gen_bool(0.4)).collect();
    let bank = bank_vecs
        .into_iter()
        .map(|v| {
            let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            (v.iter().map(|a| a / n).collect(), rng.gen_range(0..4))
        })
        .collect();
    let mut p = Problem {
        cut,
        t,
        cut_lab,
        t_lab,
        anchors,
        bank,
    };
    // Anchors carry a pseudo-label (never the ignore label), as in training.
    for a in 0..N {
        if p.anchors[a] && p.cut_lab[a] == 255 {
            p.cut_lab[a] = 1;
        }
    }
    p
}

struct Tensors {
    cut_raw: Tensor,
    t: Tensor,
    cut_lab: Tensor,
    t_lab: Tensor,
    anchors: Tensor,
    bank_e: Tensor,
    bank_l: Tensor,
}

fn tensors(p: &Problem) -> Tensors {
    let shape = [B as i64, K as i64, H as i64, W as i64];
    let grid = [B as i64, H as i64, W as i64];
    let bank_flat: Vec<f64> = p.bank.iter().flat_map(|(v, _)| v.clone()).collect();
    let bank_l: Vec<i64> = p.bank.iter().map(|(_, l)| *l).collect();
    Tensors {
        cut_raw: Tensor::from_slice(&p.cut)
            .to_kind(Kind::Float)
            .view(shape)
            .set_requires_grad(true),
        t: l2_normalize(
            &Tensor::from_slice(&p.t).to_kind(Kind::Float).view(shape),
            1,
        ),
        cut_lab: Tensor::from_slice(&p.cut_lab).view(grid),
        t_lab: Tensor::from_slice(&p.t_lab).view(grid),
        anchors: Tensor::from_slice(&p.anchors).view(grid),
        bank_e: Tensor::from_slice(&bank_flat)
            .to_kind(Kind::Float)
            .view([p.bank.len() as i64, K as i64]),
        bank_l: Tensor::from_slice(&bank_l),
    }
}

/// The crate's L_cont of `ts` (tau 0.1), E_cut normalised from `cut_raw`: NS(R) keeps
/// `keep`, NS(C) when `category`, the bank's negatives when `bank`.
fn loss_of(
    ts: &Tensors,
    keep: Option<&[i64]>,
    category: bool,
    bank: bool,
    chunk: usize,
) -> ContrastiveLoss {
    let e_cut = l2_normalize(&ts.cut_raw, 1);
    let keep_t = keep.map(Tensor::from_slice);
    contrastive_loss(&ContrastiveInputs {
        e_cut: &e_cut,
        e_t: &ts.t,
        cut_labels: &ts.cut_lab,
        t_labels: &ts.t_lab,
        anchors: &ts.anchors,
        keep: keep_t.as_ref(),
        bank: bank.then_some((&ts.bank_e, &ts.bank_l)),
        category,
        tau: 0.1,
        chunk,
    })
}

/// [`loss_of`] with its gradient: (loss, anchors, d L / d cut_raw).
fn ours(
    ts: &Tensors,
    keep: Option<&[i64]>,
    category: bool,
    bank: bool,
    chunk: usize,
) -> (f64, i64, Tensor) {
    ts.cut_raw.shallow_clone().zero_grad();
    let out = loss_of(ts, keep, category, bank, chunk);
    out.loss.backward();
    (
        out.loss.double_value(&[]),
        out.anchors,
        ts.cut_raw.grad().copy(),
    )
}

#[test]
fn matches_brute_force_with_every_sampling_combination() {
    for seed in [1u64, 2] {
        let p = problem(seed);
        let ts = tensors(&p);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 7);
        let keep = random_keep(2 * N, 0.5, &mut rng);
        assert_eq!(keep.len(), N, "NS(R) keeps half of the 2Bhw candidates");
        let n_anchors = p.anchors.iter().filter(|&&a| a).count() as i64;
        for ns_r in [false, true] {
            for ns_c in [false, true] {
                for mb in [false, true] {
                    let k = ns_r.then_some(keep.as_slice());
                    let expect = brute(&p, k, ns_c, mb, 0.1);
                    for chunk in [1, 3, 1000] {
                        let (got, anchors, _) = ours(&ts, k, ns_c, mb, chunk);
                        assert_eq!(anchors, n_anchors);
                        assert!(
                            (got - expect).abs() < 1e-4 * expect.abs().max(1.0),
                            "seed {seed} NS(R) {ns_r} NS(C) {ns_c} MB {mb} chunk {chunk}: \
                             {got} vs brute force {expect}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gradient_matches_finite_differences_of_the_brute_force() {
    let p = problem(5);
    let ts = tensors(&p);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let keep = random_keep(2 * N, 0.5, &mut rng);
    for (k, category, bank) in [(None, false, false), (Some(keep.as_slice()), true, true)] {
        let (_, _, grad) = ours(&ts, k, category, bank, 2);
        let grad: Vec<f32> = Vec::try_from(&grad.flatten(0, -1)).unwrap();
        let eps = 1e-5;
        // A coordinate of an anchor, of a non-anchor (reached as a negative only), and more.
        for idx in [0usize, 7, 13, 31, 58, 77, 101, 119] {
            let mut plus = p.clone();
            plus.cut[idx] += eps;
            let mut minus = p.clone();
            minus.cut[idx] -= eps;
            let fd = (brute(&plus, k, category, bank, 0.1) - brute(&minus, k, category, bank, 0.1))
                / (2.0 * eps);
            let g = grad[idx] as f64;
            assert!(
                (g - fd).abs() < 2e-3 * fd.abs().max(1.0) + 1e-4,
                "d L / d cut[{idx}] = {g}, finite differences {fd} (category {category}, bank {bank})"
            );
        }
    }
}

#[test]
fn no_anchor_gives_zero_and_positive_sampling_reduces_anchors() {
    let mut p = problem(3);
    p.anchors = vec![false; N];
    let ts = tensors(&p);
    let out = loss_of(&ts, None, true, false, 4);
    assert_eq!(out.anchors, 0);
    assert_eq!(out.loss.double_value(&[]), 0.0);
}

#[test]
fn identical_positive_and_orthogonal_negatives_hit_the_closed_form() {
    // One image, 1 x 2 grid, K = 2. Anchor (0,0): E_cut = E_t = e1 there; every other
    // vector is e2, orthogonal. Negatives: E_cut(0,1) and E_t(0,1), both similarity 0.
    // L = -log(e^10 / (e^10 + 2)) by hand.
    let e_cut = Tensor::from_slice(&[1f32, 0., 0., 1.]).view([1, 2, 1, 2]);
    let e_t = e_cut.copy();
    let labels = Tensor::from_slice(&[0i64, 1]).view([1, 1, 2]);
    let anchors = Tensor::from_slice(&[true, false]).view([1, 1, 2]);
    let out = contrastive_loss(&ContrastiveInputs {
        e_cut: &e_cut,
        e_t: &e_t,
        cut_labels: &labels,
        t_labels: &labels,
        anchors: &anchors,
        keep: None,
        bank: None,
        category: false,
        tau: 0.1,
        chunk: 8,
    });
    let expect = -(10f64.exp() / (10f64.exp() + 2.0)).ln();
    assert!((out.loss.double_value(&[]) - expect).abs() < 1e-6);
    assert_eq!(
        out.negatives, 4,
        "2 x 1 x 2 locations offered; Omega removes 2 per anchor"
    );
}
