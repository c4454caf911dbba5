//! The layer emitter shared by the encoder and the classifier: float parameters (f32, or
//! f16 cast to f32), convolutions with their batch norm folded in, ReLU.

use crate::fold::{self, FoldedConv};
use crate::graph::{Attr, GraphBuilder};
use crate::onnx::tensor_proto::DataType;
use crate::ExportError;
use rccr_models::layers::ConvBn;

/// Square stride, padding and dilation, and the group count, of a `Conv`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    /// Stride.
    pub(super) stride: i64,
    /// Zero padding on every side.
    pub(super) padding: i64,
    /// Dilation.
    pub(super) dilation: i64,
    /// Groups (the channel count for a depthwise conv).
    pub(super) group: i64,
}

/// Appends layers to a graph; parameters are stored as f32, or as f16 when `fp16`.
pub(super) struct Emitter {
    /// The graph being built.
    pub(super) g: GraphBuilder,
    /// Store float parameters as float16 (each read through a `Cast` to float32).
    pub(super) fp16: bool,
    /// The opset written (ops that exist only from some opset on are chosen by it).
    pub(super) opset: i64,
}

impl Emitter {
    /// An empty graph.
    pub(super) fn new(fp16: bool, opset: i64) -> Emitter {
        Emitter {
            g: GraphBuilder::new(),
            fp16,
            opset,
        }
    }

    /// A float parameter tensor: an f32 initialiser, or an f16 one cast to f32.
    pub(super) fn param(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        if self.fp16 {
            let half = self.g.init_f16(&format!("{name}.f16"), dims, values);
            self.g.op(
                "Cast",
                name,
                &[&half],
                vec![("to", Attr::Int(DataType::Float as i64))],
            )
        } else {
            self.g.init_f32(name, dims, values)
        }
    }

    /// `Conv` `name` of `x` with weight and bias `f`, square stride / padding / dilation.
    pub(super) fn conv(
        &mut self,
        name: &str,
        x: &str,
        f: &FoldedConv,
        stride: i64,
        padding: i64,
        dilation: i64,
    ) -> String {
        let geom = Geom {
            stride,
            padding,
            dilation,
            group: 1,
        };
        self.conv_geom(name, x, f, geom)
    }

    /// `Conv` `name` of `x` with weight and bias `f` and the square geometry `geom`.
    pub(super) fn conv_geom(&mut self, name: &str, x: &str, f: &FoldedConv, geom: Geom) -> String {
        let w = self.param(&format!("{name}.weight"), &f.dims, &f.weight);
        let b = self.param(&format!("{name}.bias"), &[f.dims[0]], &f.bias);
        self.g.op(
            "Conv",
            name,
            &[x, &w, &b],
            vec![
                ("kernel_shape", Attr::Ints(vec![f.dims[2], f.dims[3]])),
                ("strides", Attr::Ints(vec![geom.stride, geom.stride])),
                ("pads", Attr::Ints(vec![geom.padding; 4])),
                ("dilations", Attr::Ints(vec![geom.dilation, geom.dilation])),
                ("group", Attr::Int(geom.group)),
            ],
        )
    }

    /// A model [`ConvBn`] as one `Conv` with the batch norm folded in.
    pub(super) fn conv_bn(
        &mut self,
        name: &str,
        x: &str,
        c: &ConvBn,
    ) -> Result<String, ExportError> {
        let f = fold::fold_conv_bn(c)?;
        if f.dims[2] != c.kernel || f.dims[3] != c.kernel {
            return Err(ExportError::Network(format!(
                "{name}: weight {:?} does not have the {k}x{k} kernel the layer declares",
                f.dims,
                k = c.kernel
            )));
        }
        Ok(self.conv(name, x, &f, c.stride, c.padding, c.dilation))
    }

    /// `Relu` `name` of `x`.
    pub(super) fn relu(&mut self, name: &str, x: &str) -> String {
        self.g.op("Relu", name, &[x], vec![])
    }
}
