//! The region-wise contrastive loss L_cont (paper Eq. 4-8) with its sampling strategies
//! (Sec. 3.2.4) and the memory bank (Sec. 3.2.5).
//!
//! On the 1/8 grid (h x w) of a batch of B images, with the student's CutMix embeddings
//! E_cut and the teacher's target embeddings E_t (unit vectors, so the cosine similarity
//! of Eq. 5 is a dot product):
//! - anchors: the locations (b, i, j) inside the pasted box (Phi of Eq. 7), optionally
//!   only those where the teacher is confident (PS); the positive of an anchor is E_t at
//!   the same location;
//! - negatives: every other location of E_cut and of E_t in the batch (Omega of Eq. 8;
//!   2Bhw - 2 per anchor, the paper's 2hw - 2 for one image), optionally a random subset
//!   shared by all anchors of the iteration (NS(R), the caller passes the kept indices),
//!   then without those whose label equals the anchor's pseudo-label (NS(C)), plus the
//!   memory-bank entries (MB; NS(C) applies to them too);
//! - per anchor: -log(exp(pos / tau) / (exp(pos / tau) + sum exp(neg / tau))), averaged
//!   over the anchors (the 1/s^2 of Eq. 4), tau = 0.1.
//!
//! Memory stays bounded: the anchor x negative similarity is computed `chunk` anchors at
//! a time, and the gradient is formed analytically chunk by chunk instead of keeping each
//! chunk's autograd graph. For p the softmax over {positive, negatives} of an anchor u:
//! dL/du = ((p_pos - 1) t_pos + sum_j p_j v_j) / tau and, for a negative v_j taken from
//! E_cut (the student), dL/dv_j += p_j u / tau. E_t and the bank are detached (the
//! teacher never receives gradients). The returned loss carries that gradient to E_cut
//! through the surrogate `<E_cut, G>` (value corrected to the true loss), so autograd
//! continues through the projector and the encoder.

use rand::seq::index::sample;
use rand::Rng;
use tch::{Kind, Tensor};

/// What L_cont needs for one batch.
#[derive(Debug)]
pub struct ContrastiveInputs<'a> {
    /// Student embeddings of the CutMix images, `B x K x h x w`, unit length, with autograd.
    pub e_cut: &'a Tensor,
    /// Teacher embeddings of the target images, `B x K x h x w`, unit length.
    pub e_t: &'a Tensor,
    /// Labels of E_cut on the grid, `B x h x w` (source label, teacher argmax in the box).
    pub cut_labels: &'a Tensor,
    /// Labels of E_t on the grid, `B x h x w` (teacher argmax).
    pub t_labels: &'a Tensor,
    /// Anchors, `B x h x w` bool: inside the box (and confident, with PS).
    pub anchors: &'a Tensor,
    /// NS(R): indices into the `2 B h w` current negatives (E_cut flattened, then E_t) to
    /// keep; `None` keeps all.
    pub keep: Option<&'a Tensor>,
    /// MB: bank negatives (`M x K` unit embeddings, `M` labels).
    pub bank: Option<(&'a Tensor, &'a Tensor)>,
    /// NS(C): drop negatives carrying the anchor's label.
    pub category: bool,
    /// Temperature tau.
    pub tau: f64,
    /// Anchors per chunk.
    pub chunk: usize,
}

/// The loss of one batch.
#[derive(Debug)]
pub struct ContrastiveLoss {
    /// Scalar f32 loss whose gradient reaches `e_cut`; 0 (no gradient) without anchors.
    pub loss: Tensor,
    /// Anchors used.
    pub anchors: i64,
    /// Negative columns offered to each anchor before the per-anchor masks.
    pub negatives: i64,
}

/// Flattens `B x K x h x w` to `(B h w) x K` (row index b h w + i w + j).
pub(crate) fn flatten_grid(e: &Tensor) -> Tensor {
    let k = e.size()[1];
    e.permute([0, 2, 3, 1]).reshape([-1, k])
}

/// NS(R): `round(fraction * total)` of `0..total`, chosen without replacement, ascending.
pub fn random_keep<R: Rng + ?Sized>(total: usize, fraction: f64, rng: &mut R) -> Vec<i64> {
    let k = ((fraction * total as f64).round() as usize).min(total);
    let mut v: Vec<i64> = sample(rng, total, k)
        .into_iter()
        .map(|i| i as i64)
        .collect();
    v.sort_unstable();
    v
}

