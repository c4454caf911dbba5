//! The QDQ graph rewrite of [`super::quantize`]: activation parameters from the
//! calibrated ranges, `QuantizeLinear` after every calibrated tensor (a foldable `Relu`
//! becomes its `QuantizeLinear`), `DequantizeLinear` before every quantized-op input, and
//! int8 / int32 weights and biases of every `Conv` and `Gemm` with their own
//! `DequantizeLinear`.

use super::{
    activation_params, consumers, quantize_weights, quantized_nodes, Calibration, WEIGHTED_OPS,
};
use crate::graph::{Attr, GraphBuilder};
use crate::onnx::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};
use crate::ExportError;
use std::collections::{HashMap, HashSet};

/// uint8 `(scale, zero point)` of each quantized activation tensor.
type Params = HashMap<String, (f32, u8)>;

/// Rewrites `graph` in place: its nodes become the QDQ nodes, its float conv weights and
/// biases the quantized ones (the other initialisers are kept, sorted by name, before the
/// new ones).
pub(super) fn rewrite_graph(
    graph: &mut GraphProto,
    acts: &[String],
    calibration: &Calibration,
) -> Result<(), ExportError> {
    let params = calibrated_params(graph, acts, calibration)?;
    let quantized = quantized_nodes(graph);
    let fold_relu = foldable_relus(graph, &params, &quantized);
    let mut r = Rewriter {
        g: GraphBuilder::new(),
        inits: graph
            .initializer
            .drain(..)
            .map(|t| (t.name.clone(), t))
            .collect(),
        used_inits: HashSet::new(),
        params,
    };
    r.activation_initialisers(acts);
    // Graph inputs that need quantizing (not the case for rccr models, handled anyway).
    for i in &graph.input {
        if r.params.contains_key(&i.name) {
            r.quantize_node(&i.name, &i.name);
        }
    }
    for (k, n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        if fold_relu.contains(&n.name) {
            r.quantize_node(&n.input[0], &n.output[0]);
        } else {
            r.rewrite_node(k, n, quantized[k])?;
        }
    }
    let (kept, (nodes, new_inits)) = (r.kept_initialisers(), r.g.into_parts());
    graph.node = nodes;
    graph.initializer = kept.into_iter().chain(new_inits).collect();
    Ok(())
}

/// The parameters of every tensor of `acts` from its calibrated range; a `MaxPool`
/// output keeps its input's parameters.
fn calibrated_params(
    graph: &GraphProto,
    acts: &[String],
    calibration: &Calibration,
) -> Result<Params, ExportError> {
    let mut params = Params::new();
    for a in acts {
        let r = calibration.ranges.get(a).ok_or_else(|| {
            ExportError::Network(format!("calibration has no range for tensor `{a}`"))
        })?;
        if !(r.lo.is_finite() && r.hi.is_finite()) {
            return Err(ExportError::Network(format!(
                "calibration range of `{a}` is not finite: [{}, {}]",
                r.lo, r.hi
            )));
        }
        params.insert(a.clone(), activation_params(*r));
    }
    // MaxPool commutes with a monotone quantizer: its output keeps its input's parameters
    // (exact, and what ORT needs to run it on uint8 without requantizing).
    for n in &graph.node {
        if n.op_type == "MaxPool" && n.input.len() == 1 && n.output.len() == 1 {
            if let (Some(&p), true) = (params.get(&n.input[0]), params.contains_key(&n.output[0])) {
                params.insert(n.output[0].clone(), p);
            }
        }
    }
    Ok(params)
}

/// The `Relu` nodes whose output only quantized ops read, is no graph output and has
/// zero point 0: their `QuantizeLinear` saturates at 0, which is the Relu.
fn foldable_relus(graph: &GraphProto, params: &Params, quantized: &[bool]) -> HashSet<String> {
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let consumers = consumers(graph);
    let foldable = |y: &str| {
        consumers
            .get(y)
            .is_some_and(|c| c.iter().all(|&j| quantized[j]))
            && !graph_outputs.contains(y)
            && params.get(y).is_some_and(|&(_, zp)| zp == 0)
    };
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Relu" && n.output.len() == 1 && foldable(&n.output[0]))
        .map(|n| n.name.clone())
        .collect()
}

