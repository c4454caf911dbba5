//! Weight files: save -> load round trip, torchvision-named import (missing / unexpected
//! reporting, shape mismatch as an error), checkpoint loading and its error cases.

use rccr_models::checkpoint::{self, CHECKPOINT_FORMAT, TEACHER};
use rccr_models::{weights, Backbone, ModelConfig, ModelError, RccrNet};
use std::collections::{BTreeMap, HashMap};
use tch::{nn, Device, Kind, Tensor};

fn small() -> ModelConfig {
    ModelConfig::new(Backbone::Small, 6)
}

fn forward(net: &RccrNet, xs: &Tensor) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let out = net.seg.forward_t(xs, false);
        let emb = net.projector.forward(&out.features);
        (out.logits, emb)
    })
}

#[test]
fn save_then_load_gives_identical_outputs() {
    tch::manual_seed(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = RccrNet::new(&vs.root(), &small());
    checkpoint::save_model(&vs, &small(), &path, 42).unwrap();
    let loaded = checkpoint::load_network(&path, TEACHER, Device::Cpu).unwrap();
    assert!(loaded.report.is_exact(), "{:?}", loaded.report);
    assert_eq!(loaded.info.iteration, 42);
    assert_eq!(loaded.info.model, small());
    let xs = Tensor::randn([1, 3, 40, 48], (Kind::Float, Device::Cpu));
    let (a, b) = forward(&net, &xs);
    let (c, d) = forward(&loaded.net, &xs);
    assert!(a.equal(&c) && b.equal(&d));
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// torchvision's state-dict names for a ResNet with `blocks` bottleneck blocks per layer,
/// written out from torchvision's `resnet.py` structure (independent of our builder).
fn torchvision_names(blocks: [usize; 4]) -> Vec<String> {
    let bn = |p: &str| {
        [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ]
        .map(|s| format!("{p}.{s}"))
    };
    let mut names = vec!["conv1.weight".to_string()];
    names.extend(bn("bn1"));
    for (l, &n) in blocks.iter().enumerate() {
        for b in 0..n {
            let p = format!("layer{}.{b}", l + 1);
            for i in 1..=3 {
                names.push(format!("{p}.conv{i}.weight"));
                names.extend(bn(&format!("{p}.bn{i}")));
            }
            if b == 0 {
                names.push(format!("{p}.downsample.0.weight"));
                names.extend(bn(&format!("{p}.downsample.1")));
            }
        }
    }
    names.push("fc.weight".into());
    names.push("fc.bias".into());
    names
}

#[test]
fn torchvision_import_reports_missing_and_unexpected() {
    let config = ModelConfig::new(Backbone::Resnet50, 19);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = RccrNet::new(&vs.root(), &config);
    let vars = vs.variables();
    let mut file = BTreeMap::new();
    for name in torchvision_names([3, 4, 6, 3]) {
        let t = match vars.get(&name) {
            Some(v) => Tensor::full(v.size(), 0.5, (Kind::Float, Device::Cpu)),
            None if name.ends_with("num_batches_tracked") => Tensor::from(7i64),
            None if name == "fc.weight" => Tensor::zeros([1000, 2048], (Kind::Float, Device::Cpu)),
            None if name == "fc.bias" => Tensor::zeros([1000], (Kind::Float, Device::Cpu)),
            None => panic!("our model lacks torchvision's `{name}`"),
        };
        file.insert(name, t);
    }
    file.remove("layer2.1.bn2.running_var");
    file.insert(
        "extra.weight".into(),
        Tensor::zeros([3], (Kind::Float, Device::Cpu)),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r50.safetensors");
    weights::write_tensors(
        &path,
        file.iter().map(|(n, t)| (n.clone(), t)),
        &HashMap::new(),
    )
    .unwrap();
    let report = weights::import_torchvision(&vs, &path).unwrap();
    assert_eq!(report.missing, vec!["layer2.1.bn2.running_var".to_string()]);
    assert_eq!(
        report.unexpected,
        vec![
            "extra.weight".to_string(),
            "fc.bias".to_string(),
            "fc.weight".to_string()
        ]
    );
    let w = &vs.variables()["layer3.5.conv3.weight"];
    assert_eq!(w.mean(Kind::Float).double_value(&[]), 0.5);
    // The classifier is not part of the backbone and keeps its initial weights.
    assert_ne!(
        vs.variables()["layer5.conv2d_list.0.weight"]
            .mean(Kind::Float)
            .double_value(&[]),
        0.5
    );
}

#[test]
fn shape_mismatch_is_an_error_naming_the_tensor() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = RccrNet::new(&vs.root(), &small());
    let before = vs.variables()["conv1.weight"].copy();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let ok = Tensor::ones([16, 3, 7, 7], (Kind::Float, Device::Cpu));
    let wrong = Tensor::zeros([64, 3, 7, 7], (Kind::Float, Device::Cpu));
    weights::write_tensors(
        &path,
        [
            (
                "bn1.weight".to_string(),
                &Tensor::ones([16], (Kind::Float, Device::Cpu)),
            ),
            ("conv1.weight".to_string(), &wrong),
        ],
        &HashMap::new(),
    )
    .unwrap();
    let err = weights::import_torchvision(&vs, &path).unwrap_err();
    match &err {
        ModelError::ShapeMismatch {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "conv1.weight");
            assert_eq!(expected, &vec![16, 3, 7, 7]);
            assert_eq!(found, &vec![64, 3, 7, 7]);
        }
        e => panic!("unexpected error {e}"),
    }
    assert!(err.to_string().contains("conv1.weight"));
    // Nothing was copied.
    assert!(vs.variables()["conv1.weight"].equal(&before));
    drop(ok);
}

#[test]
fn checkpoint_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    // Missing file.
    let err = checkpoint::load_network(&dir.path().join("nope.safetensors"), TEACHER, Device::Cpu)
        .unwrap_err();
    assert!(err.to_string().contains("nope.safetensors"), "{err}");
    // Not a safetensors file at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"hello world, not tensors").unwrap();
    let err = checkpoint::load_network(&junk, TEACHER, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("junk.safetensors"), "{err}");
    // Safetensors without rccr metadata.
    let plain = dir.path().join("plain.safetensors");
    let t = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    weights::write_tensors(&plain, [("x".to_string(), &t)], &HashMap::new()).unwrap();
    let err = checkpoint::load_network(&plain, TEACHER, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("not an rccr checkpoint"), "{err}");
    // A checkpoint without a teacher.
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = RccrNet::new(&vs.root(), &small());
    let student: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("student.{n}"), t))
        .collect();
    let ck = dir.path().join("ck.safetensors");
    weights::write_tensors(
        &ck,
        student.iter().map(|(n, t)| (n.clone(), t)),
        &checkpoint::model_metadata(CHECKPOINT_FORMAT, &small(), 3),
    )
    .unwrap();
    let err = checkpoint::load_network(&ck, TEACHER, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("no `teacher` network"), "{err}");
    assert!(checkpoint::load_network(&ck, checkpoint::STUDENT, Device::Cpu).is_ok());
    // A truncated checkpoint.
    let bytes = std::fs::read(&ck).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load_network(&cut, checkpoint::STUDENT, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("cut.safetensors"), "{err}");
}

#[test]
fn device_parsing() {
    use rccr_models::device::parse_device;
    assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    assert!(parse_device("tpu").is_err());
    if !tch::Cuda::is_available() {
        let err = parse_device("cuda").unwrap_err().to_string();
        assert!(err.contains("no CUDA device"), "{err}");
        assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
    }
}
