//! Data-parallel training on c10d with Gloo, on the CPU, with 2 processes:
//! - the shim's collectives give the exact sums / copies / gathers, and a missing peer or
//!   a wrong port is a clear error after the timeout (no hang);
//! - synchronised batch norm over 2 ranks gives the statistics, outputs and input
//!   gradients of one process holding both ranks' images;
//! - a 2-rank training ends with bit-identical weights on both ranks; its first update is
//!   the mean of the two ranks' single-process updates on the same batches; it resumes
//!   exactly from its checkpoint.
//!
//! Child processes are this test binary re-run on an ignored test with the torchrun
//! variables set, or `rccr-train` itself.

mod common;

use common::text;
use rccr_trainer::dist::{sync_bn, GroupConfig, ProcessGroup};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use tch::{nn, Device, Kind, Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_rccr-train");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn group_from_env() -> ProcessGroup {
    let var = |k: &str| std::env::var(k).unwrap();
    ProcessGroup::init(&GroupConfig {
        backend: "gloo".into(),
        host: "127.0.0.1".into(),
        port: var("MASTER_PORT").parse().unwrap(),
        rank: var("RANK").parse().unwrap(),
        size: var("WORLD_SIZE").parse().unwrap(),
        timeout_s: var("RCCR_TEST_TIMEOUT").parse().unwrap(),
        host_store: var("RANK") == "0",
    })
    .unwrap_or_else(|e| {
        eprintln!("CHILD-ERROR: {e}");
        std::process::exit(3)
    })
}

/// Runs the ignored test `name` of this binary as `ranks` processes (of a world of
/// `world`), with `dir` passed on.
fn spawn_children(
    name: &str,
    ranks: &[usize],
    world: usize,
    dir: &Path,
    timeout_s: u32,
) -> Vec<Output> {
    let port = free_port().to_string();
    let children: Vec<Child> = ranks
        .iter()
        .map(|r| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    name,
                    "--ignored",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_PORT", &port)
                .env("RCCR_TEST_DIR", dir)
                .env("RCCR_TEST_TIMEOUT", timeout_s.to_string())
                .env("OMP_NUM_THREADS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
#[ignore = "child process of collectives_are_exact"]
fn child_collectives() {
    let pg = group_from_env();
    let r = pg.rank as f32;
    // all-reduce sum and average of rank-dependent values.
    let a = Tensor::from_slice(&[1.0f32 + r, 10.0 * r, -3.0]);
    let b = Tensor::from_slice(&[2.0 * r + 0.5]);
    pg.all_reduce(&[&a, &b], false).unwrap();
    let avg = Tensor::from_slice(&[4.0f32 * r, 1.0]);
    pg.all_reduce(&[&avg], true).unwrap();
    // broadcast from rank 1.
    let c = Tensor::from_slice(&[r + 7.0, r * r]);
    pg.broadcast(&[&c], 1).unwrap();
    // all-gather.
    let g = pg.all_gather(&Tensor::from_slice(&[r, r + 100.0])).unwrap();
    pg.barrier().unwrap();
    let v = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    println!(
        "RESULT {:?} {:?} {:?} {:?} {:?} {:?}",
        v(&a),
        v(&b),
        v(&avg),
        v(&c),
        v(&g[0]),
        v(&g[1])
    );
}

#[test]
fn collectives_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let outs = spawn_children("child_collectives", &[0, 1], 2, dir.path(), 30);
    // Hand-computed for ranks 0 and 1.
    let expect = "RESULT [3.0, 10.0, -6.0] [3.0] [2.0, 1.0] [8.0, 1.0] [0.0, 100.0] [1.0, 101.0]";
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
        assert!(text(o).contains(expect), "{}", text(o));
    }
}

#[test]
fn a_missing_peer_is_a_clear_error_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    // Rank 0 of 2 alone: nobody joins.
    let outs = spawn_children("child_collectives", &[0], 2, dir.path(), 3);
    let out = text(&outs[0]);
    assert_eq!(outs[0].status.code(), Some(3), "{out}");
    assert!(
        out.contains("CHILD-ERROR: c10d init failed (rank 0 of 2)"),
        "{out}"
    );
    assert!(out.contains("1/2 clients joined"), "{out}");
    assert!(
        !out.contains("Exception raised from"),
        "the C++ stack trace is cut: {out}"
    );
    assert!(start.elapsed().as_secs() < 60);
    // Rank 1 of 2 on a port where nobody listens.
    let outs = spawn_children("child_collectives", &[1], 2, dir.path(), 3);
    let out = text(&outs[0]);
    assert_eq!(outs[0].status.code(), Some(3), "{out}");
    assert!(out.contains("c10d init failed (rank 1 of 2)"), "{out}");
}

