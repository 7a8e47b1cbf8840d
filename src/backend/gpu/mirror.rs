//! Rust structs and the WGSL structs they mirror, for the layout test.

use super::*;

/// Rust structs and the WGSL structs they mirror, for the layout test: (WGSL struct, the
/// program that declares it, Rust size, Rust field offsets in declaration order).
pub fn mirrored_layouts() -> Vec<(&'static str, &'static str, usize, Vec<usize>)> {
    use std::mem::{offset_of, size_of};
    vec![
        (
            "Params",
            feedforward::SOURCE,
            size_of::<SimParams>(),
            vec![
                offset_of!(SimParams, neurons),
                offset_of!(SimParams, channels),
                offset_of!(SimParams, steps),
                offset_of!(SimParams, slots),
                offset_of!(SimParams, stages),
                offset_of!(SimParams, samples),
                offset_of!(SimParams, store_sample),
                offset_of!(SimParams, noise_sample),
                offset_of!(SimParams, grid_x),
                offset_of!(SimParams, blocks),
                offset_of!(SimParams, words),
                offset_of!(SimParams, record),
                offset_of!(SimParams, syn_off_base),
                offset_of!(SimParams, syn_base),
                offset_of!(SimParams, source_base),
                offset_of!(SimParams, cadc_base),
                offset_of!(SimParams, sources),
                offset_of!(SimParams, delay),
                offset_of!(SimParams, noise_seed),
                offset_of!(SimParams, cadc),
                offset_of!(SimParams, cadc_offset),
                offset_of!(SimParams, cadc_gain),
                offset_of!(SimParams, cadc_top),
                offset_of!(SimParams, store_samples),
                offset_of!(SimParams, flag_word),
                offset_of!(SimParams, zero),
                offset_of!(SimParams, gather_grid_x),
                offset_of!(SimParams, mem_base),
                offset_of!(SimParams, mem_stride),
                offset_of!(SimParams, pad),
                offset_of!(SimParams, pad) + 4,
                offset_of!(SimParams, pad) + 8,
            ],
        ),
        (
            "Coeffs",
            feedforward::SOURCE,
            size_of::<NeuronCoeffs>(),
            vec![
                offset_of!(NeuronCoeffs, a_syn),
                offset_of!(NeuronCoeffs, k_mem),
                offset_of!(NeuronCoeffs, v_leak),
                offset_of!(NeuronCoeffs, v_reset),
                offset_of!(NeuronCoeffs, v_th),
                offset_of!(NeuronCoeffs, refractory_steps),
                offset_of!(NeuronCoeffs, spiking),
                offset_of!(NeuronCoeffs, weight_gain),
                offset_of!(NeuronCoeffs, input_scale),
                offset_of!(NeuronCoeffs, noise_sd),
                offset_of!(NeuronCoeffs, noise_key),
                offset_of!(NeuronCoeffs, membrane_first),
            ],
        ),
        (
            "State",
            lif::SOURCE,
            size_of::<GpuState>(),
            vec![
                offset_of!(GpuState, i),
                offset_of!(GpuState, v),
                offset_of!(GpuState, refractory),
            ],
        ),
        ("LossParams", loss::SOURCE, size_of::<loss::LossParams>(), {
            use loss::LossParams as P;
            vec![
                offset_of!(P, samples),
                offset_of!(P, steps),
                offset_of!(P, classes),
                offset_of!(P, mem_base),
                offset_of!(P, batch),
                offset_of!(P, readout_scale),
                offset_of!(P, reg_readout),
                offset_of!(P, first),
                offset_of!(P, grid_x),
                offset_of!(P, stats_base),
                offset_of!(P, pad),
                offset_of!(P, pad) + 4,
            ]
        }),
        (
            "BackParams",
            backward::SOURCE,
            size_of::<backward::BackParams>(),
            {
                use backward::BackParams as P;
                vec![
                    offset_of!(P, samples),
                    offset_of!(P, steps),
                    offset_of!(P, neurons),
                    offset_of!(P, mem_base),
                    offset_of!(P, raster_base),
                    offset_of!(P, words),
                    offset_of!(P, csr_base),
                    offset_of!(P, spiking),
                    offset_of!(P, k_mem),
                    offset_of!(P, a_syn),
                    offset_of!(P, v_th),
                    offset_of!(P, alpha),
                    offset_of!(P, lam),
                    offset_of!(P, batch),
                    offset_of!(P, out_first),
                    offset_of!(P, out_count),
                    offset_of!(P, grid_x),
                    offset_of!(P, membrane_first),
                    offset_of!(P, pad),
                    offset_of!(P, pad) + 4,
                ]
            },
        ),
        ("GradParams", grad::SOURCE, size_of::<grad::GradParams>(), {
            use grad::GradParams as P;
            vec![
                offset_of!(P, steps),
                offset_of!(P, ns),
                offset_of!(P, nt),
                offset_of!(P, delay),
                offset_of!(P, w_base),
                offset_of!(P, tgt_base),
                offset_of!(P, csr_base),
                offset_of!(P, first),
                offset_of!(P, list),
                offset_of!(P, by_weight),
                offset_of!(P, synapses),
                offset_of!(P, numel),
                offset_of!(P, grid_x),
                offset_of!(P, pad),
                offset_of!(P, pad) + 4,
                offset_of!(P, pad) + 8,
            ]
        }),
        (
            "OptParams",
            optimiser::SOURCE,
            size_of::<optimiser::OptParams>(),
            {
                use optimiser::OptParams as P;
                vec![
                    offset_of!(P, w_base),
                    offset_of!(P, numel),
                    offset_of!(P, lr),
                    offset_of!(P, limit),
                    offset_of!(P, reg_n),
                    offset_of!(P, inv_c1),
                    offset_of!(P, inv_c2),
                    offset_of!(P, b1),
                    offset_of!(P, b2),
                    offset_of!(P, eps),
                    offset_of!(P, quantised),
                    offset_of!(P, map_scale),
                    offset_of!(P, map_max),
                    offset_of!(P, partial_base),
                    offset_of!(P, ns),
                    offset_of!(P, nt),
                    offset_of!(P, bound_base),
                    offset_of!(P, first_into),
                    offset_of!(P, by_target),
                    offset_of!(P, populations),
                    offset_of!(P, pop_table),
                    offset_of!(P, exp_base),
                    offset_of!(P, grid_x),
                    offset_of!(P, pad),
                ]
            },
        ),
        (
            "WriteParams",
            weights::SOURCE,
            size_of::<weights::WriteParams>(),
            {
                use weights::WriteParams as P;
                vec![
                    offset_of!(P, words),
                    offset_of!(P, table_base),
                    offset_of!(P, exp_at),
                    offset_of!(P, neurons),
                    offset_of!(P, grid_x),
                    offset_of!(P, pad),
                    offset_of!(P, pad) + 4,
                    offset_of!(P, pad) + 8,
                ]
            },
        ),
        (
            "CompactParams",
            compact::SOURCE,
            size_of::<compact::CompactParams>(),
            vec![
                offset_of!(compact::CompactParams, samples),
                offset_of!(compact::CompactParams, steps),
                offset_of!(compact::CompactParams, words),
                offset_of!(compact::CompactParams, neurons),
                offset_of!(compact::CompactParams, capacity),
                offset_of!(compact::CompactParams, grid_x),
                offset_of!(compact::CompactParams, pad),
                offset_of!(compact::CompactParams, pad) + 4,
            ],
        ),
    ]
}