/// The rewrite's state: the new nodes and initialisers, the float initialisers by name
/// and which of them were replaced by quantized ones.
struct Rewriter {
    g: GraphBuilder,
    inits: HashMap<String, TensorProto>,
    used_inits: HashSet<String>,
    params: Params,
}

impl Rewriter {
    /// `{a}.q_scale` and `{a}.q_zero` of every activation tensor.
    fn activation_initialisers(&mut self, acts: &[String]) {
        for a in acts {
            let (s, zp) = self.params[a];
            self.g.init_f32(&format!("{a}.q_scale"), &[], &[s]);
            self.g.init_u8(&format!("{a}.q_zero"), &[], &[zp]);
        }
    }

    /// `QuantizeLinear` of `src` with `a`'s parameters, writing `{a}.q`.
    fn quantize_node(&mut self, src: &str, a: &str) {
        self.g.node(
            "QuantizeLinear",
            &format!("{a}.quantize"),
            &[src, &format!("{a}.q_scale"), &format!("{a}.q_zero")],
            &[&format!("{a}.q")],
            vec![],
        );
    }

    /// Node `k` with Q/DQ around it when `quantized`: its calibrated inputs dequantized, a
    /// `Conv`'s or `Gemm`'s weight and bias quantized; its calibrated outputs quantized.
    fn rewrite_node(
        &mut self,
        k: usize,
        mut n: NodeProto,
        quantized: bool,
    ) -> Result<(), ExportError> {
        if quantized {
            let conv_src = n.input.first().cloned().unwrap_or_default();
            self.dequantize_inputs(k, &mut n);
            if WEIGHTED_OPS.contains(&n.op_type.as_str()) {
                check_gemm_layout(&n)?;
                self.quantize_conv(&mut n, &conv_src)?;
            }
        }
        let outs = n.output.clone();
        self.g.push(n);
        for y in outs {
            if self.params.contains_key(&y) {
                self.quantize_node(&y, &y);
            }
        }
        Ok(())
    }

    /// Reads every calibrated activation input of `n` through a `DequantizeLinear`
    /// (`{x}.dq.{k}`); a `Conv`'s or `Gemm`'s weight and bias are left to
    /// [`Self::quantize_conv`].
    fn dequantize_inputs(&mut self, k: usize, n: &mut NodeProto) {
        let weighted = WEIGHTED_OPS.contains(&n.op_type.as_str());
        for i in 0..n.input.len() {
            let x = n.input[i].clone();
            if x.is_empty() || (weighted && i > 0) || !self.params.contains_key(&x) {
                continue;
            }
            let dq = format!("{x}.dq.{k}");
            let (q, s, z) = (
                format!("{x}.q"),
                format!("{x}.q_scale"),
                format!("{x}.q_zero"),
            );
            self.g
                .node("DequantizeLinear", &dq, &[&q, &s, &z], &[&dq], vec![]);
            n.input[i] = dq;
        }
    }

    /// Replaces the float weight (and bias) of conv `n`, whose input `src` is calibrated,
    /// by per-channel int8 (int32) initialisers read through `DequantizeLinear`.
    fn quantize_conv(&mut self, n: &mut NodeProto, src: &str) -> Result<(), ExportError> {
        let &(sx, _) = self.params.get(src).ok_or_else(|| {
            ExportError::Network(format!("conv `{}`: input `{src}` not calibrated", n.name))
        })?;
        let wname = n.input.get(1).cloned().unwrap_or_default();
        let (wdq, sw) = self.quantize_conv_weight(&n.name, &wname)?;
        n.input[1] = wdq;
        if let Some(bname) = n.input.get(2).cloned().filter(|b| !b.is_empty()) {
            let bs: Vec<f32> = sw.iter().map(|s| s * sx).collect();
            n.input[2] = self.quantize_conv_bias(&n.name, &bname, &bs)?;
        }
        Ok(())
    }

    /// The float initialiser `name` read by conv `conv` as `what`, marked as replaced.
    fn take_f32(&mut self, conv: &str, what: &str, name: &str) -> Result<Vec<f32>, ExportError> {
        let t = self.inits.get(name).ok_or_else(|| {
            ExportError::Network(format!(
                "conv `{conv}`: {what} `{name}` is not an initialiser"
            ))
        })?;
        let v = tensor_f32(t)?;
        self.used_inits.insert(name.to_string());
        Ok(v)
    }

