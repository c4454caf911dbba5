//! The encoder F_enc as ONNX nodes, mirroring `rccr_models::resnet`: the stem
//! (`conv1` + `bn1`, ReLU, 3x3/2 ceil-mode max-pool) and the residual blocks of
//! `layer1`..`layer4`, with torchvision's node names.

use super::emitter::Emitter;
use crate::graph::Attr;
use crate::ExportError;
use rccr_models::layers::Block;
use rccr_models::resnet::Encoder;

impl Emitter {
    /// The layer4 feature map of the normalised input `x` (`Encoder::forward_t`).
    pub(super) fn encoder(&mut self, enc: &Encoder, x: &str) -> Result<String, ExportError> {
        let mut x = self.stem(enc, x)?;
        for (l, layer) in enc.layers.iter().enumerate() {
            for (b, block) in layer.iter().enumerate() {
                x = self.block(&format!("layer{}.{b}", l + 1), block, &x)?;
            }
        }
        Ok(x)
    }

    /// conv1 (BN folded) -> ReLU -> MaxPool 3x3/2, padding 1, ceil mode
    /// (`Encoder::stem_forward_t`).
    fn stem(&mut self, enc: &Encoder, x: &str) -> Result<String, ExportError> {
        let x = self.conv_bn("conv1", x, &enc.stem)?;
        let x = self.relu("relu", &x);
        Ok(self.g.op(
            "MaxPool",
            "maxpool",
            &[&x],
            vec![
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ("ceil_mode", Attr::Int(1)),
            ],
        ))
    }

    /// relu(main(x) + shortcut(x)), every inner conv but the last followed by a ReLU
    /// (`Block::forward_t`); nodes named `{prefix}.conv{i}`, `{prefix}.downsample`, ...
    fn block(&mut self, prefix: &str, block: &Block, x: &str) -> Result<String, ExportError> {
        let (convs, downsample) = block.convs();
        let last = convs.len() - 1;
        let mut y = x.to_string();
        for (i, c) in convs.into_iter().enumerate() {
            y = self.conv_bn(&format!("{prefix}.conv{}", i + 1), &y, c)?;
            if i != last {
                y = self.relu(&format!("{prefix}.relu{}", i + 1), &y);
            }
        }
        let shortcut = match downsample {
            Some(d) => self.conv_bn(&format!("{prefix}.downsample"), x, d)?,
            None => x.to_string(),
        };
        let sum = self
            .g
            .op("Add", &format!("{prefix}.add"), &[&y, &shortcut], vec![]);
        Ok(self.relu(&format!("{prefix}.relu"), &sum))
    }
}