/// The input of rank `r` for the batch-norm test (and, concatenated, of one process).
fn bn_input(r: i64) -> Tensor {
    tch::manual_seed(100 + r);
    Tensor::randn([3 + r, 4, 5, 6], (Kind::Float, Device::Cpu)) * (1.0 + r as f64) + 0.5
}

/// A fresh BN layer with set affine parameters, and a fixed output weighting.
fn bn_layer(vs: &nn::VarStore) -> (nn::BatchNorm, Tensor) {
    let bn = nn::batch_norm2d(vs.root() / "bn", 4, Default::default());
    tch::no_grad(|| {
        bn.ws
            .as_ref()
            .unwrap()
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[1.5f32, 0.5, 2.0, 1.0]));
        bn.bs
            .as_ref()
            .unwrap()
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[0.1f32, -0.2, 0.0, 0.3]));
    });
    let w = Tensor::arange(4 * 5 * 6, (Kind::Float, Device::Cpu)).view([1, 4, 5, 6]) / 50.0;
    (bn, w)
}

#[test]
#[ignore = "child process of synchronised_batch_norm_matches_one_process"]
fn child_sync_bn() {
    let pg = group_from_env();
    let vs = nn::VarStore::new(Device::Cpu);
    let (bn, w) = bn_layer(&vs);
    let x = bn_input(pg.rank as i64).set_requires_grad(true);
    let y = sync_bn::forward(&pg, &x, &bn).unwrap();
    (&y * &w).sum(Kind::Float).backward();
    let dir = PathBuf::from(std::env::var("RCCR_TEST_DIR").unwrap());
    Tensor::write_safetensors(
        &[
            ("y", &y.detach()),
            ("dx", &x.grad()),
            ("mean", &bn.running_mean),
            ("var", &bn.running_var),
        ],
        dir.join(format!("bn{}.safetensors", pg.rank)),
    )
    .unwrap();
}

#[test]
fn synchronised_batch_norm_matches_one_process() {
    let dir = tempfile::tempdir().unwrap();
    for o in spawn_children("child_sync_bn", &[0, 1], 2, dir.path(), 30) {
        assert!(o.status.success(), "{}", text(&o));
    }
    // One process holding both ranks' images, tch's own batch norm.
    let vs = nn::VarStore::new(Device::Cpu);
    let (bn, w) = bn_layer(&vs);
    let x = Tensor::cat(&[bn_input(0), bn_input(1)], 0).set_requires_grad(true);
    let y = nn::ModuleT::forward_t(&bn, &x, true);
    (&y * Tensor::cat(
        &[w.expand([3, 4, 5, 6], false), w.expand([4, 4, 5, 6], false)],
        0,
    ))
    .sum(Kind::Float)
    .backward();
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        let d = (a - b).abs().max().double_value(&[]);
        assert!(d < 1e-4, "{what}: max difference {d}");
    };
    for r in 0..2i64 {
        let got: BTreeMap<String, Tensor> =
            Tensor::read_safetensors(dir.path().join(format!("bn{r}.safetensors")))
                .unwrap()
                .into_iter()
                .collect();
        let rows = if r == 0 { (0, 3) } else { (3, 4) };
        close(&got["y"], &y.narrow(0, rows.0, rows.1), "output");
        close(
            &got["dx"],
            &x.grad().narrow(0, rows.0, rows.1),
            "input gradient",
        );
        close(&got["mean"], &bn.running_mean, "running mean");
        close(&got["var"], &bn.running_var, "running variance");
    }
}

fn make_data(dir: &Path) {
    common::synth_cli(BIN, dir, 8);
}