/// L_cont of Eq. 4-8 with the given sampling; see the module documentation.
pub fn contrastive_loss(inp: &ContrastiveInputs) -> ContrastiveLoss {
    let device = inp.e_cut.device();
    let u_all = flatten_grid(&inp.e_cut.to_kind(Kind::Float)); // autograd
    let anchor_idx = inp.anchors.flatten(0, -1).nonzero().flatten(0, -1);
    let a = anchor_idx.size()[0];
    let (grad, loss_sum, negatives) = tch::no_grad(|| {
        let rows = Rows::new(inp, &u_all);
        let cols = Columns::new(inp, &rows);
        let mut grad = rows.u.zeros_like();
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut start = 0;
        while start < a {
            let c = (inp.chunk as i64).min(a - start);
            let idx = anchor_idx.narrow(0, start, c);
            loss_sum += anchor_chunk(inp, &rows, &cols, &idx, &mut grad);
            start += c;
        }
        (grad, loss_sum, cols.negatives)
    });
    if a == 0 {
        return ContrastiveLoss {
            loss: Tensor::zeros([], (Kind::Float, device)),
            anchors: 0,
            negatives,
        };
    }
    let inv_a = 1.0 / a as f64;
    let surrogate = (&u_all * (grad * inv_a)).sum(Kind::Float);
    let loss = &surrogate - surrogate.detach() + loss_sum * inv_a;
    ContrastiveLoss {
        loss,
        anchors: a,
        negatives,
    }
}

/// The grid's locations as rows (detached): E_cut, E_t and their labels.
struct Rows {
    /// E_cut, `n x K`.
    u: Tensor,
    /// E_t, `n x K`.
    t: Tensor,
    /// Labels of E_cut, `n`.
    cut_lab: Tensor,
    /// Labels of E_t, `n`.
    t_lab: Tensor,
    /// Locations `n = B h w`.
    n: i64,
}

impl Rows {
    fn new(inp: &ContrastiveInputs, u_all: &Tensor) -> Rows {
        Rows {
            u: u_all.detach(),
            t: flatten_grid(&inp.e_t.to_kind(Kind::Float)).detach(),
            cut_lab: inp.cut_labels.flatten(0, -1).to_kind(Kind::Int64),
            t_lab: inp.t_labels.flatten(0, -1).to_kind(Kind::Int64),
            n: u_all.size()[0],
        }
    }
}

/// The negatives every anchor is compared with: the kept current locations (E_cut
/// locations 0..n, then E_t locations n..2n) followed by the bank's.
struct Columns {
    /// Negative embeddings, `N x K`.
    cols: Tensor,
    /// Their labels, `N`.
    labels: Tensor,
    /// Column position of each current location id (-1 when not kept), `2n`.
    inv: Tensor,
    /// The kept E_cut location ids (the first columns).
    cut_ids: Tensor,
    /// N.
    negatives: i64,
}

impl Columns {
    fn new(inp: &ContrastiveInputs, rows: &Rows) -> Columns {
        let device = rows.u.device();
        let n = rows.n;
        let cur = Tensor::cat(&[&rows.u, &rows.t], 0);
        let cur_lab = Tensor::cat(&[&rows.cut_lab, &rows.t_lab], 0);
        // Ascending, so the kept E_cut locations (ids < n) come first.
        let ids = match inp.keep {
            Some(k) => {
                crate::upload::small(k, device)
                    .to_kind(Kind::Int64)
                    .sort(0, false)
                    .0
            }
            None => Tensor::arange(2 * n, (Kind::Int64, device)),
        };
        let n_cut_cols = ids.lt(n).sum(Kind::Int64).int64_value(&[]);
        let mut cols = cur.index_select(0, &ids);
        let mut labels = cur_lab.index_select(0, &ids);
        if let Some((be, bl)) = inp.bank {
            let be = crate::upload::small(be, device).to_kind(Kind::Float);
            let bl = crate::upload::small(bl, device).to_kind(Kind::Int64);
            cols = Tensor::cat(&[cols, be], 0);
            labels = Tensor::cat(&[labels, bl], 0);
        }
        let mut inv = Tensor::full([2 * n], -1, (Kind::Int64, device));
        let _ = inv.index_put_(
            &[Some(ids.shallow_clone())],
            &Tensor::arange(ids.size()[0], (Kind::Int64, device)),
            false,
        );
        Columns {
            negatives: cols.size()[0],
            cols,
            labels,
            inv,
            cut_ids: ids.narrow(0, 0, n_cut_cols),
        }
    }
}