    /// `{w}.int8` (+ `.scale`, `.zero`) and its `{w}.dq`; returns that name and the scales.
    fn quantize_conv_weight(
        &mut self,
        conv: &str,
        wname: &str,
    ) -> Result<(String, Vec<f32>), ExportError> {
        let wv = self.take_f32(conv, "weight", wname)?;
        let dims = self.inits[wname].dims.clone();
        let o = *dims.first().unwrap_or(&0);
        if o <= 0 {
            return Err(ExportError::Network(format!("conv `{conv}`: empty weight")));
        }
        let (qw, sw) = quantize_weights(&wv, o as usize);
        let wq = self.g.init_i8(&format!("{wname}.int8"), &dims, &qw);
        self.g.init_f32(&format!("{wq}.scale"), &[o], &sw);
        self.g
            .init_i8(&format!("{wq}.zero"), &[o], &vec![0; o as usize]);
        Ok((self.channel_dequantize(&wq, &format!("{wname}.dq")), sw))
    }

    /// `{b}.int32 = round(b / scale)` (+ `.scale`, `.zero`) and its `{b}.dq`; returns
    /// that name.
    fn quantize_conv_bias(
        &mut self,
        conv: &str,
        bname: &str,
        scales: &[f32],
    ) -> Result<String, ExportError> {
        let bv = self.take_f32(conv, "bias", bname)?;
        if bv.len() != scales.len() {
            return Err(ExportError::Network(format!(
                "conv `{conv}`: bias has {} values for {} channels",
                bv.len(),
                scales.len()
            )));
        }
        let qb: Vec<i32> = bv
            .iter()
            .zip(scales)
            .map(|(v, s)| {
                (*v as f64 / *s as f64)
                    .round()
                    .clamp(i32::MIN as f64, i32::MAX as f64) as i32
            })
            .collect();
        let o = scales.len() as i64;
        let bq = self.g.init_i32(&format!("{bname}.int32"), &[o], &qb);
        self.g.init_f32(&format!("{bq}.scale"), &[o], scales);
        self.g
            .init_i32(&format!("{bq}.zero"), &[o], &vec![0; scales.len()]);
        Ok(self.channel_dequantize(&bq, &format!("{bname}.dq")))
    }

    /// A per-output-channel (`axis` 0) `DequantizeLinear` of `q` named and writing `out`.
    fn channel_dequantize(&mut self, q: &str, out: &str) -> String {
        let (s, z) = (format!("{q}.scale"), format!("{q}.zero"));
        self.g.node(
            "DequantizeLinear",
            out,
            &[q, &s, &z],
            &[out],
            vec![("axis", Attr::Int(0))],
        );
        out.to_string()
    }

    /// The initialisers other nodes still read (normalisation constants, indices),
    /// sorted by name.
    fn kept_initialisers(&mut self) -> Vec<TensorProto> {
        let mut kept: Vec<TensorProto> = self
            .inits
            .drain()
            .filter(|(n, _)| !self.used_inits.contains(n))
            .map(|(_, t)| t)
            .collect();
        kept.sort_by(|a, b| a.name.cmp(&b.name));
        kept
    }
}

/// Refuses a `Gemm` whose weight is not `[out, in]` (`transB = 1`, `transA = 0`): the
/// weight is quantized per output channel along its first axis, as a conv's.
fn check_gemm_layout(n: &NodeProto) -> Result<(), ExportError> {
    if n.op_type != "Gemm" {
        return Ok(());
    }
    let attr = |name: &str| {
        n.attribute
            .iter()
            .find(|a| a.name == name)
            .map_or(0, |a| a.i)
    };
    if attr("transB") == 1 && attr("transA") == 0 {
        return Ok(());
    }
    Err(ExportError::Network(format!(
        "gemm `{}`: only transB = 1, transA = 0 (weight [out, in]) is quantized",
        n.name
    )))
}

/// The values of a float32 initialiser (raw or `float_data`).
fn tensor_f32(t: &TensorProto) -> Result<Vec<f32>, ExportError> {
    if t.data_type != DataType::Float as i32 {
        return Err(ExportError::Network(format!(
            "initialiser `{}` is not float32 (quantize an fp32 export, not --fp16)",
            t.name
        )));
    }
    if !t.raw_data.is_empty() {
        Ok(t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    } else {
        Ok(t.float_data.clone())
    }
}
