//! `neuropart.Plan`: how a network is cut into partitions and scheduled.

use crate::*;

/// How a network partitions onto a substrate: partitions, waves, rounds and cost.
#[pyclass(module = "neuropart")]
pub(crate) struct Plan {
    pub(crate) network: neuropart::Network,
    pub(crate) plan: neuropart::Plan,
    pub(crate) report: PlanReport,
}

#[pymethods]
impl Plan {
    /// Per partition: id, neurons, circuits used and available, synapse rows, placed ranges
    /// and sources.
    #[getter]
    fn partitions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json(py, &self.report.partitions)
    }

    /// Waves: every partition's dependencies lie in earlier waves.
    #[getter]
    fn waves(&self) -> Vec<Vec<usize>> {
        self.report.schedule.waves.clone()
    }

    /// Rounds: partitions that run at the same time (a wave split by the chips).
    #[getter]
    fn rounds(&self) -> Vec<Vec<usize>> {
        self.report.schedule.rounds.clone()
    }

    /// Chip runs, host round trips, recorded and replayed channels.
    #[getter]
    fn cost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json(py, &self.report.schedule.cost)
    }

    /// What the network's synapses take in memory when it runs: synapses, the weights' bytes
    /// (f32) and the compiled synapses' bytes (at most 28 each).
    #[getter]
    fn memory<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json(py, &self.report.memory)
    }

    /// The whole report as JSON text.
    fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.report).expect("the report serialises")
    }

    /// The placement drawing (PNG, or SVG by extension).
    fn draw(&self, path: PathBuf) -> PyResult<()> {
        neuropart::plot::placement(&self.network, &self.plan, &path).map_err(to_py)
    }

    /// The plan as text, as `neuropart plan` prints it.
    fn __str__(&self) -> String {
        self.report.text()
    }

    fn __repr__(&self) -> String {
        format!(
            "Plan('{}': {} partitions in {} rounds on {} x {})",
            self.report.network,
            self.report.partitions.len(),
            self.report.schedule.rounds.len(),
            self.report.chips,
            self.report.substrate
        )
    }
}
