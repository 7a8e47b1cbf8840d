//! Criterion entry point: the MNIST network (784-256-10, 5 partitions) on random
//! time-to-first-spike input, per backend. Throughput counts neuron updates
//! (samples × steps × non-input neurons). `neuropart bench` prints the same comparison as a table.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use neuropart::prelude::*;

fn mnist(steps: u32) -> Executor {
    let sub = Substrate::bss2();
    let mut net = neuropart::mnist_network(1).build(&sub).unwrap();
    net.steps = steps;
    Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap()
}

fn cpu_mnist(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_mnist");
    for (batch, steps) in [(256usize, 100u32), (256, 30)] {
        let exec = mnist(steps);
        let inputs = neuropart::bench::random_inputs(&exec, batch, 0.19, 7).unwrap();
        g.throughput(Throughput::Elements((batch * steps as usize * 266) as u64));
        g.bench_function(format!("batch{batch}_T{steps}"), |b| {
            b.iter(|| exec.run(&CpuBackend, &inputs, Observe::Scores).unwrap())
        });
    }
    g.finish();
}

fn gpu_mnist(c: &mut Criterion) {
    let gpu = match neuropart::gpu::GpuBackend::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu_mnist skipped: {e}");
            return;
        }
    };
    eprintln!("gpu_mnist on {}", gpu.name());
    let mut g = c.benchmark_group("gpu_mnist");
    for (batch, steps) in [(256usize, 100u32), (4096, 100)] {
        let exec = mnist(steps);
        let inputs = neuropart::bench::random_inputs(&exec, batch, 0.19, 7).unwrap();
        g.throughput(Throughput::Elements((batch * steps as usize * 266) as u64));
        // `run` waits for the device and reads the spikes back before it returns.
        g.bench_function(format!("batch{batch}_T{steps}"), |b| {
            b.iter(|| exec.run(&gpu, &inputs, Observe::Scores).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = cpu_mnist, gpu_mnist
}
criterion_main!(benches);
