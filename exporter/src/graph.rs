//! A small builder over the prost-generated ONNX types: nodes with attributes,
//! initialisers (raw little-endian f32, f16, i64, i32, i8 or u8 data) and typed graph
//! inputs/outputs. The network export ([`crate::network`]) and the int8 rewrite
//! ([`crate::quantize`]) both build their nodes and initialisers here.

use crate::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// One dimension of a graph input or output: fixed, or named and dynamic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size (`dim_param`); equal names mean equal sizes.
    Param(String),
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOAT`.
    Float(f32),
    /// `STRING`.
    Str(String),
}

/// Builds an attribute proto.
pub(crate) fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.i = i;
            a.r#type = AttributeType::Int as i32;
        }
        Attr::Ints(v) => {
            a.ints = v;
            a.r#type = AttributeType::Ints as i32;
        }
        Attr::Float(f) => {
            a.f = f;
            a.r#type = AttributeType::Float as i32;
        }
        Attr::Str(s) => {
            a.s = s.into_bytes();
            a.r#type = AttributeType::String as i32;
        }
    }
    a
}

/// A node `name` of `op` reading `inputs` and writing `outputs`.
pub(crate) fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<(&str, Attr)>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.to_string(),
        op_type: op.to_string(),
        attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
        ..Default::default()
    }
}

/// A typed tensor value description (for graph inputs and outputs).
pub fn tensor_value_info(name: &str, elem: DataType, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Dim::Param(p) => tensor_shape_proto::dimension::Value::DimParam(p.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        doc_string: doc.to_string(),
        ..Default::default()
    }
}

/// Accumulates the nodes and initialisers of one graph, in topological order.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a node `name` of `op` reading `inputs` and writing `outputs`.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) {
        self.nodes.push(node(op, name, inputs, outputs, attrs));
    }

    /// Appends an existing node unchanged.
    pub(crate) fn push(&mut self, node: NodeProto) {
        self.nodes.push(node);
    }

    /// Appends a single-output node whose output is called `name`; returns that name.
    pub fn op(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        self.node(op, name, inputs, &[name], attrs);
        name.to_string()
    }

    fn push_raw(&mut self, name: &str, dims: &[i64], dtype: DataType, raw: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: dtype as i32,
            name: name.to_string(),
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds an f32 initialiser; returns its name.
    pub fn init_f32(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_raw(name, dims, DataType::Float, raw)
    }

    /// Adds an f16 initialiser (values rounded to nearest); returns its name.
    pub fn init_f16(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        let raw = values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        self.push_raw(name, dims, DataType::Float16, raw)
    }

    /// Adds an i64 initialiser; returns its name.
    pub fn init_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_raw(name, dims, DataType::Int64, raw)
    }

    /// Adds an i32 initialiser; returns its name.
    pub(crate) fn init_i32(&mut self, name: &str, dims: &[i64], values: &[i32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_raw(name, dims, DataType::Int32, raw)
    }

    /// Adds an i8 initialiser; returns its name.
    pub(crate) fn init_i8(&mut self, name: &str, dims: &[i64], values: &[i8]) -> String {
        let raw = values.iter().map(|&v| v as u8).collect();
        self.push_raw(name, dims, DataType::Int8, raw)
    }

    /// Adds a u8 initialiser; returns its name.
    pub(crate) fn init_u8(&mut self, name: &str, dims: &[i64], values: &[u8]) -> String {
        self.push_raw(name, dims, DataType::Uint8, values.to_vec())
    }

    /// The nodes and initialisers added so far, in order (to splice into a graph).
    pub(crate) fn into_parts(self) -> (Vec<NodeProto>, Vec<TensorProto>) {
        (self.nodes, self.initializers)
    }

    /// The finished graph.
    pub fn finish(
        self,
        name: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        doc: &str,
    ) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.to_string(),
            initializer: self.initializers,
            doc_string: doc.to_string(),
            input: inputs,
            output: outputs,
            ..Default::default()
        }
    }
}
