// Writes the fixed-point weights into one program's neurons of one population, and their
// input scale, from the optimiser's mapped weights and exponents (src/backend/gpu/weights.rs
// owns this file): what src/plan/compile.rs `WeightStage::write` does on the host, in place
// in the resident program buffer that the simulation kernels read, so that the weights never
// leave the device.

// Mirrors `WriteParams` in src/backend/gpu/weights.rs.
struct WriteParams {
    // Program words to write, and where their table starts in `table`: word indices, then
    // words + 1 offsets, then the global indices of the weights summed into each word.
    words: u32,
    table_base: u32,
    // The (scale, input scale) pair of the population in `scalars`.
    exp_at: u32,
    // The partition's neurons of the population, from local neuron `first` on.
    neurons: u32,
    grid_x: u32,
    first: u32,
    pad0: u32,
    pad1: u32,
}

override WG: u32 = 64u;
// Words per `Coeffs` and the word of its input scale (from the Rust struct's layout).
override COEFF_WORDS: u32 = 12u;
override INPUT_SCALE_WORD: u32 = 8u;

@group(0) @binding(0) var<uniform> W: WriteParams;
@group(0) @binding(1) var<storage, read_write> program: array<u32>;
@group(0) @binding(2) var<storage, read_write> coeffs: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read> mapped: array<f32>;
@group(0) @binding(5) var<storage, read> scalars: array<f32>;

// Round half away from zero, as Rust's f32::round.
fn round_away(x: f32) -> f32 {
    let t = trunc(x);
    return select(t, t + sign(x), abs(x - t) >= 0.5);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * W.grid_x + wg.x) * WG + lid;
    if (i < W.neurons) {
        coeffs[(W.first + i) * COEFF_WORDS + INPUT_SCALE_WORD] = bitcast<u32>(scalars[W.exp_at + 1u]);
    }
    if (i >= W.words) {
        return;
    }
    let scale = scalars[W.exp_at];
    let offsets = W.table_base + W.words;
    let list = offsets + W.words + 1u;
    var sum = 0i;
    for (var e = table[offsets + i]; e < table[offsets + i + 1u]; e++) {
        sum += i32(round_away(mapped[table[list + e]] * scale));
    }
    program[table[W.table_base + i]] = bitcast<u32>(sum);
}
