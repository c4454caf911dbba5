//! The Mix Transformer encoder as ONNX nodes, mirroring `rccr_models::mit` (SegFormer,
//! Xie et al. 2021, Sec. 3.1) in inference mode (drop path off), with the checkpoint's
//! names (`patch_embed1.proj`, `block1.0.attn.q`, `norm1`, ...).
//!
//! Layout: the tokens of a stage are one `[N*h*w, C]` matrix, so every linear layer is a
//! single `Gemm` (torch's `[out, in]` weight with `transB = 1`, bias inside) and every
//! LayerNorm a `LayerNormalization` over the last axis (opset 17); the convolutions (patch
//! embeddings, the attention's spatial reduction, Mix-FFN's 3x3 depthwise conv with
//! `group` = channels) run on NCHW maps. Tokens -> map is `Reshape [N, h, w, -1]` +
//! `Transpose [0, 3, 1, 2]`, map -> tokens `Transpose [0, 2, 3, 1]` + `Reshape [-1, C]`;
//! N, h and w are read in the graph (`Shape` of the input and of each patch embedding),
//! so H and W stay dynamic. Attention: `Reshape [N, -1, heads, d]` + `Transpose` to
//! `[N, heads, L, d]`, `MatMul`, `Mul` by d^-1/2, `Softmax` over the keys, `MatMul`;
//! the `kv` layer is written as two `Gemm`s (its key rows, then its value rows). GELU is
//! the `Gelu` op from opset 20, else its erf form `x * (1 + erf(x / sqrt 2)) * 0.5`.

use super::deeplab::biased_conv;
use super::emitter::{Emitter, Geom};
use crate::fold::{self, FoldedConv};
use crate::graph::Attr;
use crate::ExportError;
use rccr_infer::contract::INPUT_NAME;
use rccr_models::mit::{Attention, Block, MixFfn, Stage, BLOCK_LN_EPS, EMBED_LN_EPS};
use rccr_models::MitSegmenter;
use tch::{nn, Tensor};

/// The in-graph sizes one stage's reshapes read.
pub(super) struct Grid {
    /// `[N]`, the batch size.
    n: String,
    /// `[N, h, w, -1]`: tokens -> NHWC map.
    nhw: String,
}

impl Emitter {
    /// The four stage maps `[N, C_i, H / 2^(i+2), W / 2^(i+2)]` (ceil) of the normalised
    /// input `x` (`MitEncoder::forward_t` in inference mode).
    pub(super) fn mit_encoder(
        &mut self,
        net: &MitSegmenter,
        x: &str,
    ) -> Result<Vec<String>, ExportError> {
        let n = self.g.op(
            "Shape",
            "mit.batch",
            &[INPUT_NAME],
            vec![("start", Attr::Int(0)), ("end", Attr::Int(1))],
        );
        let minus_one = self.g.init_i64("mit.minus_one", &[1], &[-1]);
        let mut maps: Vec<String> = Vec::with_capacity(4);
        for (i, stage) in net.encoder.stages.iter().enumerate() {
            let input = maps.last().map_or(x, String::as_str).to_string();
            maps.push(self.stage(i + 1, stage, &input, &n, &minus_one)?);
        }
        Ok(maps)
    }

    /// Stage `s` (`Stage::forward_t`): patch embedding, blocks, LayerNorm, back to a map.
    fn stage(
        &mut self,
        s: usize,
        stage: &Stage,
        x: &str,
        n: &str,
        minus_one: &str,
    ) -> Result<String, ExportError> {
        let pe = &stage.patch_embed;
        let f = biased_conv(&pe.proj)?;
        check_kernel(&format!("patch_embed{s}.proj"), &f, pe.kernel, 0)?;
        let geom = Geom {
            stride: pe.stride,
            padding: pe.kernel / 2,
            dilation: 1,
            group: 1,
        };
        let map = self.conv_geom(&format!("patch_embed{s}.proj"), x, &f, geom);
        let hw = self.g.op(
            "Shape",
            &format!("stage{s}.hw"),
            &[&map],
            vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
        );
        let nhw = self.g.op(
            "Concat",
            &format!("stage{s}.nhw"),
            &[n, &hw, minus_one],
            vec![("axis", Attr::Int(0))],
        );
        let grid = Grid {
            n: n.to_string(),
            nhw,
        };
        let tokens = self.tokens_of(&format!("patch_embed{s}.tokens"), &map, f.dims[0]);
        let name = format!("patch_embed{s}.norm");
        let mut t = self.layer_norm(&name, &tokens, &pe.norm, EMBED_LN_EPS)?;
        for (j, block) in stage.blocks.iter().enumerate() {
            t = self.mit_block(&format!("block{s}.{j}"), block, &t, &grid)?;
        }
        let t = self.layer_norm(&format!("norm{s}"), &t, &stage.norm, BLOCK_LN_EPS)?;
        Ok(self.map_of(&format!("norm{s}.map"), &t, &grid))
    }

