//! Numerical parity with an independent PyTorch re-implementation of the DACS DeepLabv2
//! (tests/reference/dacs_deeplabv2.py, run with the PyTorch that `make setup` installs):
//! the same weights (saved by our safetensors writer, read by a hand-written parser
//! there) and input must give the same logits, for both ASPP variants. This checks
//! the layout (Caffe-style stride, ceil-mode pool, dilations, downsample rule), the
//! weight names, eval-mode batch norm and the BGR / mean input normalisation.

use rccr_models::{weights, Backbone, ModelConfig, RccrNet};
use rccr_test_support::{assert_matches_reference, read_f32_le, run_python, Deps};
use std::collections::HashMap;
use tch::{nn, Device, Kind, Tensor};

fn randomise_batch_norm(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with("running_mean") || name.contains("bn") && name.ends_with(".bias") {
                t.copy_(&(Tensor::randn_like(&t) * 0.1));
            } else if name.ends_with("running_var")
                || name.contains("bn") && name.ends_with(".weight")
            {
                t.copy_(&(Tensor::rand_like(&t) * 0.5 + 0.75));
            }
        }
    });
}

fn parity(branches: usize) {
    tch::manual_seed(7);
    let config = ModelConfig {
        aspp_branches: branches,
        ..ModelConfig::new(Backbone::Resnet50, 5)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), &config);
    randomise_batch_norm(&vs);
    let dir = tempfile::tempdir().unwrap();
    let wpath = dir.path().join("model.safetensors");
    let ipath = dir.path().join("input.safetensors");
    let opath = dir.path().join("logits.bin");
    weights::save_var_store(&vs, &wpath, &HashMap::new()).unwrap();
    let rgb = Tensor::rand([2, 3, 57, 70], (Kind::Float, Device::Cpu)) * 255.0;
    weights::write_tensors(&ipath, [("rgb".to_string(), &rgb)], &HashMap::new()).unwrap();

    let (branches, dims) = (branches.to_string(), "3,4,6,3".to_string());
    let args = [&wpath, &ipath, &opath].map(|p| p.display().to_string());
    let args = [&args[..], &[dims, "5".into(), branches]].concat();
    run_python(
        Deps::TorchAndPy,
        "models/tests/reference/dacs_deeplabv2.py",
        &args,
    );
    let reference = read_f32_le(&opath);

    let ours = tch::no_grad(|| net.seg.forward_t(&net.seg.normalize(&rgb), false).logits);
    assert_eq!(ours.size(), [2, 5, 8, 9]);
    let ours: Vec<f32> = Vec::try_from(ours.flatten(0, -1)).unwrap();
    assert_matches_reference(&ours, &reference, "DACS PyTorch");
}

#[test]
fn matches_dacs_pytorch_four_branches() {
    parity(4);
}

#[test]
fn matches_dacs_pytorch_two_branch_release_bug() {
    parity(2);
}
