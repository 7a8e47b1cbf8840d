//! Which partitions run emulated, and compiling a partition as the emulated chip runs it.

use crate::error::Result;
use crate::model::analog::{AnalogConfig, Chip, Mode};
use crate::model::network::{Network, PopulationKind};
use crate::plan::compile::{CompileContext, PartitionProgram};
use crate::plan::partition::Plan;

impl Mode {
    /// Per partition of `plan`: emulated or not.
    pub fn per_partition(self, network: &Network, plan: &Plan) -> Result<Vec<bool>> {
        // The first layer: populations fed directly by an input population.
        let ends = network.all_endpoints()?;
        let first: Vec<bool> = (0..network.populations.len())
            .map(|p| {
                network.populations[p].kind != PopulationKind::Input
                    && ends.iter().any(|&(s, t)| {
                        t == p && network.populations[s].kind == PopulationKind::Input
                    })
            })
            .collect();
        Ok(plan
            .partitions
            .iter()
            .map(|part| match self {
                Mode::Ideal => false,
                Mode::Emulated => true,
                Mode::Mixed => part.parts.iter().any(|r| first[r.neurons.population]),
            })
            .collect())
    }
}

/// Compile partition `pid` of `plan` as the emulated chip runs it: quantised weights (through
/// `ctx`'s weight maps), varied coefficients by placement, temporal noise, CADC readout.
pub fn compile_emulated(
    network: &Network,
    plan: &Plan,
    pid: usize,
    config: &AnalogConfig,
    chip: &Chip,
    ctx: &CompileContext,
) -> Result<PartitionProgram> {
    let sub = &plan.substrate;
    let part = &plan.partitions[pid];
    let mut prog = PartitionProgram::compile_with(network, plan, part, ctx)?;
    prog.cadc = config.cadc(sub.readout_bits);
    let mut j = 0;
    for (k, r) in part.parts.iter().enumerate() {
        let pop = &network.populations[r.neurons.population];
        for n in 0..r.neurons.size {
            let circuits = part.circuit_of(sub, k, n);
            let (params, gain) = chip.realise(&pop.neuron_params(r.neurons.offset + n), &circuits);
            let scale = prog.coeffs[j].input_scale;
            let mut c = params.coeffs(sub.dt_us, pop.kind != PopulationKind::Readout);
            c.input_scale = scale;
            c.weight_gain = gain;
            c.noise_sd = config.membrane_noise;
            c.noise_key = crate::model::neuron::pcg_hash(
                (r.neurons.population as u32).wrapping_mul(0x9E37_79B9)
                    ^ (r.neurons.offset + n) as u32,
            );
            prog.coeffs[j] = c;
            j += 1;
        }
    }
    Ok(prog)
}