    /// `x + Attn(LN(x))`, then `+ MixFFN(LN(.))` (`Block::forward_t`, no drop path).
    fn mit_block(
        &mut self,
        p: &str,
        b: &Block,
        x: &str,
        grid: &Grid,
    ) -> Result<String, ExportError> {
        let a = self.layer_norm(&format!("{p}.norm1"), x, &b.norm1, BLOCK_LN_EPS)?;
        let a = self.attention(&format!("{p}.attn"), &b.attn, &a, grid)?;
        let x = self.g.op("Add", &format!("{p}.add1"), &[x, &a], vec![]);
        let m = self.layer_norm(&format!("{p}.norm2"), &x, &b.norm2, BLOCK_LN_EPS)?;
        let m = self.mix_ffn(&format!("{p}.mlp"), &b.mlp, &m, grid)?;
        Ok(self.g.op("Add", &format!("{p}.add2"), &[&x, &m], vec![]))
    }

    /// Efficient self-attention (`Attention::forward`; SegFormer Eq. 1-2) of tokens `x`.
    fn attention(
        &mut self,
        p: &str,
        at: &Attention,
        x: &str,
        grid: &Grid,
    ) -> Result<String, ExportError> {
        let c = at.q.ws.size()[0];
        if at.heads < 1 || c % at.heads != 0 {
            return Err(ExportError::Network(format!(
                "{p}: width {c} is not a multiple of {} heads",
                at.heads
            )));
        }
        let dh = c / at.heads;
        let heads = self
            .g
            .init_i64(&format!("{p}.heads"), &[3], &[-1, at.heads, dh]);
        let split = self.g.op(
            "Concat",
            &format!("{p}.heads_shape"),
            &[&grid.n, &heads],
            vec![("axis", Attr::Int(0))],
        );
        let q = self.linear(&format!("{p}.q"), x, &at.q.ws, at.q.bs.as_ref())?;
        let q = self.split_heads(&format!("{p}.q"), &q, &split, [0, 2, 1, 3]);
        let kv_in = match &at.sr {
            Some((sr, norm)) => self.reduce(p, at.sr_ratio, sr, norm, x, grid)?,
            None => x.to_string(),
        };
        let (kw, vw) = (at.kv.ws.narrow(0, 0, c), at.kv.ws.narrow(0, c, c));
        let (kb, vb) = match &at.kv.bs {
            Some(b) => (Some(b.narrow(0, 0, c)), Some(b.narrow(0, c, c))),
            None => (None, None),
        };
        let k = self.linear(&format!("{p}.kv.k"), &kv_in, &kw, kb.as_ref())?;
        let kt = self.split_heads(&format!("{p}.kv.k"), &k, &split, [0, 2, 3, 1]);
        let v = self.linear(&format!("{p}.kv.v"), &kv_in, &vw, vb.as_ref())?;
        let v = self.split_heads(&format!("{p}.kv.v"), &v, &split, [0, 2, 1, 3]);
        let scores = self
            .g
            .op("MatMul", &format!("{p}.scores"), &[&q, &kt], vec![]);
        let scale = (dh as f64).powf(-0.5) as f32;
        let scale = self.g.init_f32(&format!("{p}.scale"), &[], &[scale]);
        let scores = self
            .g
            .op("Mul", &format!("{p}.scaled"), &[&scores, &scale], vec![]);
        let attn = self.g.op(
            "Softmax",
            &format!("{p}.softmax"),
            &[&scores],
            vec![("axis", Attr::Int(-1))],
        );
        let out = self
            .g
            .op("MatMul", &format!("{p}.context"), &[&attn, &v], vec![]);
        let out = self.transpose(&format!("{p}.merge"), &out, &[0, 2, 1, 3]);
        let out = self.reshape_const(&format!("{p}.merged"), &out, &[-1, c]);
        self.linear(&format!("{p}.proj"), &out, &at.proj.ws, at.proj.bs.as_ref())
    }