/// One chunk of anchors `idx`: adds the gradient of their summed loss with respect to
/// E_cut to `grad` and returns the summed loss.
fn anchor_chunk(
    inp: &ContrastiveInputs,
    rows: &Rows,
    cols: &Columns,
    idx: &Tensor,
    grad: &mut Tensor,
) -> Tensor {
    let tau = inp.tau;
    let u = rows.u.index_select(0, idx);
    let tp = rows.t.index_select(0, idx);
    let pos = (&u * &tp).sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / tau;
    // 1/tau folded into the c x K factor rather than the c x N product.
    let mut s = (&u / tau).mm(&cols.cols.tr());
    mask_negatives(&mut s, inp, rows, cols, idx);
    let m = if cols.negatives > 0 {
        s.amax([1i64].as_slice(), false).maximum(&pos)
    } else {
        pos.shallow_clone()
    };
    // In place from here: s becomes exp(s - m), then the softmax p over negatives.
    let _ = s.g_sub_(&m.unsqueeze(1));
    let _ = s.exp_();
    let ep = (&pos - &m).exp();
    let denom = &ep + s.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let lse = &m + denom.log();
    let loss = (&lse - &pos).sum(Kind::Float);
    let _ = s.g_div_(&denom.unsqueeze(1));
    let pn = s;
    let pp = ep / &denom;
    let gu = (pn.mm(&cols.cols) + &tp * (pp - 1.0).unsqueeze(1)) / tau;
    let _ = grad.index_add_(0, idx, &gu);
    let n_cut_cols = cols.cut_ids.size()[0];
    if n_cut_cols > 0 {
        let gv = pn.narrow(1, 0, n_cut_cols).tr().mm(&u) / tau;
        let _ = grad.index_add_(0, &cols.cut_ids, &gv);
    }
    loss
}

/// Omega and NS(C): -inf for the anchor's own location in E_cut and in E_t and, with
/// NS(C), for the negatives carrying the anchor's label. Without a data-dependent shape
/// (no host synchronisation): each row writes -inf at its own column when that column
/// was kept, else writes column 0's current value back onto itself.
fn mask_negatives(
    s: &mut Tensor,
    inp: &ContrastiveInputs,
    rows: &Rows,
    cols: &Columns,
    idx: &Tensor,
) {
    if cols.negatives == 0 {
        return;
    }
    for id in [idx.shallow_clone(), idx + rows.n] {
        let p = cols.inv.index_select(0, &id);
        let at = p.clamp_min(0).unsqueeze(1);
        let value = s
            .gather(1, &at, false)
            .masked_fill(&p.ge(0).unsqueeze(1), f64::NEG_INFINITY);
        let _ = s.scatter_(1, &at, &value);
    }
    if inp.category {
        let al = rows.cut_lab.index_select(0, idx);
        let same = al.unsqueeze(1).eq_tensor(&cols.labels.unsqueeze(0));
        let _ = s.masked_fill_(&same, f64::NEG_INFINITY);
    }
}

/// MB: up to `per_iteration` random locations of each of E_cut and E_t (embeddings and
/// labels, detached) to store for the next iterations.
pub(crate) fn bank_sample<R: Rng + ?Sized>(
    e_cut: &Tensor,
    e_t: &Tensor,
    cut_labels: &Tensor,
    t_labels: &Tensor,
    per_iteration: usize,
    rng: &mut R,
) -> (Tensor, Tensor) {
    let device = e_cut.device();
    let mut embs = Vec::new();
    let mut labs = Vec::new();
    for (e, l) in [(e_cut, cut_labels), (e_t, t_labels)] {
        let flat = flatten_grid(&e.detach().to_kind(Kind::Float));
        let lab = l.flatten(0, -1).to_kind(Kind::Int64);
        let n = flat.size()[0] as usize;
        let idx: Vec<i64> = if n <= per_iteration {
            (0..n as i64).collect()
        } else {
            sample(rng, n, per_iteration)
                .into_iter()
                .map(|i| i as i64)
                .collect()
        };
        let idx = crate::upload::small(&Tensor::from_slice(&idx), device);
        embs.push(flat.index_select(0, &idx));
        labs.push(lab.index_select(0, &idx));
    }
    (Tensor::cat(&embs, 0), Tensor::cat(&labs, 0))
}
