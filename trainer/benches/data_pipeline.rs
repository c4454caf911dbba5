//! Throughput of the data side (loaders and the synthetic generator): prints
//! - the synthetic generator's image/label pairs per second at its default size;
//! - the TrainLoader's samples per second at the paper's GTA5 setting (1914x1052 PNGs
//!   resized to 1280x720, 512x512 crops, batch 2) and at the synthetic default
//!   (512x256, crop 256), for 1 worker and for all cores (the consumer does no work
//!   here, so this is the pipeline's ceiling).
//!
//! Run: `cargo bench -p rccr-trainer --bench data_pipeline` (RCCR_BENCH_BATCHES=N to
//! change the measured batches, default 20).

use std::time::Instant;

use rccr_trainer::data::{DatasetSpec, LoaderConfig, Split, TrainLoader};
use rccr_trainer::synth::{run, ImageSize, SynthArgs};

fn loader_rate(spec: &DatasetSpec, resize: (u32, u32), crop: u32, workers: usize, batches: usize) {
    let cfg = LoaderConfig {
        resize: Some(resize),
        crop,
        batch_size: 2,
        seed: 0,
        workers,
        prefetch: 4,
        split: Split::Train,
        ..LoaderConfig::default()
    };
    let mut loader = TrainLoader::open(spec, &cfg, 0).expect("open");
    // Warm-up: fill the queue once.
    loader.next_batch().expect("batch");
    let start = Instant::now();
    for _ in 0..batches {
        loader.next_batch().expect("batch");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  loader {}x{} -> crop {crop}, {workers} worker(s): {:.1} samples/s ({:.1} ms/batch of 2)",
        resize.0,
        resize.1,
        (2 * batches) as f64 / secs,
        1000.0 * secs / batches as f64,
    );
}

fn main() {
    let batches: usize = std::env::var("RCCR_BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let dir = tempfile::tempdir().expect("tempdir");
    println!("data pipeline benchmark ({cores} cores)");

    let mut a = SynthArgs::new(dir.path().join("synth"));
    a.count = 200;
    a.val_count = 50;
    let r = run(&a).expect("synth");
    println!(
        "  synth default {}: {} pairs in {:.2} s = {:.1} pairs/s",
        a.size,
        2 * (a.count + a.val_count),
        r.seconds,
        r.images_per_second
    );
    let synth: DatasetSpec = r.source_spec.parse().expect("spec");

    let mut g = SynthArgs::new(dir.path().join("gta-size"));
    g.count = 24;
    g.val_count = 1;
    g.size = ImageSize {
        width: 1914,
        height: 1052,
    };
    let rg = run(&g).expect("synth");
    println!(
        "  synth at GTA5 size 1914x1052: {:.1} pairs/s",
        rg.images_per_second
    );
    let gta: DatasetSpec = rg.source_spec.parse().expect("spec");

    for workers in [1, cores] {
        loader_rate(&synth, (512, 256), 256, workers, batches);
        loader_rate(&gta, (1280, 720), 512, workers, batches);
    }
}