    /// The key / value tokens: the R x R / R `sr` conv on the map of `x`, then `norm`.
    fn reduce(
        &mut self,
        p: &str,
        ratio: i64,
        sr: &nn::Conv2D,
        norm: &nn::LayerNorm,
        x: &str,
        grid: &Grid,
    ) -> Result<String, ExportError> {
        let f = biased_conv(sr)?;
        check_kernel(&format!("{p}.sr"), &f, ratio, 0)?;
        let map = self.map_of(&format!("{p}.sr.map"), x, grid);
        let geom = Geom {
            stride: ratio,
            padding: 0,
            dilation: 1,
            group: 1,
        };
        let y = self.conv_geom(&format!("{p}.sr"), &map, &f, geom);
        let t = self.tokens_of(&format!("{p}.sr.tokens"), &y, f.dims[0]);
        self.layer_norm(&format!("{p}.norm"), &t, norm, EMBED_LN_EPS)
    }

    /// Mix-FFN (`MixFfn::forward`; SegFormer Eq. 3): fc1, 3x3 depthwise conv, GELU, fc2.
    fn mix_ffn(
        &mut self,
        p: &str,
        m: &MixFfn,
        x: &str,
        grid: &Grid,
    ) -> Result<String, ExportError> {
        let h = self.linear(&format!("{p}.fc1"), x, &m.fc1.ws, m.fc1.bs.as_ref())?;
        let hidden = m.fc1.ws.size()[0];
        let f = biased_conv(&m.dwconv)?;
        check_kernel(&format!("{p}.dwconv.dwconv"), &f, 3, hidden)?;
        let map = self.map_of(&format!("{p}.dwconv.map"), &h, grid);
        let geom = Geom {
            stride: 1,
            padding: 1,
            dilation: 1,
            group: hidden,
        };
        let y = self.conv_geom(&format!("{p}.dwconv.dwconv"), &map, &f, geom);
        let t = self.tokens_of(&format!("{p}.dwconv.tokens"), &y, hidden);
        let g = self.gelu(&format!("{p}.act"), &t);
        self.linear(&format!("{p}.fc2"), &g, &m.fc2.ws, m.fc2.bs.as_ref())
    }

    /// A linear layer on `[rows, in]` tokens: `Gemm(x, W, b, transB = 1)`, parameters
    /// `{name}.weight` (`[out, in]`) and `{name}.bias` (0 where it has none).
    fn linear(
        &mut self,
        name: &str,
        x: &str,
        ws: &Tensor,
        bs: Option<&Tensor>,
    ) -> Result<String, ExportError> {
        let dims = ws.size();
        let [out, inp] = <[i64; 2]>::try_from(dims.as_slice()).map_err(|_| {
            ExportError::Network(format!("{name}: linear weight has shape {dims:?}"))
        })?;
        let bias = match bs {
            Some(b) => fold::to_vec(b)?,
            None => vec![0.0; out as usize],
        };
        let w = self.param(&format!("{name}.weight"), &[out, inp], &fold::to_vec(ws)?);
        let b = self.param(&format!("{name}.bias"), &[out], &bias);
        Ok(self
            .g
            .op("Gemm", name, &[x, &w, &b], vec![("transB", Attr::Int(1))]))
    }

