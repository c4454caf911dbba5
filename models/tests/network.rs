//! Network structure tests: reference parameter counts (docs/design.md#reference-figures), output
//! sizes, forward + backward, and the output-size formula.

use rccr_models::{count_parameters, Backbone, ModelConfig, RccrNet};
use tch::{nn, Device, Kind, Tensor};

fn build(config: &ModelConfig) -> (nn::VarStore, RccrNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), config);
    (vs, net)
}

#[test]
fn resnet101_parameter_counts_match_the_reference() {
    // Reference figures of docs/design.md#reference-figures (DACS DeepLabv2-R101, 19 classes,
    // BN affine counted): 43,901,068; with the projector 48,359,692.
    let (vs, _) = build(&ModelConfig::new(Backbone::Resnet101, 19));
    let counts = count_parameters(&vs);
    assert_eq!(counts.parameters, 43_901_068);
    assert_eq!(counts.parameters + counts.projector_parameters, 48_359_692);
}

#[test]
fn resnet50_and_two_branch_counts() {
    // torchvision resnet50 has 25,557,032 parameters of which the fc layer holds
    // 2048 * 1000 + 1000 = 2,049,000; each ASPP branch adds 3*3*2048*19 + 19 = 350,227.
    let (vs, _) = build(&ModelConfig::new(Backbone::Resnet50, 19));
    assert_eq!(
        count_parameters(&vs).parameters,
        25_557_032 - 2_049_000 + 4 * 350_227
    );
    let two = ModelConfig {
        aspp_branches: 2,
        ..ModelConfig::new(Backbone::Resnet50, 19)
    };
    let (vs, _) = build(&two);
    assert_eq!(
        count_parameters(&vs).parameters,
        25_557_032 - 2_049_000 + 2 * 350_227
    );
}

#[test]
fn output_sizes_are_one_eighth_with_ceil_pooling() {
    // docs/design.md#reference-figures: 512x512 -> 65x65, 512x1024 -> 65x129.
    assert_eq!(ModelConfig::output_size(512, 512), (65, 65));
    assert_eq!(ModelConfig::output_size(512, 1024), (65, 129));
    let config = ModelConfig::new(Backbone::Small, 19);
    let (_vs, net) = build(&config);
    for (h, w, eh, ew) in [(512, 512, 65, 65), (512, 1024, 65, 129), (97, 131, 13, 17)] {
        let out = tch::no_grad(|| {
            net.seg.forward_t(
                &Tensor::zeros([1, 3, h, w], (Kind::Float, Device::Cpu)),
                false,
            )
        });
        assert_eq!(out.logits.size(), [1, 19, eh, ew], "input {h}x{w}");
        assert_eq!(out.features.size(), [1, 128, eh, ew]);
        assert_eq!(ModelConfig::output_size(h, w), (eh, ew));
        let emb = net.projector.forward(&out.features);
        assert_eq!(emb.size(), [1, 128, eh, ew]);
    }
}

#[test]
fn resnet101_forward_shape() {
    let (_vs, net) = build(&ModelConfig::new(Backbone::Resnet101, 19));
    let out = tch::no_grad(|| {
        net.seg.forward_t(
            &Tensor::zeros([1, 3, 129, 97], (Kind::Float, Device::Cpu)),
            false,
        )
    });
    assert_eq!(out.logits.size(), [1, 19, 17, 13]);
    assert_eq!(out.features.size(), [1, 2048, 17, 13]);
}

#[test]
fn projector_embeddings_are_unit_length() {
    let config = ModelConfig::new(Backbone::Small, 5);
    let (_vs, net) = build(&config);
    let feats = Tensor::randn([2, 128, 4, 6], (Kind::Float, Device::Cpu));
    let emb = tch::no_grad(|| net.projector.forward(&feats));
    let norms = emb
        .pow_tensor_scalar(2)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .sqrt();
    let max_dev = (norms - 1.0).abs().max().double_value(&[]);
    assert!(max_dev < 1e-5, "norm deviates by {max_dev}");
}

#[test]
fn small_forward_backward_reaches_the_stem() {
    tch::manual_seed(0);
    let config = ModelConfig::new(Backbone::Small, 4);
    let (vs, net) = build(&config);
    let xs = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu)) * 255.0;
    let xs = net.seg.normalize(&xs);
    let out = net.seg.forward_t(&xs, true);
    let emb = net.projector.forward(&out.features);
    let target = Tensor::randint(4, [2, 9, 9], (Kind::Int64, Device::Cpu));
    let loss =
        out.logits
            .cross_entropy_loss::<Tensor>(&target, None, tch::Reduction::Mean, 255, 0.0)
            + emb.mean(Kind::Float);
    loss.backward();
    let vars = vs.variables();
    for name in [
        "conv1.weight",
        "layer5.conv2d_list.0.weight",
        "projector.0.weight",
        "layer4.0.conv2.weight",
    ] {
        let g = vars[name].grad();
        assert!(g.defined(), "{name} got no gradient");
        assert!(
            g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{name} gradient is zero"
        );
    }
}