/// `rccr-train train` on `ranks` processes (1: no launcher variables).
fn train(data: &Path, out: &Path, ranks: usize, extra: &[&str]) -> Vec<Output> {
    let port = free_port().to_string();
    let children: Vec<Child> = (0..ranks)
        .map(|r| {
            let mut c = common::train_command(BIN, &common::gta5(data), "128x64", data, out);
            c.args([
                "--no-ps",
                "--lr",
                "0.01",
                "--mu-schedule",
                "constant",
                "--mu-max",
                "1",
                "--dist-timeout",
                "60",
                "--save-all-ranks",
                "--seed",
                "4",
            ])
            .args(extra);
            if ranks > 1 {
                c.env("RANK", r.to_string())
                    .env("WORLD_SIZE", ranks.to_string())
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", &port);
            }
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
    }
    outs
}

fn load(path: &Path) -> BTreeMap<String, Tensor> {
    rccr_trainer::checkpoint::load(path)
        .unwrap()
        .file
        .tensors
        .into_iter()
        .collect()
}

fn ck(run: &Path, it: u64) -> PathBuf {
    run.join(format!("checkpoints/iter_{it:07}.safetensors"))
}

#[test]
fn two_ranks_agree_average_gradients_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);

    // (1) 6 iterations on 2 ranks: identical student and teacher on both, bank gathered.
    let full = tmp.path().join("full");
    train(
        &data,
        &full,
        2,
        &["--iterations", "6", "--save-every", "3", "--val-every", "0"],
    );
    let r0 = load(&ck(&full, 6));
    let r1 = load(&full.join("rank1/iter_0000006.safetensors"));
    for (n, t) in &r0 {
        if n.starts_with("student.") || n.starts_with("teacher.") {
            assert!(t.equal(&r1[n]), "{n} differs between the ranks");
        }
    }
    let bank0 = &r0["bank.0.embeddings"];
    let single = tmp.path().join("single");
    train(
        &data,
        &single,
        1,
        &["--iterations", "6", "--val-every", "0"],
    );
    let s = load(&ck(&single, 6));
    assert_eq!(
        bank0.size()[0],
        2 * s["bank.0.embeddings"].size()[0],
        "the bank holds both ranks' samples"
    );

    // (2) resume the 2-rank run from iteration 3: the same weights as without stopping.
    let part = tmp.path().join("part");
    let schedule = ["--iterations", "6", "--save-every", "3", "--val-every", "0"];
    train(
        &data,
        &part,
        2,
        &[&schedule[..], &["--stop-at", "3"]].concat(),
    );
    let resume_from = ck(&part, 3);
    train(
        &data,
        &part,
        2,
        &[&schedule[..], &["--resume", resume_from.to_str().unwrap()]].concat(),
    );
    let resumed = load(&ck(&part, 6));
    for (n, t) in &r0 {
        if n.starts_with("student.") || n.starts_with("teacher.") {
            assert!(t.equal(&resumed[n]), "{n} differs after resume");
        }
    }

    // (3) one iteration: the 2-rank update is the mean of the ranks' single-process updates.
    let one = ["--iterations", "1", "--val-every", "0"];
    let two = tmp.path().join("two");
    train(&data, &two, 2, &one);
    let mut per_rank = Vec::new();
    for r in ["0", "1"] {
        let d = tmp.path().join(format!("as{r}"));
        train(&data, &d, 1, &[&one[..], &["--data-rank", r]].concat());
        per_rank.push(load(&ck(&d, 1)));
    }
    let two = load(&ck(&two, 1));
    let mut compared = 0;
    for (n, t) in &two {
        let Some(var) = n.strip_prefix("student.") else {
            continue;
        };
        if var.ends_with("running_mean")
            || var.ends_with("running_var")
            || var.contains("num_batches")
        {
            continue;
        }
        let mean = (&per_rank[0][n] + &per_rank[1][n]) / 2.0;
        let scale = t.abs().max().double_value(&[]).max(1e-6);
        let d = (t - &mean).abs().max().double_value(&[]);
        assert!(
            d <= 1e-5 * scale,
            "{var}: 2-rank update differs from the mean by {d}"
        );
        compared += 1;
    }
    assert!(compared > 20, "compared {compared} variables");
    // And the ranks' single-process runs really differ (the comparison can fail).
    let n = "student.layer5.conv2d_list.0.weight";
    assert!(!per_rank[0][n].equal(&per_rank[1][n]));
}

#[test]
fn torchrun_launches_two_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let run = tmp.path().join("run");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/torchrun"))
        .args(["--no-python", "--nproc-per-node", "2", "--master-port"])
        .arg(free_port().to_string())
        .arg(BIN)
        .args(common::tiny_train_args(
            &common::gta5(&data),
            "128x64",
            &data,
            &run,
        ))
        .args(["--iterations", "3", "--device", "cpu", "--log-every", "1"])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["run"]["dist"]["world_size"], 2);
    assert_eq!(cfg["run"]["dist"]["backend_used"], "gloo");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "train")
        .collect();
    assert_eq!(lines.len(), 3, "rank 0 alone logs");
    assert!(lines.iter().all(|l| l["world_size"] == 2));
}