    /// `LayerNormalization` over the channels of `[rows, C]` tokens with `ln`'s scale
    /// and shift (1 and 0 where it has none) and `eps`.
    fn layer_norm(
        &mut self,
        name: &str,
        x: &str,
        ln: &nn::LayerNorm,
        eps: f64,
    ) -> Result<String, ExportError> {
        let c = *ln.normalized_shape.last().unwrap_or(&0);
        let values = |t: &Option<Tensor>, fill: f32| match t {
            Some(t) => fold::to_vec(t),
            None => Ok(vec![fill; c as usize]),
        };
        let (scale, shift) = (values(&ln.ws, 1.0)?, values(&ln.bs, 0.0)?);
        if ln.normalized_shape.len() != 1 || scale.len() != c as usize {
            return Err(ExportError::Network(format!(
                "{name}: LayerNorm over {:?} with {} weights (expected one axis)",
                ln.normalized_shape,
                scale.len()
            )));
        }
        let s = self.param(&format!("{name}.weight"), &[c], &scale);
        let b = self.param(&format!("{name}.bias"), &[c], &shift);
        Ok(self.g.op(
            "LayerNormalization",
            name,
            &[x, &s, &b],
            vec![
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(eps as f32)),
            ],
        ))
    }

    /// The exact (erf) GELU: the `Gelu` op from opset 20, else
    /// `x * (1 + erf(x / sqrt 2)) * 0.5`.
    fn gelu(&mut self, name: &str, x: &str) -> String {
        if self.opset >= 20 {
            return self.g.op("Gelu", name, &[x], vec![]);
        }
        let sqrt2 = self
            .g
            .init_f32(&format!("{name}.sqrt2"), &[], &[std::f32::consts::SQRT_2]);
        let one = self.g.init_f32(&format!("{name}.one"), &[], &[1.0]);
        let half = self.g.init_f32(&format!("{name}.half"), &[], &[0.5]);
        let d = self
            .g
            .op("Div", &format!("{name}.div"), &[x, &sqrt2], vec![]);
        let e = self.g.op("Erf", &format!("{name}.erf"), &[&d], vec![]);
        let a = self
            .g
            .op("Add", &format!("{name}.add"), &[&e, &one], vec![]);
        let m = self.g.op("Mul", &format!("{name}.mul"), &[x, &a], vec![]);
        self.g.op("Mul", name, &[&m, &half], vec![])
    }

    /// `[N*L, C]` tokens as `[N, heads, L, d]` (`perm` [0, 2, 1, 3]) or, for keys,
    /// `[N, heads, d, L]` (`perm` [0, 2, 3, 1]); `split` is `[N, -1, heads, d]`.
    fn split_heads(&mut self, p: &str, x: &str, split: &str, perm: [i64; 4]) -> String {
        let r = self
            .g
            .op("Reshape", &format!("{p}.heads"), &[x, split], vec![]);
        self.transpose(&format!("{p}.heads_t"), &r, &perm)
    }

    /// NCHW `map` with `c` channels as `[N*h*w, c]` tokens (`mit::to_tokens`).
    fn tokens_of(&mut self, name: &str, map: &str, c: i64) -> String {
        let nhwc = self.transpose(&format!("{name}.nhwc"), map, &[0, 2, 3, 1]);
        self.reshape_const(name, &nhwc, &[-1, c])
    }

    /// `[N*h*w, C]` tokens as an NCHW map of `grid`'s size (`mit::to_map`).
    fn map_of(&mut self, name: &str, x: &str, grid: &Grid) -> String {
        let nhwc = self
            .g
            .op("Reshape", &format!("{name}.nhwc"), &[x, &grid.nhw], vec![]);
        self.transpose(name, &nhwc, &[0, 3, 1, 2])
    }

    /// `Transpose` `name` of `x` by `perm`.
    fn transpose(&mut self, name: &str, x: &str, perm: &[i64]) -> String {
        self.g.op(
            "Transpose",
            name,
            &[x],
            vec![("perm", Attr::Ints(perm.to_vec()))],
        )
    }

    /// `Reshape` `name` of `x` to the constant `shape` (`{name}.shape`).
    fn reshape_const(&mut self, name: &str, x: &str, shape: &[i64]) -> String {
        let s = self
            .g
            .init_i64(&format!("{name}.shape"), &[shape.len() as i64], shape);
        self.g.op("Reshape", name, &[x, &s], vec![])
    }
}

/// Refuses a convolution weight whose kernel is not `k x k` or, with `groups` > 0, that
/// is not depthwise over `groups` channels (`[groups, 1, k, k]`).
pub(super) fn check_kernel(
    name: &str,
    f: &FoldedConv,
    k: i64,
    groups: i64,
) -> Result<(), ExportError> {
    let depthwise_ok = groups == 0 || (f.dims[0] == groups && f.dims[1] == 1);
    if f.dims[2] == k && f.dims[3] == k && depthwise_ok {
        return Ok(());
    }
    Err(ExportError::Network(format!(
        "{name}: weight {:?} is not the {k}x{k}{} kernel the layer declares",
        f.dims,
        if groups > 0 { " depthwise" } else { "" }
    )))
}
